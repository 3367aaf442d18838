//! Integration tests against real PostgreSQL and RabbitMQ: a fresh database and AMQP prefix
//! per test, and wa-sandbox standing in for Meta.
mod endpoint;
mod helpers;
mod keywords;
mod processing;
mod sandbox;
