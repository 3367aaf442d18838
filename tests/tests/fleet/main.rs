//! The whole fleet end to end: ingest → scheduler → sender → wa-sandbox → webhook-consumer →
//! scheduler and hospital, against real PostgreSQL and RabbitMQ, with a clock the tests move.
//! One test binary (the fleet links every service), one module per story.

mod consent;
mod crash;
mod lifecycle;
mod metrics;
mod operator;
mod outcomes;
mod privacy;
mod quiet_hours;
mod replanning;
mod trust;
