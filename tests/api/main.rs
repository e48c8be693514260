//! Black-box tests: one binary, each module a surface, all against the real
//! `invite-server` process over real HTTP.

mod accounts_cli;
mod accounts_lifecycle;
mod admin;
mod backup;
mod browser;
mod config;
mod crash;
mod helpers;
mod hostile;
mod hot_paths;
mod invites;
mod invites_api;
mod json_api;
mod keys_cli;
mod keys_lifecycle;
mod login_pages;
mod metrics;
mod multinode;
mod nginx;
mod openapi;
mod ops;
mod pages;
mod probe;
mod prosody;
mod provision_command;
mod provision_prosody;
mod provision_synapse;
mod races;
mod shutdown;
mod signin;
mod smoke;
mod storage;
mod upgrade;
mod web;
mod webhooks;
