//! The `make demo` driver: a small hospital network's day, compressed into two minutes.
//!
//! * [`prepare`] writes the run's copy of the network configuration with quiet hours moved away
//!   from the current time, so the demo does not depend on the wall clock.
//! * [`population`] generates a deterministic set of patients and appointments (seeded).
//! * [`ingest`] loads them through ingest's HTTP API, as a hospital system would.
//! * [`patients`] plays the patients on wa-sandbox: taps Confirm or Reschedule, types STOP.
//! * [`progress`] reads counts (never contents) from PostgreSQL; [`summary`] prints them.
//! * [`run`] ties these together.
//!
//! The driver prints counts only: no names, phone numbers or message text (PHI).
#![forbid(unsafe_code)]

pub mod ingest;
pub mod patients;
pub mod population;
pub mod prepare;
pub mod progress;
pub mod run;
pub mod summary;
