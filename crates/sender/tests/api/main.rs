//! The sender against real PostgreSQL and RabbitMQ, with wa-sandbox standing in for Meta.

mod crash;
mod errors;
mod helpers;
mod limits;
mod send;
mod suppress;
