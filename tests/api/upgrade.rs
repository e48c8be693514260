//! Upgrades: a database written by an earlier schema opens under this binary,
//! and what it holds keeps working.

use rusqlite::params;
use sha2::{Digest, Sha256};

use crate::helpers::{
    accept_invite, cli_at, client, stored_form, token_of, TestApp, DEFAULT_CONFIG,
};

/// Counts with SQL on `app`'s database file. These tests are about what the
/// migrations make of files older releases wrote, so they read the SQLite
/// file itself on purpose.
fn count(app: &TestApp, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(&app.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| db.query_row(sql, [], |r| r.get(0)))
        .expect(sql)
}

/// Schema 1 as the first release wrote it, copied here rather than taken from
/// the code under test, so that a change to that migration shows up as a
/// failure instead of quietly changing what "schema 1" means.
const SCHEMA_1: &str = "
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, name TEXT,
        secret_digest BLOB NOT NULL, created_at INTEGER NOT NULL);
    CREATE INDEX api_keys_by_host ON api_keys (host, created_at);
    CREATE TABLE invites (
        id INTEGER PRIMARY KEY, token_digest BLOB NOT NULL UNIQUE,
        host TEXT NOT NULL, source TEXT NOT NULL, issuer_name TEXT,
        created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        used_at INTEGER, used_by INTEGER);
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY, host TEXT NOT NULL, name TEXT NOT NULL,
        password_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
        invited_by TEXT NOT NULL, UNIQUE (host, name));
    CREATE TABLE sessions (
        token_digest BLOB PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX sessions_by_account ON sessions (account_id);
    PRAGMA journal_mode = WAL;
    PRAGMA user_version = 1;";

/// 24 base64url characters, the shape of every schema 1 invite token.
const OLD_TOKENS: [&str; 2] = ["AAECAwQFBgcICQoLDA0ODxAR", "ERAPDg0MCwoJCAcGBQQDAgEA"];

const PASSWORD: &str = "lantern quarry tulip 92";

/// A schema 1 database holding the two old invites, in a fresh directory.
fn schema_1_database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(SCHEMA_1).unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    for token in OLD_TOKENS {
        conn.execute(
            "INSERT INTO invites (token_digest, host, source, created_at, expires_at)
             VALUES (?1, 'localhost', 'cli', ?2, ?3)",
            params![
                Sha256::digest(token.as_bytes()).to_vec(),
                now,
                now + 86_400_000_000
            ],
        )
        .unwrap();
    }
    (dir, db)
}

#[test]
fn invite_links_from_schema_1_still_open_and_register_after_the_upgrade() {
    let (dir, db) = schema_1_database();
    let app = TestApp::spawn_in(dir, db, DEFAULT_CONFIG);
    assert_eq!(
        count(&app, "PRAGMA user_version"),
        7,
        "the file was migrated"
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM invites WHERE token_format = 1"),
        2,
        "both old invites were kept as schema 1 rows"
    );

    let page = client()
        .get(format!("{}/invite?{}", app.url, OLD_TOKENS[0]))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("Test Site"));

    let res = accept_invite(&app, OLD_TOKENS[0], "olga", PASSWORD);
    assert_eq!(res.status(), 204, "{:?}", res.text());
    let used = accept_invite(&app, OLD_TOKENS[0], "oscar", PASSWORD);
    assert_eq!(
        used.status(),
        404,
        "a used old invite is refused like a new one"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM accounts WHERE name IN ('olga', 'oscar')"
        ),
        1
    );

    // The other old invite is untouched, and new invites use the new format.
    let other = client()
        .get(format!("{}/api/invite/{}", app.url, OLD_TOKENS[1]))
        .send()
        .unwrap();
    assert_eq!(other.status(), 200);
    let new_token = token_of(&app.mint());
    assert_eq!(new_token.len(), 32);
    let (id, _) = stored_form(&new_token);
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM invites WHERE id = {id} AND token_format = 2")
        ),
        1
    );
}

/// Every command that opens the database, with what it needs to get that far.
const EVERY_COMMAND: [&[&str]; 8] = [
    &["serve", "--listen", "127.0.0.1:0"],
    &["keys", "create", "localhost"],
    &["keys", "list", "localhost"],
    &["keys", "delete", "localhost", "AAAAAAAAAAAA"],
    &[
        "accounts",
        "create",
        "localhost",
        "olga",
        "--password-stdin",
    ],
    &["accounts", "list", "localhost"],
    &["accounts", "delete", "localhost", "olga"],
    &["invites", "create", "localhost"],
];

#[test]
fn a_database_with_a_negative_or_future_schema_version_is_refused_by_every_command() {
    for (version, says) in [
        (-1, "has schema version -1, which no invite-server writes"),
        (
            99,
            "has schema version 99, newer than this invite-server knows",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("test.db");
        {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        let no_config = dir.path().join("empty.toml");
        std::fs::write(&no_config, "").unwrap();
        for args in EVERY_COMMAND {
            let out = if args[0] == "serve" {
                // It must exit by itself, not serve.
                let mut cmd = crate::config::bin();
                cmd.arg("--db").arg(&db).args(args);
                crate::config::run(cmd)
            } else {
                let password = format!("{PASSWORD}\n");
                cli_at(&no_config, &db, args, Some(&password))
            };
            assert_eq!(out.status.code(), Some(1), "{version} {args:?}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{version} {args:?}: {err}");
            assert!(out.stdout.is_empty(), "{version} {args:?}: {out:?}");
        }
        // The file was left as it was: no tables, the same version.
        let conn = rusqlite::Connection::open(&db).unwrap();
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(found, version);
    }
}
