//! The database file as an operator meets it: where it may be, who may read
//! it, what happens when it is deleted, replaced, unwritable or failing under
//! a running server, and what the key lookups reveal.
//!
//! These tests are about SQLite's file itself, so they open and change it
//! directly on purpose; what the server kept is still asked through the
//! store-neutral probe.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use reqwest::header::{AUTHORIZATION, COOKIE, RETRY_AFTER};

use crate::config::{bin, run};
use crate::helpers::{accept_invite, client, stderr_of, token_of, TestApp, BIN, GOOD_PASSWORD};
use crate::probe;

/// The account `nobody`, for running the server as someone other than root.
const NOBODY: u32 = 65534;

/// `path` with `suffix` appended to its file name (`test.db` -> `test.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// True when the tests run as root, for whom file modes stop no writes: a
/// file the test process creates is owned by its effective user.
fn running_as_root(dir: &Path) -> bool {
    let probe = dir.join("whoami");
    std::fs::write(&probe, "").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    std::fs::remove_file(probe).unwrap();
    root
}

fn mint(app: &TestApp, key: &str) -> Response {
    client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap()
}

fn mint_json(app: &TestApp, key: &str) -> Response {
    client()
        .post(format!("{}/api/invite", app.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .unwrap()
}

fn health(app: &TestApp) -> (u16, String) {
    let res = client().get(format!("{}/health", app.url)).send().unwrap();
    (res.status().as_u16(), res.text().unwrap())
}

fn assert_503(res: Response, what: &str) -> Response {
    assert_eq!(res.status(), 503, "{what}: {:?}", res.headers());
    res
}

/// The page's registration form, as a browser gets it: CSRF cookie and field.
fn open_form(page_url: &str) -> (String, String) {
    let res = client().get(page_url).send().unwrap();
    assert_eq!(res.status(), 200);
    let cookie = crate::helpers::set_cookie_value(&res, "invite_csrf").expect("no CSRF cookie");
    let html = res.text().unwrap();
    let at = html.find("name=\"csrf\"").expect("no csrf field");
    let tag = &html[html[..at].rfind('<').unwrap()..at + html[at..].find('>').unwrap()];
    let value = tag.split("value=\"").nth(1).unwrap();
    (cookie, value[..value.find('"').unwrap()].to_owned())
}

fn post_form(page_url: &str, (cookie, field): &(String, String), name: &str) -> Response {
    client()
        .post(page_url)
        .header(COOKIE, format!("invite_csrf={cookie}"))
        .form(&[
            ("csrf", field.as_str()),
            ("name", name),
            ("password", GOOD_PASSWORD),
            ("password2", GOOD_PASSWORD),
        ])
        .send()
        .unwrap()
}

// ------------------------------------------------- a deleted or replaced file

#[test]
fn a_database_deleted_while_serving_is_written_no_more_and_health_says_so_once() {
    let app = TestApp::spawn_sqlite();
    let key = app.create_key("localhost");
    assert_eq!(mint(&app, &key).status(), 201);
    let unused = app.mint();

    std::fs::remove_file(&app.db).unwrap();
    // The file may come back (the operator restores it): every surface
    // says to retry, none claims the request broke something.
    let res = assert_503(mint(&app, &key), "a mint after the rm");
    assert!(res.headers().contains_key(RETRY_AFTER));
    let res = assert_503(mint_json(&app, &key), "a JSON mint after the rm");
    assert_eq!(res.headers()[RETRY_AFTER], "1");
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert_503(
        accept_invite(&app, &token_of(&unused), "alice", GOOD_PASSWORD),
        "a registration after the rm",
    );
    let res = assert_503(
        client().get(&unused).send().unwrap(),
        "the invite page after the rm",
    );
    assert_eq!(res.headers()[RETRY_AFTER], "1");
    let (status, body) = health(&app);
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "unavailable: the database file was deleted or replaced\n"
    );

    // The server recreated nothing, and an admin command does not pair a new
    // file with the old one's write-ahead log: nothing was split in two.
    assert!(!app.db.exists(), "the database was recreated");
    let out = app.cli(&["keys", "list", "localhost"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_of(&out).contains("-wal is left over from a database deleted or moved while in use"),
        "{out:?}"
    );
    assert!(!app.db.exists(), "the CLI created a database");
    assert_503(mint(&app, &key), "a mint after the CLI ran");

    let log = app.log();
    assert_eq!(
        log.matches("deleted or replaced while in use").count(),
        1,
        "the reason is logged once: {log}"
    );
}

#[test]
fn a_database_replaced_while_serving_is_not_written_and_health_says_so() {
    let app = TestApp::spawn_sqlite();
    let key = app.create_key("localhost");
    assert_eq!(mint(&app, &key).status(), 201);

    // A restored backup moved over the live file (journal mode DELETE, so
    // that a byte comparison shows whether anyone wrote to it).
    let replacement = app.dir.path().join("backup.db");
    {
        let conn = rusqlite::Connection::open(&replacement).unwrap();
        conn.execute_batch("CREATE TABLE marker (x); INSERT INTO marker VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&replacement).unwrap();
    std::fs::rename(&replacement, &app.db).unwrap();

    assert_503(mint(&app, &key), "a mint after the replacement");
    assert_503(mint_json(&app, &key), "a JSON mint after the replacement");
    assert_eq!(health(&app).0, 503);
    assert_eq!(
        std::fs::read(&app.db).unwrap(),
        before,
        "the new file was written"
    );
    assert!(!sibling(&app.db, "-journal").exists());
}

#[test]
fn a_deleted_database_is_noticed_without_a_write_and_never_recreated() {
    let app = TestApp::spawn_sqlite();
    let page = app.mint();
    assert_eq!(health(&app).0, 200);
    std::fs::remove_file(&app.db).unwrap();

    // Only reads and health checks from here on: the server finds out by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&app).0 != 503 {
        assert!(Instant::now() < deadline, "/health never noticed the rm");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_503(client().get(&page).send().unwrap(), "the invite page");
    assert!(!app.db.exists(), "a reader recreated the database");
}

// ---------------------------------------------------------- who may read it

#[test]
fn the_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only() {
    // Under the test's umask (022 usually), as the server creates them.
    let app = TestApp::spawn_sqlite();
    app.mint();
    for suffix in ["", "-wal", "-shm"] {
        let path = sibling(&app.db, suffix);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    // Under umask 000, as an admin command creates them.
    let db = app.dir.path().join("cli.db");
    let out = Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\"", BIN, "--config"])
        .arg(&app.config)
        .arg("--db")
        .arg(&db)
        .args(["keys", "create", "localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for suffix in ["", "-wal", "-shm"] {
        let path = sibling(&db, suffix);
        if suffix.is_empty() || path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

// ------------------------------------------- where it is and whether it writes

#[test]
fn a_database_in_a_missing_directory_is_refused_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let db = missing.join("test.db");
    let says = format!("the directory {} does not exist", missing.display());
    for args in [
        &["keys", "list", "localhost"][..],
        &["invites", "create", "localhost"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let mut cmd = bin();
        cmd.arg("--db").arg(&db).args(args);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(stderr_of(&out).contains(&says), "{args:?}: {out:?}");
    }
    assert!(!missing.exists(), "the directory was created");
}

#[test]
fn serve_refuses_to_start_on_a_database_it_cannot_write_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let mut create = bin();
    create
        .arg("--db")
        .arg(&db)
        .args(["keys", "create", "localhost"]);
    let out = run(create);
    assert!(out.status.success(), "{out:?}");
    // The file readable by anyone and writable by no one but root (so as
    // root, the server runs as nobody). The directory stays writable, so
    // that SQLite can make its -wal and -shm files whether or not the
    // command above left them (a read-only directory is refused too, in
    // SQLite's words, when they are missing).
    let as_root = running_as_root(dir.path());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = sibling(&db, suffix);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    let mut cmd = bin();
    if as_root {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.arg("--db")
        .arg(&db)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("database {} cannot be written", db.display())),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it said it was listening: {out:?}");
}

// ------------------------------------------------------ failures mid-service

/// Renames tables away through a connection of the test's own, which makes
/// every statement on them fail in the server (as root, unlike chmod, which
/// root ignores and which an open file does not notice anyway); `back`
/// renames them back.
fn rename_tables(db: &Path, tables: &[&str], back: bool) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    for t in tables {
        let (from, to) = if back {
            (format!("{t}_away"), t.to_string())
        } else {
            (t.to_string(), format!("{t}_away"))
        };
        conn.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}"))
            .unwrap();
    }
}

fn assert_500(res: Response, what: &str) -> Response {
    assert_eq!(res.status(), 500, "{what}: {:?}", res.headers());
    // Retrying will not mend it: no Retry-After invites a client to hammer.
    assert!(!res.headers().contains_key(RETRY_AFTER), "{what}");
    res
}

#[test]
fn a_store_failing_mid_service_answers_500_with_a_generic_body_logs_the_cause_and_loses_nothing() {
    let app = TestApp::spawn_sqlite();
    let key = app.create_key("localhost");
    let by_api = app.mint();
    let by_page = app.mint();
    let form = open_form(&by_page);
    let invites = probe::invites(&app);

    // A statement the schema cannot run: no retry mends it.
    rename_tables(&app.db, &["invites", "accounts"], false);
    let res = assert_500(mint(&app, &key), "/invites_api");
    let text = res.text().unwrap();
    assert!(text.starts_with("Internal server error"), "{text}");
    assert!(
        !text.contains("no such table"),
        "the cause is not sent: {text}"
    );
    let res = assert_500(
        accept_invite(&app, &token_of(&by_api), "alice", GOOD_PASSWORD),
        "POST /api/invite/{id}",
    );
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"], "internal", "{body}");
    assert!(!body.to_string().contains("no such table"), "{body}");
    let res = assert_500(post_form(&by_page, &form, "bob"), "the registration page");
    let page = res.text().unwrap();
    assert!(page.contains("Nothing was changed"), "{page}");
    assert!(!page.contains("no such table"), "{page}");
    rename_tables(&app.db, &["invites", "accounts"], true);

    // Logged at ERROR with the whole chain, SQLite's own words included.
    let log = app.log();
    let failures: Vec<_> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("store failure"))
        .collect();
    assert_eq!(failures.len(), 3, "once per request: {log}");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("storage failure: no such table")),
        "{failures:#?}"
    );

    // Nothing was half done: both invites work, and no more were made.
    assert_eq!(probe::invites(&app), invites);
    assert_eq!(probe::accounts(&app), 0);
    let res = accept_invite(&app, &token_of(&by_api), "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    assert_eq!(post_form(&by_page, &form, "bob").status(), 200);
    assert_eq!(mint(&app, &key).status(), 201);
}

#[test]
fn a_write_lock_held_by_another_process_past_the_busy_timeout_answers_503_with_retry_after() {
    let app = TestApp::spawn_sqlite();
    let key = app.create_key("localhost");
    assert_eq!(mint(&app, &key).status(), 201);

    // Another process (an operator's sqlite3 shell, say) holds the write
    // lock for longer than the server's 30 s busy timeout.
    let holder = rusqlite::Connection::open(&app.db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let patient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let res = patient
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap();
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    let res = assert_503(res, "a mint behind another process's lock");
    assert_eq!(res.headers()[RETRY_AFTER], "1");
    assert!(res.text().unwrap().starts_with("Service unavailable"));
    // The lock is gone, and so is the failure: the same request succeeds.
    assert_eq!(mint(&app, &key).status(), 201);
    let log = app.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("store temporarily unavailable")),
        "{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "a lock that passes is no error: {log}"
    );
}

// ------------------------------------------------------ what key lookups show

#[test]
fn an_unknown_key_id_and_a_known_one_with_a_wrong_secret_are_answered_alike_from_memory() {
    // The key cache is one decorator over every backend; taking SQLite's
    // table away is how this test makes the store unable to answer.
    let app = TestApp::spawn_sqlite();
    let key = app.create_key("localhost");
    assert_eq!(mint(&app, &key).status(), 201);
    let (id, _) = key.split_once('/').unwrap();
    let wrong_secret = format!("{id}/{}", "w".repeat(36));
    let unknown_id = format!("{}/{}", "Unknown0Id00", "w".repeat(36));
    let answer = |key: &str| {
        let res = mint(&app, key);
        let status = res.status();
        let kind = res.headers()["content-type"].clone();
        (status, kind, res.text().unwrap())
    };
    let first = (answer(&wrong_secret), answer(&unknown_id));
    assert_eq!(first.0, first.1);
    assert_eq!(first.0 .0, 403);

    // With the keys table gone, only answers from memory still come: both
    // kinds must (an unknown id that went to the database each time took
    // longer than a known one, and so told that the known one exists).
    rename_tables(&app.db, &["api_keys"], false);
    let again = (answer(&wrong_secret), answer(&unknown_id));
    rename_tables(&app.db, &["api_keys"], true);
    assert_eq!(again.0, first.0, "a known id with a wrong secret");
    assert_eq!(again.1, first.1, "an unknown id");
}
