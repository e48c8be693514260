//! Black-box tests: one binary, each module a surface, all against the real
//! `invite-server` process over real HTTP.

mod helpers;
mod smoke;
