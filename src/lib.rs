#![forbid(unsafe_code)]
//! invite-server: an operator creates API keys from the command line, clients
//! mint invite links with them over HTTP, and invitees register through a page.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod passwords;
pub mod provision;
pub mod query;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhooks;
