//! Black-box tests: one binary, each module a surface, all against the real
//! `invite-server` process over real HTTP.

mod config;
mod helpers;
mod invites_api;
mod keys_cli;
mod prosody;
mod smoke;
