//! End-to-end tests: a real relay on 127.0.0.1 port 0, a temporary data dir, real HTTP.
//! One test binary, as the modules below share the harness.

mod admin_page;
mod amqp;
mod brokers;
mod control;
mod dead_letters;
mod dedupe;
mod delivery;
mod harness;
mod hq_standin;
mod http;
mod ingest;
mod kafka;
mod restart;
mod rules;
