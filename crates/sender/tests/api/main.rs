//! The sender against real PostgreSQL and RabbitMQ, with wa-sandbox standing in for Meta.

mod crash;
mod errors;
mod helpers;
mod limits;
mod replicas;
mod send;
mod suppress;
mod taxonomy;
