//! Fixtures shared by the unit tests of the SQLite store's modules.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::migrations::{configure, migrate};
use crate::crypto::SecretDigest;
use crate::domain::{AccountName, HostName};
use crate::store::{InviteSource, NewAccount, NewInvite};

pub(super) fn account(name: &str) -> NewAccount {
    NewAccount {
        host: HostName::parse("example.com").unwrap(),
        name: AccountName::parse(name).unwrap(),
        password_hash: "$argon2id$test".into(),
        created_at: Utc::now(),
        invited_by: "cli".into(),
        invite_id: None,
    }
}

pub(super) fn scratch() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut conn = Connection::open(&path).unwrap();
    configure(&conn).unwrap();
    migrate(&mut conn, &path).unwrap();
    (dir, conn)
}

pub(super) fn cli_invite(digest: SecretDigest, created_at: DateTime<Utc>) -> NewInvite {
    NewInvite {
        token_digest: digest,
        host: HostName::parse("example.com").unwrap(),
        source: InviteSource::Cli,
        issuer_name: None,
        created_at,
        expires_at: created_at + chrono::Duration::days(1),
        uses_allowed: 1,
        note: None,
        fixed_name: None,
        pending_limit: None,
    }
}
