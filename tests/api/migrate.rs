//! `invite-server migrate`, choosing the backend by `--db`, and what a
//! PostgreSQL URL is never shown with.

use std::path::Path;

use crate::helpers::{cli_at, drop_database, fresh_db, is_postgres, stderr_of, stdout_of};

fn no_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    config
}

#[test]
fn migrate_brings_a_new_database_to_the_current_schema_once_and_then_says_it_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_config(dir.path());
    let db = fresh_db(dir.path());
    let first = cli_at(&config, &db, &["migrate"], None);
    assert!(first.status.success(), "{}", stderr_of(&first));
    let said = stdout_of(&first);
    assert!(said.contains("schema version 7"), "{said}");
    assert!(said.contains("migrated from"), "{said}");
    let again = cli_at(&config, &db, &["migrate"], None);
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert!(
        stdout_of(&again).contains("schema version 7, up to date"),
        "{}",
        stdout_of(&again)
    );
    // The migrated database serves admin commands at once.
    let keys = cli_at(&config, &db, &["keys", "list", "localhost"], None);
    assert!(keys.status.success(), "{}", stderr_of(&keys));
    drop_database(&db);
}

#[test]
fn migrate_refuses_a_postgresql_database_newer_than_the_binary_with_sqlites_words() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    if !is_postgres(&db) {
        return;
    }
    let config = no_config(dir.path());
    assert!(cli_at(&config, &db, &["migrate"], None).status.success());
    let url = db.to_str().unwrap().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("UPDATE invite_server_schema SET version = 99")
            .await
            .unwrap();
    });
    for args in [&["migrate"][..], &["keys", "list", "localhost"]] {
        let out = cli_at(&config, &db, args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr_of(&out);
        assert!(
            err.contains("has schema version 99, newer than this invite-server knows (7); refusing to downgrade it"),
            "{err}"
        );
    }
    drop_database(&db);
}

#[test]
fn backup_of_a_postgresql_database_points_to_pg_dump_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_config(dir.path());
    let url = Path::new("postgres://invites:hunter2@127.0.0.1:1/invites");
    let copy = dir.path().join("copy.db");
    let out = cli_at(&config, url, &["backup", copy.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!err.contains("hunter2"), "the password was shown: {err}");
    assert!(!copy.exists());
}

#[test]
fn check_config_shows_a_postgresql_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_config(dir.path());
    let url =
        Path::new("postgresql://invites:hunter2@db.internal:5432/invites?sslmode=verify-full");
    let out = cli_at(&config, url, &["check-config"], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let shown = stdout_of(&out);
    assert!(
        !shown.contains("hunter2"),
        "the password was shown: {shown}"
    );
    assert!(
        shown.contains("database = \"postgresql://invites:REDACTED@db.internal:5432/invites?sslmode=verify-full\""),
        "{shown}"
    );
    assert!(shown.contains("\ndatabase_pool_size = 16\n"), "{shown}");
}

#[test]
fn a_database_pool_size_outside_1_to_1000_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (size, ok) in [("0", false), ("1", true), ("1000", true), ("1001", false)] {
        let file = dir.path().join("pool.toml");
        std::fs::write(&file, format!("database_pool_size = {size}\n")).unwrap();
        let out = cli_at(
            &file,
            Path::new("postgres://u@127.0.0.1:1/d"),
            &["check-config"],
            None,
        );
        assert_eq!(out.status.success(), ok, "{size}: {}", stderr_of(&out));
        if !ok {
            assert!(
                stderr_of(&out).contains("database_pool_size"),
                "{}",
                stderr_of(&out)
            );
        }
    }
}

#[test]
fn a_malformed_postgresql_url_or_sslmode_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_config(dir.path());
    for bad in [
        "postgres://invites:hunter2@db.internal:5432/invites?sslmode=sometimes",
        "postgres://invites:hunter2@[bad/invites",
    ] {
        let out = cli_at(&config, Path::new(bad), &["check-config"], None);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = stderr_of(&out);
        assert!(err.contains("invalid PostgreSQL URL"), "{err}");
        assert!(!err.contains("hunter2"), "the password was shown: {err}");
        // The same in the configuration file.
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, format!("database = {bad:?}\n")).unwrap();
        let out = std::process::Command::new(crate::helpers::BIN)
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .env_remove("INVITE_SERVER_DATABASE")
            .env_remove("INVITE_SERVER_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = stderr_of(&out);
        assert!(err.contains("invalid PostgreSQL URL"), "{err}");
        assert!(!err.contains("hunter2"), "the password was shown: {err}");
    }
}

#[test]
fn serve_and_admin_commands_refuse_an_unreachable_postgresql_naming_it_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_config(dir.path());
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let url = Path::new("postgres://invites:hunter2@127.0.0.1:1/invites?sslmode=disable");
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["keys", "list", "localhost"],
    ] {
        let out = cli_at(&config, url, args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr_of(&out);
        assert!(
            err.contains(
                "cannot connect to database postgres://invites:REDACTED@127.0.0.1:1/invites"
            ),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the password was shown: {err}");
    }
}
