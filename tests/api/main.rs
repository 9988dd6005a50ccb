//! One black-box test binary: the real server, a real database (SQLite file and
//! Postgres), real SMTP on loopback. Every test runs on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on the unexpected

mod accounts;
mod admin;
mod audit;
mod browser;
mod cli;
mod contention;
mod faults;
mod hardening;
mod helpers;
mod inputs;
mod key_rotation;
mod limits;
mod mail;
mod outage;
mod races;
mod recovery_api;
mod recovery_browser;
mod security;
mod smtp;
mod webdriver;
