//! The one integration test binary: wiremock for exact requests, the
//! in-process sandbox for end-to-end behaviour. Every test talks to 127.0.0.1.

mod cli;
mod client;
mod common;
mod email;
mod export;
mod false_success;
mod faults;
mod hostile;
mod import;
mod pacing;
mod sandbox;
mod security;
mod snapshots;
