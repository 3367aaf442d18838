//! Bounded fuzzing: random bytes and mutated real messages through the whole pipeline
//! (framing, parsing, SIU reading, ACK writing) must never panic, and every ACK Careline
//! writes must itself parse. Seeded, so a failure can be replayed: the seed is printed, and
//! `HL7_FUZZ_SEED=<n>` runs that seed again.

use careline_domain::facility::NetworkConfig;
use careline_hl7::ack::{Ack, AckCode};
use careline_hl7::message::{Delimiters, escape, unescape};
use careline_hl7::mllp::{self, Decoder};
use careline_hl7::{Message, siu};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 1000;

const NETWORK: &str = r#"
    [templates.booking_confirmation]
    name = "appointment_booked"
    languages = { en = "en" }
    body = ["first_name", "date_time", "facility"]
    [templates.reminder]
    name = "appointment_reminder"
    languages = { en = "en" }
    body = ["first_name", "date_time", "facility"]
    [[facility]]
    id = "city-general"
    name = "City General Hospital"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1001"
"#;

const SEEDS: &[&str] = &[
    concat!(
        "MSH|^~\\&|EPIC|CITYGEN|CARELINE|CARELINE|20260301091500||SIU^S12^SIU_S12|MSG00001|P|2.5.1|||AL|NE\r",
        "SCH|PL-5566^EPIC|FL-77^EPIC|||||FOLLOWUP^Follow-up^HL70276|ROUTINE^Routine^HL70277|20|min|",
        "^^20^202603050930^202603050950||||||||||||||Booked\r",
        "TQ1|1||||||202603050930|202603050950|||||M20\r",
        "PID|1||9876^^^GOV^NI~P-1001^^^CITYGEN^MR||Sharma^Asha^K^^^^L||19850412|F|||",
        "12 MG Road^^Bengaluru||^PRN^PH^^91^80^41234567~^PRN^CP^^91^98123^45678||HIN^Hindi\r",
        "AIS|1|A|CARD-FU^Cardiology \\T\\ follow-up\\.br\\Block B^L|202603050930|||20|min\r",
        "AIL|1|A|city-general^Room 4^^city-general\r",
        "AIP|1|A|1001^Rao^Priya^^^Dr|ATTENDING\r",
        "ZCL|1|loyalty^gold|\\X0A\\\\F\\\r",
    ),
    concat!(
        "MSH#$*/%#HIS#city-general###20260302100000+0530##SIU$S13#M2#P#2.3\r\n",
        "PID#1##P-9$$$$MR##Iyer$Ravi########+919812345678$PRN$CP##eng\r\n",
        "SCH##A-9#########$$$202603101415$202603101500##############Booked\r\n",
        "AIS#1##GP$General/T/practice\r\n",
    ),
    "MSH|^~\\&|HIS|city-general|||20260303080000||SIU^S15|M3\nSCH|PL-1||||||||30|h|^^M45^202603201000\nPID|1||P-2001\n",
];

fn seed() -> u64 {
    std::env::var("HL7_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x0048_4c37_5f66_757a)
}

/// Runs bytes through everything a connection does with a frame.
fn exercise(bytes: &[u8], network: &NetworkConfig) {
    let message = Message::parse(bytes);
    let now = "2026-03-01T00:00:00Z".parse().unwrap();
    let (request, decision, issues) = match &message {
        Err(_) => (None, AckCode::Reject, Vec::new()),
        Ok(m) => match siu::check_header(m, Some("P")) {
            Err(issue) => (Some(m), AckCode::Reject, vec![issue]),
            Ok(trigger) => {
                let report = siu::read_siu(m, trigger, network);
                for field in ["patient_id", "starts_at", "duration_minutes", "facility_id", "nonsense"] {
                    let _ = report.location_of(field);
                }
                let decision = if report.has_errors() { AckCode::Error } else { AckCode::Accept };
                (Some(m), decision, report.issues)
            }
        },
    };
    let ack = Ack { request, decision, issues: &issues, text: Some("text"), control_id: "ACK1", now };
    if let Some(text) = ack.to_hl7() {
        let parsed = Message::parse(text.as_bytes()).expect("Careline's own ACK parses");
        assert_eq!(parsed.segments()[1].id(), "MSA", "{text:?}");
        assert!(!text.contains('\n'), "no stray line breaks in an ACK: {text:?}");
    }
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { rng.random_range(0..len) };
        match rng.random_range(0..8) {
            0 if len > 0 => bytes[at] = rng.random(),
            1 => bytes.insert(at, *b"|^~\\&\r\n\"".get(rng.random_range(0..9)).unwrap_or(&0x0B)),
            2 if len > 0 => {
                let end = (at + rng.random_range(1..64)).min(len);
                bytes.drain(at..end);
            }
            3 if len > 0 => {
                let end = (at + rng.random_range(1..64)).min(len);
                let copy = bytes[at..end].to_vec();
                let to = rng.random_range(0..=bytes.len());
                bytes.splice(to..to, copy);
            }
            4 => {
                let escapes: [&[u8]; 7] = [b"\\X", b"\\XC3\\", b"\\.br\\", b"\\F\\", b"\\Z", b"\\\\", b"\\E\\"];
                let piece = escapes[rng.random_range(0..escapes.len())];
                bytes.splice(at..at, piece.iter().copied());
            }
            5 => bytes.truncate(at),
            6 => {
                let awkward = [0xC3, 0x28, 0xFF, 0x1C, 0x0B];
                bytes.splice(at..at, awkward[..rng.random_range(1..=awkward.len())].iter().copied());
            }
            _ => {
                // Swap two segments.
                let text: Vec<Vec<u8>> = bytes.split(|&b| b == b'\r').map(<[u8]>::to_vec).collect();
                if text.len() > 2 {
                    let (a, b) = (rng.random_range(1..text.len()), rng.random_range(1..text.len()));
                    let mut text = text;
                    text.swap(a, b);
                    bytes = text.join(&b'\r');
                }
            }
        }
    }
    bytes
}

#[test]
fn the_seed_messages_are_accepted_as_they_are() {
    let network = NetworkConfig::from_toml(NETWORK).unwrap();
    for text in SEEDS {
        let message = Message::parse(text.as_bytes()).unwrap();
        let trigger = siu::check_header(&message, Some("P")).unwrap();
        let report = siu::read_siu(&message, trigger, &network);
        assert!(!report.has_errors(), "{:?}", report.issues);
    }
}

#[test]
fn random_bytes_never_panic_anywhere() {
    let seed = seed();
    println!("HL7_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let network = NetworkConfig::from_toml(NETWORK).unwrap();
    for _ in 0..ROUNDS {
        let len = rng.random_range(0..512);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) {
            // Most random bytes die at "no MSH"; give half of them a header to get further.
            let header: &[u8] =
                if rng.random_bool(0.5) { b"MSH|^~\\&|" } else { b"MSH|^~\\&|A|city-general|||2026||SIU^S12|" };
            bytes.splice(0..0, header.iter().copied());
        }
        exercise(&bytes, &network);

        let mut decoder = Decoder::new(rng.random_range(1..256));
        for chunk in bytes.chunks(rng.random_range(1..64)) {
            decoder.feed(chunk);
            while let Some(frame) = decoder.next_frame() {
                match frame {
                    Ok(payload) => exercise(&payload, &network),
                    Err(mllp::FrameError::TooLarge { head, .. }) => exercise(&head, &network),
                }
            }
        }
    }
}

#[test]
fn mutated_real_messages_never_panic_and_still_get_an_ack() {
    let seed = seed();
    println!("HL7_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let network = NetworkConfig::from_toml(NETWORK).unwrap();
    for round in 0..ROUNDS {
        let original = SEEDS[round % SEEDS.len()].as_bytes();
        let mutated = mutate(&mut rng, original);
        exercise(&mutated, &network);

        // The same bytes framed, with junk around, split at random points.
        let mut wire = b"\r\njunk".to_vec();
        wire.extend(mllp::frame(&mutated));
        wire.extend(mllp::frame(original));
        let mut decoder = Decoder::new(mutated.len().max(original.len()) + 1);
        let mut rest = wire.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rng.random_range(1..=rest.len()));
            decoder.feed(chunk);
            rest = tail;
        }
        let frames: Vec<_> = std::iter::from_fn(|| decoder.next_frame()).collect();
        let last = frames.last().expect("at least the intact frame").as_ref().expect("fits");
        assert_eq!(last.as_slice(), original, "the intact frame after a mutated one decodes whole");
    }
}

#[test]
fn escaping_then_unescaping_gives_back_any_text() {
    let mut rng = StdRng::seed_from_u64(seed().wrapping_add(2));
    let alphabet: Vec<char> = "ab |^~\\&#$*/%Xé\n.brFSTRE0123".chars().collect();
    let delimiter_sets = [
        Delimiters::default(),
        Delimiters { field: '#', component: '$', repetition: '*', escape: Some('/'), subcomponent: '%' },
    ];
    for _ in 0..ROUNDS {
        let text: String =
            (0..rng.random_range(0..40)).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
        for d in &delimiter_sets {
            let escaped = escape(&text, d);
            assert!(!escaped.contains(d.field) && !escaped.contains(d.component), "{escaped:?}");
            assert_eq!(unescape(&escaped, d), text, "{text:?} via {escaped:?}");
        }
    }
}
