//! wa-sandbox over real HTTP on 127.0.0.1, with Careline's own client, webhook parser and
//! signature check on the other end.

mod admin;
mod faults;
mod helpers;
mod limits;
mod replies;
mod send;
mod webhooks;
