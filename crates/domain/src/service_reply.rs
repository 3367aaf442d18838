//! The free-form answers Careline itself sends inside the 24 h customer-service window: the
//! acknowledgement of STOP and START, and the answer to HELP (the facility's contact details).
//!
//! The texts are built in for English, Hindi, Spanish, Portuguese, Arabic and German; any
//! other language gets English. They name the facility and its public contact details only,
//! never the patient.

use serde::{Deserialize, Serialize};

use crate::facility::FacilityContact;

/// Which answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceReplyKind {
    StopAck,
    StartAck,
    Help,
}

impl ServiceReplyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StopAck => "stop_ack",
            Self::StartAck => "start_ack",
            Self::Help => "help",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::StopAck, Self::StartAck, Self::Help].into_iter().find(|k| k.as_str() == s)
    }
}

/// The languages with built-in texts.
pub const LANGUAGES: [&str; 6] = ["en", "hi", "es", "pt", "ar", "de"];

/// The primary subtag of `language` when a text exists for it, else `en`.
pub fn text_language(language: &str) -> &'static str {
    let primary = language.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    LANGUAGES.into_iter().find(|l| *l == primary).unwrap_or("en")
}

/// The message text for `kind` in `language`, naming the facility when known.
pub fn render(
    kind: ServiceReplyKind,
    language: &str,
    facility_name: Option<&str>,
    contact: Option<&FacilityContact>,
) -> String {
    let lang = text_language(language);
    let (stop, start, help_intro, help_none) = match lang {
        "hi" => (
            "आपको अब इस नंबर पर अपॉइंटमेंट संदेश नहीं मिलेंगे। फिर से शुरू करने के लिए START या शुरू लिखें।",
            "आपको फिर से अपॉइंटमेंट संदेश मिलेंगे। रोकने के लिए STOP या बंद लिखें।",
            "संपर्क",
            "कृपया अपने अस्पताल से सीधे संपर्क करें।",
        ),
        "es" => (
            "Ya no recibirá mensajes de citas en este número. Escriba START o ALTA para volver a recibirlos.",
            "Volverá a recibir mensajes de citas. Escriba STOP o BAJA para dejar de recibirlos.",
            "Contacto",
            "Póngase en contacto directamente con su hospital.",
        ),
        "pt" => (
            "Você não receberá mais mensagens de consultas neste número. Escreva START ou COMEÇAR para voltar a recebê-las.",
            "Você voltará a receber mensagens de consultas. Escreva STOP ou PARE para parar.",
            "Contato",
            "Entre em contato diretamente com o seu hospital.",
        ),
        "ar" => (
            "لن تتلقى بعد الآن رسائل المواعيد على هذا الرقم. أرسل START أو ابدأ لاستئنافها.",
            "ستتلقى رسائل المواعيد مرة أخرى. أرسل STOP أو توقف لإيقافها.",
            "للتواصل",
            "يرجى التواصل مع المستشفى مباشرة.",
        ),
        "de" => (
            "Sie erhalten auf dieser Nummer keine Terminnachrichten mehr. Schreiben Sie START oder ANMELDEN, um sie wieder zu erhalten.",
            "Sie erhalten wieder Terminnachrichten. Schreiben Sie STOP oder STOPP, um sie abzubestellen.",
            "Kontakt",
            "Bitte wenden Sie sich direkt an Ihr Krankenhaus.",
        ),
        _ => (
            "You will no longer receive appointment messages on this number. Reply START to receive them again.",
            "You will receive appointment messages again. Reply STOP to stop them.",
            "Contact",
            "Please contact your hospital directly.",
        ),
    };
    let body = match kind {
        ServiceReplyKind::StopAck => stop.to_owned(),
        ServiceReplyKind::StartAck => start.to_owned(),
        ServiceReplyKind::Help => {
            let details: Vec<&str> = contact
                .into_iter()
                .flat_map(|c| [c.phone.as_deref(), c.email.as_deref(), c.hours.as_deref(), c.website.as_deref()])
                .flatten()
                .filter(|d| !d.trim().is_empty())
                .collect();
            if details.is_empty() { help_none.to_owned() } else { format!("{help_intro}: {}", details.join(" · ")) }
        }
    };
    match facility_name {
        Some(name) => format!("{name}: {body}"),
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_the_facility_contact_details_in_the_patient_language() {
        let contact = FacilityContact {
            phone: Some("+49 30 1234".into()),
            email: Some("desk@north.example".into()),
            hours: None,
            website: None,
        };
        let text = render(ServiceReplyKind::Help, "de-DE", Some("North General"), Some(&contact));
        assert_eq!(text, "North General: Kontakt: +49 30 1234 · desk@north.example");
        let text = render(ServiceReplyKind::Help, "xx", None, None);
        assert_eq!(text, "Please contact your hospital directly.");
    }

    #[test]
    fn every_language_has_its_own_acknowledgements() {
        let mut seen = std::collections::BTreeSet::new();
        for lang in LANGUAGES {
            assert!(seen.insert(render(ServiceReplyKind::StopAck, lang, None, None)), "{lang}");
        }
        assert_eq!(text_language("pt-BR"), "pt");
        assert_eq!(text_language("fr"), "en");
    }
}
