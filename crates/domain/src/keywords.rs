//! STOP / START / HELP in the patient's language.
//!
//! A typed message is a keyword when, once normalised, it equals one of the words of a list:
//! Unicode NFKD, Latin accents and Arabic diacritics (harakat, hamza marks, tatweel) removed,
//! lower case, surrounding punctuation and repeated spaces dropped. So `STOP`, `stop!`,
//! `Começar`, `comecar` and `أبدأ`/`ابدا` all match. Devanagari signs are kept: they change the
//! word, they are not accents.
//!
//! The built-in lists cover English, Hindi (Devanagari and common romanised forms), Spanish,
//! Portuguese, Arabic and German; the network configuration can add words
//! ([`KeywordConfig`]). A message that merely contains a keyword ("please don't stop") is not
//! one: only the whole message counts.

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use crate::reply::ReplyAction;

/// Extra keywords from the network configuration (`[keywords]`), added to the built-in ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordConfig {
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub start: Vec<String>,
    #[serde(default)]
    pub help: Vec<String>,
}

/// A keyword found in a message, with the language its word belongs to (when the word is
/// particular to one language).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeywordMatch {
    pub action: ReplyAction,
    pub language: Option<&'static str>,
}

/// Built-in words: (action, language, words).
const BUILT_IN: &[(ReplyAction, &str, &[&str])] = &[
    (
        ReplyAction::Stop,
        "en",
        &["stop", "stop reminders", "stop all", "unsubscribe", "opt out", "optout", "cancel messages", "end", "quit"],
    ),
    (
        ReplyAction::Stop,
        "hi",
        &[
            "बंद",
            "बंद करो",
            "बंद करें",
            "बंद करे",
            "रोको",
            "रोकें",
            "band",
            "band karo",
            "band karein",
            "band kare",
            "roko",
            "rokein",
        ],
    ),
    (ReplyAction::Stop, "es", &["baja", "darme de baja", "parar", "para", "detener", "alto", "no más"]),
    (ReplyAction::Stop, "pt", &["pare", "sair", "descadastrar", "cancelar inscrição", "parar de receber"]),
    (ReplyAction::Stop, "ar", &["توقف", "إيقاف", "قف", "إلغاء الاشتراك"]),
    (ReplyAction::Stop, "de", &["stopp", "abmelden", "abbestellen", "beenden"]),
    (ReplyAction::Start, "en", &["start", "subscribe", "unstop", "resume"]),
    (ReplyAction::Start, "hi", &["शुरू", "शुरू करो", "शुरू करें", "चालू", "shuru", "shuru karo", "chalu"]),
    (ReplyAction::Start, "es", &["alta", "iniciar", "empezar", "reanudar", "comenzar"]),
    (ReplyAction::Start, "pt", &["começar", "voltar", "retomar", "inscrever"]),
    (ReplyAction::Start, "ar", &["ابدأ", "بدء", "اشتراك"]),
    (ReplyAction::Start, "de", &["anmelden", "fortsetzen"]),
    (ReplyAction::Help, "en", &["help", "info"]),
    (ReplyAction::Help, "hi", &["मदद", "सहायता", "madad", "sahayata"]),
    (ReplyAction::Help, "es", &["ayuda"]),
    (ReplyAction::Help, "pt", &["ajuda"]),
    (ReplyAction::Help, "ar", &["مساعدة", "مساعده"]),
    (ReplyAction::Help, "de", &["hilfe"]),
];

/// The keyword lists in force: built-in words plus the configured ones, normalised once.
#[derive(Debug, Clone)]
pub struct Keywords {
    words: Vec<(String, KeywordMatch)>,
}

impl Default for Keywords {
    fn default() -> Self {
        Self::built_in()
    }
}

impl Keywords {
    /// The built-in lists only.
    pub fn built_in() -> Self {
        Self::with_config(&KeywordConfig::default())
    }

    /// The built-in lists plus the configured words (which carry no language).
    pub fn with_config(config: &KeywordConfig) -> Self {
        let mut words = Vec::new();
        for (action, language, list) in BUILT_IN {
            for word in *list {
                words.push((normalise(word), KeywordMatch { action: *action, language: Some(*language) }));
            }
        }
        for (action, list) in
            [(ReplyAction::Stop, &config.stop), (ReplyAction::Start, &config.start), (ReplyAction::Help, &config.help)]
        {
            for word in list {
                let word = normalise(word);
                if !word.is_empty() {
                    words.push((word, KeywordMatch { action, language: None }));
                }
            }
        }
        Self { words }
    }

    /// The keyword a whole message is, if it is one. STOP wins over START and HELP should a
    /// configured word collide with a built-in one: an opt-out must never be missed.
    pub fn classify(&self, text: &str) -> Option<KeywordMatch> {
        let text = normalise(text);
        if text.is_empty() {
            return None;
        }
        let mut found: Option<KeywordMatch> = None;
        for (word, m) in &self.words {
            if *word == text {
                let better = match found {
                    None => true,
                    Some(f) => f.action != ReplyAction::Stop && m.action == ReplyAction::Stop,
                };
                if better {
                    found = Some(*m);
                }
            }
        }
        found
    }

    /// Like [`Keywords::classify`], with [`ReplyAction::Other`] for anything else.
    pub fn action(&self, text: &str) -> ReplyAction {
        self.classify(text).map_or(ReplyAction::Other, |m| m.action)
    }
}

/// Case-, accent- and spacing-insensitive form of a message (see the module doc).
pub fn normalise(text: &str) -> String {
    let folded: String =
        text.nfkd().filter(|c| !is_ignorable_mark(*c)).collect::<String>().nfc().flat_map(char::to_lowercase).collect();
    folded
        .split(|c: char| c.is_whitespace())
        .map(|w| w.trim_matches(|c: char| c.is_ascii_punctuation() || is_other_punctuation(c)))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Marks that only accent a letter: Latin combining diacritics, Arabic harakat and hamza marks,
/// the Arabic superscript alef and tatweel.
fn is_ignorable_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{0640}')
}

/// Punctuation outside ASCII that patients type around a word: ¡ ¿ « » ، ؟ । and quotes.
fn is_other_punctuation(c: char) -> bool {
    matches!(c, '¡' | '¿' | '«' | '»' | '،' | '؟' | '।' | '…' | '“' | '”' | '‘' | '’')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(text: &str) -> ReplyAction {
        Keywords::built_in().action(text)
    }

    #[test]
    fn stop_in_every_supported_language_and_script() {
        for text in [
            "STOP",
            " stop! ",
            "Stop   reminders",
            "unsubscribe",
            "बंद",
            "बंद करो",
            "Band Karo",
            "ROKO",
            "Baja",
            "¡Parar!",
            "no mas",
            "PARE",
            "Sair",
            "cancelar inscricao",
            "توقف",
            "إيقاف",
            "ايقاف",
            "Stopp",
            "ABMELDEN",
        ] {
            assert_eq!(action(text), ReplyAction::Stop, "{text:?}");
        }
    }

    #[test]
    fn start_and_help_in_every_supported_language() {
        for text in ["Start", "शुरू", "shuru karo", "alta", "Começar", "comecar", "ابدأ", "ابدا", "Anmelden"]
        {
            assert_eq!(action(text), ReplyAction::Start, "{text:?}");
        }
        for text in ["help?", "मदद", "Madad", "AYUDA", "ajuda", "مساعدة", "Hilfe"] {
            assert_eq!(action(text), ReplyAction::Help, "{text:?}");
        }
    }

    #[test]
    fn a_sentence_that_contains_a_keyword_is_not_one() {
        for text in ["please don't stop", "stop it now please", "", "   ", "?!", "I need help with parking"] {
            assert_eq!(action(text), ReplyAction::Other, "{text:?}");
        }
    }

    #[test]
    fn keywords_carry_their_language() {
        let k = Keywords::built_in();
        assert_eq!(k.classify("ayuda").unwrap().language, Some("es"));
        assert_eq!(k.classify("बंद").unwrap().language, Some("hi"));
    }

    #[test]
    fn configured_words_are_added_and_stop_wins_a_collision() {
        let config =
            KeywordConfig { stop: vec!["Halt".into()], start: vec!["baja".into()], help: vec!["Hjälp".into()] };
        let k = Keywords::with_config(&config);
        assert_eq!(k.action("halt!"), ReplyAction::Stop);
        assert_eq!(k.action("HJALP"), ReplyAction::Help);
        assert_eq!(k.action("baja"), ReplyAction::Stop);
    }

    #[test]
    fn normalising_folds_case_accents_and_spacing() {
        assert_eq!(normalise("  ¡NO   Más!  "), "no mas");
        assert_eq!(normalise("Ｓｔｏｐ"), "stop");
        assert_eq!(normalise("أبدأ"), "ابدا");
    }
}
