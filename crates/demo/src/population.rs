//! A deterministic demo population: patients of the network's facilities and their appointments.
//!
//! Same seed, same patients, same appointments, same story. Appointment start times are offsets
//! from the moment they are sent to ingest, chosen so that the interesting messages fall due in
//! the first minute or two of the run:
//!
//! | scenario | start | what the fleet does |
//! |---|---|---|
//! | [`Scenario::Reminder48h`] | now + 48 h + 20..60 s | confirmation at once, 48 h reminder within a minute |
//! | [`Scenario::Reminder2h`] | now + 2 h + 20..60 s | confirmation at once, 48 h reminder skipped (too late), 2 h reminder within a minute |
//! | [`Scenario::Later`] | now + 3..10 days | confirmation at once, reminders planned for later |
//! | [`Scenario::Rescheduled`] | now + 5 days, then moved to now + 2 h + 40..80 s | two confirmations, 2 h reminder of the new time |
//! | [`Scenario::Cancelled`] | now + 48 h + 40..80 s, then cancelled | confirmation, then every reminder revoked |

use std::collections::HashSet;

use careline_domain::Phone;
use chrono::Duration;
use chrono_tz::Tz;

/// Patients in the default demo.
pub const DEFAULT_PATIENTS: usize = 300;
/// Share of patients the hospital has no WhatsApp consent for.
pub const NO_CONSENT_SHARE: f64 = 0.10;

/// A small, fast, well-mixed generator (SplitMix64): deterministic across platforms and crate
/// versions, which a seeded demo needs and `rand`'s `StdRng` does not promise.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// SplitMix64's finaliser: also a good hash of a 64-bit value.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a facility's patients live, which decides their numbers, names and languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// +91 98xx xxxxxx mobiles; English or Hindi.
    India,
    /// +1 415 2xx xxxx; English or Spanish.
    UnitedStates,
}

impl Region {
    /// The region a facility's time zone suggests (India for Asia/Kolkata, else the US).
    pub fn for_time_zone(tz: Tz) -> Self {
        match tz {
            chrono_tz::Asia::Kolkata | chrono_tz::Asia::Calcutta => Self::India,
            _ => Self::UnitedStates,
        }
    }

    fn first_names(self) -> &'static [&'static str] {
        match self {
            Self::India => &[
                "Aarav", "Aditi", "Ananya", "Arjun", "Asha", "Deepa", "Farhan", "Gauri", "Ishaan", "Kavya", "Lakshmi",
                "Meera", "Nikhil", "Priya", "Rahul", "Ravi", "Sanjay", "Shreya", "Sunita", "Vikram", "Zoya",
            ],
            Self::UnitedStates => &[
                "Alejandro",
                "Amelia",
                "Benjamin",
                "Camila",
                "Daniel",
                "Elena",
                "Ethan",
                "Grace",
                "Isabella",
                "James",
                "Lucia",
                "Mateo",
                "Maya",
                "Noah",
                "Olivia",
                "Rosa",
                "Samuel",
                "Sofia",
                "Thomas",
                "Valentina",
            ],
        }
    }

    fn clinicians(self) -> &'static [&'static str] {
        match self {
            Self::India => &["Dr. Mehta", "Dr. Iyer", "Dr. Banerjee", "Dr. Rao", "Dr. Kapoor"],
            Self::UnitedStates => &["Dr. Carter", "Dr. Nguyen", "Dr. Alvarez", "Dr. Okafor", "Dr. Schmidt"],
        }
    }

    /// (language, weight out of 10).
    fn languages(self) -> &'static [(&'static str, u64)] {
        match self {
            Self::India => &[("en", 5), ("hi", 5)],
            Self::UnitedStates => &[("en", 7), ("es", 3)],
        }
    }

    /// A random number of this region's mobile plan (validated by the caller).
    fn mobile(self, rng: &mut SplitMix64) -> String {
        match self {
            Self::India => format!("+9198{:08}", rng.below(100_000_000)),
            // 415-2xx: San Francisco exchanges in service (555-01xx, the fictional range, does
            // not pass libphonenumber's validation).
            Self::UnitedStates => format!("+14152{:06}", rng.below(1_000_000)),
        }
    }
}

const DEPARTMENTS: &[&str] = &["Cardiology", "Orthopaedics", "General Medicine", "Paediatrics", "Dermatology"];

/// A facility as the generator sees it.
#[derive(Debug, Clone)]
pub struct FacilityPlan {
    pub id: String,
    pub region: Region,
}

#[derive(Debug, Clone)]
pub struct DemoPatient {
    pub id: String,
    pub facility_id: String,
    pub first_name: String,
    pub phone: Phone,
    pub language: String,
    /// Whether the hospital recorded WhatsApp consent (from its booking form).
    pub consent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    Reminder48h,
    Reminder2h,
    Later,
    Rescheduled,
    Cancelled,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reminder48h => "48h reminder soon",
            Self::Reminder2h => "2h reminder soon",
            Self::Later => "later",
            Self::Rescheduled => "rescheduled",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DemoAppointment {
    pub id: String,
    pub patient_id: String,
    pub facility_id: String,
    pub scenario: Scenario,
    /// Start, from the moment the appointments are sent.
    pub starts_in: Duration,
    /// For [`Scenario::Rescheduled`]: the new start, from the same moment.
    pub moved_to: Option<Duration>,
    pub duration_minutes: i32,
    pub clinician: String,
    pub department: String,
}

impl DemoAppointment {
    /// When the last message this appointment makes due in the run falls due (from the moment
    /// the appointments are sent), if any.
    pub fn last_due_in(&self) -> Option<Duration> {
        match self.scenario {
            Scenario::Reminder48h => Some(self.starts_in - Duration::hours(48)),
            Scenario::Reminder2h => Some(self.starts_in - Duration::hours(2)),
            Scenario::Rescheduled => self.moved_to.map(|m| m - Duration::hours(2)),
            Scenario::Later | Scenario::Cancelled => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Population {
    pub patients: Vec<DemoPatient>,
    pub appointments: Vec<DemoAppointment>,
}

impl Population {
    /// `count` patients spread round-robin over `facilities`, one appointment each.
    pub fn generate(seed: u64, count: usize, facilities: &[FacilityPlan]) -> Self {
        assert!(!facilities.is_empty(), "the network has no facility");
        let mut rng = SplitMix64::new(seed);
        let mut numbers = HashSet::new();
        let mut patients = Vec::with_capacity(count);
        let mut appointments = Vec::with_capacity(count);
        for i in 0..count {
            let facility = &facilities[i % facilities.len()];
            let region = facility.region;
            let phone = loop {
                if let Ok(phone) = Phone::parse(&region.mobile(&mut rng))
                    && numbers.insert(phone.e164().to_owned())
                {
                    break phone;
                }
            };
            let patient = DemoPatient {
                id: format!("demo-p{:04}", i + 1),
                facility_id: facility.id.clone(),
                first_name: (*rng.pick(region.first_names())).to_owned(),
                phone,
                language: weighted(&mut rng, region.languages()).to_owned(),
                consent: !rng.chance(NO_CONSENT_SHARE),
            };
            let scenario = match rng.below(100) {
                0..35 => Scenario::Reminder48h,
                35..70 => Scenario::Reminder2h,
                70..86 => Scenario::Later,
                86..93 => Scenario::Rescheduled,
                _ => Scenario::Cancelled,
            };
            let seconds = |rng: &mut SplitMix64, lo, hi| Duration::seconds(rng.between(lo, hi));
            let (starts_in, moved_to) = match scenario {
                Scenario::Reminder48h => (Duration::hours(48) + seconds(&mut rng, 20, 60), None),
                Scenario::Reminder2h => (Duration::hours(2) + seconds(&mut rng, 20, 60), None),
                Scenario::Later => {
                    (Duration::days(rng.between(3, 10)) + Duration::minutes(15 * rng.between(0, 40)), None)
                }
                Scenario::Rescheduled => (
                    Duration::days(5) + Duration::minutes(15 * rng.between(0, 40)),
                    Some(Duration::hours(2) + seconds(&mut rng, 40, 80)),
                ),
                Scenario::Cancelled => (Duration::hours(48) + seconds(&mut rng, 40, 80), None),
            };
            appointments.push(DemoAppointment {
                id: format!("demo-a{:04}", i + 1),
                patient_id: patient.id.clone(),
                facility_id: facility.id.clone(),
                scenario,
                starts_in,
                moved_to,
                duration_minutes: *rng.pick(&[15, 20, 30, 45]),
                clinician: (*rng.pick(region.clinicians())).to_owned(),
                department: (*rng.pick(DEPARTMENTS)).to_owned(),
            });
            patients.push(patient);
        }
        Self { patients, appointments }
    }

    /// The latest moment (from when the appointments are sent) a message of this population
    /// falls due during the run.
    pub fn last_due_in(&self) -> Duration {
        self.appointments.iter().filter_map(DemoAppointment::last_due_in).max().unwrap_or_else(Duration::zero)
    }
}

fn weighted<'a>(rng: &mut SplitMix64, choices: &[(&'a str, u64)]) -> &'a str {
    let total: u64 = choices.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total);
    for (choice, weight) in choices {
        if roll < *weight {
            return choice;
        }
        roll -= weight;
    }
    choices[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Vec<FacilityPlan> {
        vec![
            FacilityPlan { id: "city-general".into(), region: Region::India },
            FacilityPlan { id: "lakeside-clinic".into(), region: Region::UnitedStates },
        ]
    }

    #[test]
    fn every_phone_number_is_a_valid_unique_mobile_of_the_facility_s_region() {
        let population = Population::generate(7, DEFAULT_PATIENTS, &network());
        let mut seen = HashSet::new();
        for p in &population.patients {
            assert_eq!(Phone::parse(p.phone.e164()).unwrap(), p.phone);
            assert!(seen.insert(p.phone.e164()), "duplicate number");
            let prefix = if p.facility_id == "city-general" { "+9198" } else { "+14152" };
            assert!(p.phone.e164().starts_with(prefix));
        }
    }

    #[test]
    fn about_one_patient_in_ten_has_no_consent() {
        let population = Population::generate(42, DEFAULT_PATIENTS, &network());
        let without = population.patients.iter().filter(|p| !p.consent).count();
        assert!((15..=45).contains(&without), "{without} of 300 without consent");
    }

    #[test]
    fn the_same_seed_gives_the_same_population_and_another_seed_another() {
        let summary = |seed| {
            let p = Population::generate(seed, 50, &network());
            p.patients
                .iter()
                .zip(&p.appointments)
                .map(|(p, a)| {
                    format!(
                        "{} {} {} {} {:?} {:?}",
                        p.phone.e164(),
                        p.first_name,
                        p.language,
                        p.consent,
                        a.scenario,
                        a.starts_in
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(1), summary(1));
        assert_ne!(summary(1), summary(2));
    }

    #[test]
    fn languages_and_scenarios_are_mixed_and_messages_fall_due_within_two_minutes() {
        let population = Population::generate(42, DEFAULT_PATIENTS, &network());
        for language in ["en", "hi", "es"] {
            assert!(population.patients.iter().any(|p| p.language == language), "no {language}");
        }
        for scenario in
            [Scenario::Reminder48h, Scenario::Reminder2h, Scenario::Later, Scenario::Rescheduled, Scenario::Cancelled]
        {
            assert!(population.appointments.iter().any(|a| a.scenario == scenario), "no {scenario:?}");
        }
        assert!(population.last_due_in() > Duration::seconds(20));
        assert!(population.last_due_in() <= Duration::seconds(80));
        assert!(population.appointments.iter().all(|a| a.starts_in > Duration::hours(2)));
    }
}
