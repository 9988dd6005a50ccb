//! Latchkey: a self-hostable account service whose heart is account recovery by email.
//!
//! The crate is a library so that the integration tests can build and start the real
//! application on port 0; `main.rs` only parses the command line and calls into it.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod mail;
pub mod services;
pub mod startup;
pub mod telemetry;
pub mod web;
pub mod words;
