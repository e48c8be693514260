//! `invite-server copy-db`: a whole store copied into an empty database, and
//! a server started on the copy serving everything the old one handed out.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::*;

/// The databases a copy passes through on its way from the source file to
/// the file a new server is started on: none (one SQLite to SQLite copy),
/// or with `INVITE_SERVER_TEST_POSTGRES` (the base URL of a throwaway
/// cluster) one fresh PostgreSQL database, so the round trip is SQLite ->
/// PostgreSQL -> SQLite. The one place that says where copies go. The
/// databases are dropped with it, also when the test fails.
struct Stops {
    base: Option<String>,
    names: Vec<String>,
}

impl Stops {
    fn new() -> Self {
        let base = std::env::var("INVITE_SERVER_TEST_POSTGRES").ok();
        let names: Vec<String> = base
            .iter()
            .map(|base| {
                let name = format!("t_copy_{:016x}", rand::random::<u64>());
                assert!(psql(base, &format!("CREATE DATABASE {name}")));
                name
            })
            .collect();
        Self { base, names }
    }

    /// Their URLs, in the order the copy passes them.
    fn urls(&self) -> Vec<String> {
        let Some(base) = &self.base else {
            return Vec::new();
        };
        let base = url::Url::parse(base).expect("INVITE_SERVER_TEST_POSTGRES is a URL");
        self.names
            .iter()
            .map(|name| {
                let mut url = base.clone();
                url.set_path(name);
                url.to_string()
            })
            .collect()
    }
}

impl Drop for Stops {
    fn drop(&mut self) {
        for (base, name) in self.base.iter().zip(&self.names) {
            // Best effort: a failure here must not hide the test's own.
            psql(base, &format!("DROP DATABASE IF EXISTS {name}"));
        }
    }
}

/// Runs one statement with `psql` on the cluster at `base`; whether it worked.
fn psql(base: &str, sql: &str) -> bool {
    Command::new("psql")
        .args([base, "-q", "-c", sql])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `copy-db --from from --to to` with no configuration file.
fn copy_db(from: &str, to: &str) -> Output {
    Command::new(BIN)
        .args(["copy-db", "--from", from, "--to", to])
        .env_remove("INVITE_SERVER_DATABASE")
        .env_remove("INVITE_SERVER_CONFIG")
        .output()
        .expect("run copy-db")
}

/// The `table source target` lines `copy-db` prints, by table.
fn counts_printed(out: &Output) -> BTreeMap<String, (u64, u64)> {
    stdout_of(out)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            match cols[..] {
                [table, a, b] => Some((table.to_owned(), (a.parse().ok()?, b.parse().ok()?))),
                _ => None,
            }
        })
        .collect()
}

/// Copies `from` to `to` through the [`Stops`], checking at every hop
/// that it succeeded and that every table's count matches; the counts, and
/// the stops (whose databases live as long as they do).
fn copy_through(from: &str, to: &str) -> (BTreeMap<String, (u64, u64)>, Stops) {
    let stops = Stops::new();
    let mut hops = vec![from.to_owned()];
    hops.extend(stops.urls());
    hops.push(to.to_owned());
    let mut counts = BTreeMap::new();
    for pair in hops.windows(2) {
        let out = copy_db(&pair[0], &pair[1]);
        assert!(out.status.success(), "copy-db failed: {out:?}");
        counts = counts_printed(&out);
        assert_eq!(counts.len(), 9, "one line per table: {}", stdout_of(&out));
        for (table, (a, b)) in &counts {
            assert_eq!(a, b, "{table} differs after the copy");
        }
    }
    (counts, stops)
}

/// A command's JSON output.
fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&stdout_of(out)).expect("JSON")
}

/// Mints an invite with `key` through the Prosody-compatible API.
fn mint_with(app: &TestApp, key: &str) -> String {
    let res = client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// Opens an invite's page on `app` and submits its form as a browser would.
fn register_with_form(app: &TestApp, token: &str, name: &str) -> reqwest::blocking::Response {
    let url = format!("{}/invite?{token}", app.url);
    let page = client().get(&url).send().unwrap();
    assert_eq!(page.status(), 200, "the old invite's page did not open");
    let cookie = set_cookie_value(&page, "invite_csrf").expect("no CSRF cookie");
    let field = csrf_field(&page.text().unwrap());
    client()
        .post(&url)
        .header(reqwest::header::COOKIE, format!("invite_csrf={cookie}"))
        .form(&[
            ("csrf", field.as_str()),
            ("name", name),
            ("password", GOOD_PASSWORD),
            ("password2", GOOD_PASSWORD),
        ])
        .send()
        .unwrap()
}

/// What the source server handed out, which every copy must honour.
struct HandedOut {
    key: String,
    alice_session: String,
    /// A link used up, one revoked, one pending, and a reset link.
    used: String,
    revoked: String,
    pending: String,
    reset: String,
    /// The keys, accounts and invites the source listed.
    listed: [serde_json::Value; 3],
}

/// The keys, accounts and invites `app` lists, as JSON.
fn listed(app: &TestApp) -> [serde_json::Value; 3] {
    [
        json_of(&app.cli(&["keys", "list", "localhost", "--json"])),
        json_of(&app.cli(&["accounts", "list", "localhost", "--json"])),
        json_of(&app.cli(&["invites", "list", "localhost", "--status", "all", "--json"])),
    ]
}

/// Checks that a server on a copy honours everything the source handed out.
fn honours(copy: &TestApp, old: &HandedOut) {
    let db = copy.database();
    assert_eq!(listed(copy), old.listed, "{db} lists what the source did");
    // The old session still signs alice in, and her password still works.
    assert_eq!(auth_check(copy, Some(&old.alice_session)).status(), 200);
    assert_eq!(login(copy, "alice", GOOD_PASSWORD).status(), 204, "{db}");
    // The old key still mints.
    mint_with(copy, &old.key);
    // The old pending link opens, and its form (signed with the copied form
    // key) registers a new account, whose id no copied row had.
    let res = register_with_form(copy, &old.pending, "carol");
    assert!(
        res.status().is_redirection() || res.status() == 200,
        "{db}: {res:?}"
    );
    assert_eq!(login(copy, "carol", GOOD_PASSWORD).status(), 204, "{db}");
    assert_eq!(login(copy, "alice", GOOD_PASSWORD).status(), 204, "{db}");
    // Used and revoked links stay so; the reset link still opens.
    for (token, status) in [(&old.used, 410), (&old.revoked, 410), (&old.reset, 200)] {
        let page = client()
            .get(format!("{}/invite?{token}", copy.url))
            .send()
            .unwrap();
        assert_eq!(page.status(), status, "{db}");
    }
}

#[test]
fn a_server_on_every_copy_honours_the_old_keys_links_sessions_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    // A webhook to a port nobody listens on: its events stay in the outbox.
    let config = crate::webhooks::config(dir.path(), free_port(), r#"["1h"]"#);
    let source_db = dir.path().join("source.db");
    let app = TestApp::spawn_in(dir, source_db, &config);

    let key = app.create_key("localhost");
    let used = token_of(&mint_with(&app, &key));
    let res = accept_invite(&app, &used, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let alice_session = set_cookie_value(&res, "identity").expect("a session");
    let pending = token_of(&mint_with(&app, &key));
    let revoked = json_of(&app.cli(&["invites", "create", "localhost", "--json"]));
    let revoked_id = revoked[0]["invite_id"].as_str().unwrap().to_owned();
    let revoked = token_of(revoked[0]["url"].as_str().unwrap());
    assert!(app
        .cli(&["invites", "revoke", "localhost", &revoked_id])
        .status
        .success());
    let reset = app.cli(&["invites", "reset", "localhost", "alice"]);
    assert!(reset.status.success(), "{reset:?}");
    let reset = token_of(stdout_of(&reset).trim());
    let old = HandedOut {
        listed: listed(&app),
        key,
        alice_session,
        used,
        revoked,
        pending,
        reset,
    };
    let (source_dir, source_db) = app.into_parts();

    let copy_dir = tempfile::tempdir().unwrap();
    let copy_db_path = copy_dir.path().join("copy.db");
    let (counts, stops) = copy_through(source_db.to_str().unwrap(), copy_db_path.to_str().unwrap());
    for (table, at_least) in [
        ("server_secrets", 1),
        ("api_keys", 1),
        ("accounts", 1),
        ("invites", 4),
        ("invite_uses", 1),
        ("sessions", 1),
        ("audit_log", 1),
        ("webhook_outbox", 1),
    ] {
        assert!(counts[table].0 >= at_least, "{table}: {counts:?}");
    }
    drop(source_dir);

    // Every stop on the way was copied from before any server wrote to
    // it, so each is checked on its own: first the PostgreSQL ones.
    for url in stops.urls() {
        let server = TestApp::spawn_in(tempfile::tempdir().unwrap(), url.into(), DEFAULT_CONFIG);
        honours(&server, &old);
    }
    let copy = TestApp::spawn_in(copy_dir, copy_db_path, DEFAULT_CONFIG);
    honours(&copy, &old);
}

#[test]
fn a_target_that_holds_anything_is_refused_and_left_as_it_was() {
    let source = TestApp::spawn();
    source.create_key("localhost");
    let target = TestApp::spawn();
    target.create_key("localhost");
    let keys = |app: &TestApp| json_of(&app.cli(&["keys", "list", "localhost", "--json"]));
    let before = keys(&target);
    let out = copy_db(source.db.to_str().unwrap(), target.db.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr_of(&out);
    // A server that ever ran on it made its form key: that alone is a row.
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(stdout_of(&out), "");
    assert_eq!(keys(&target), before);
}

#[test]
fn a_missing_source_the_same_database_twice_and_a_url_password_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let refused = |from: &str, to: &str, says: &str| {
        let out = copy_db(from, to);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = stderr_of(&out);
        assert!(err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        err
    };
    refused(&at("missing.db"), &at("new.db"), "does not exist");
    assert!(!Path::new(&at("new.db")).exists(), "no target was created");

    let app = TestApp::spawn_sqlite();
    let db = app.db.to_str().unwrap().to_owned();
    let spelled_otherwise = format!("{}/./{}", app.dir.path().display(), "test.db");
    refused(&db, &spelled_otherwise, "same database");
    if postgres_base().is_some() {
        let app = TestApp::spawn();
        refused(&app.database(), &app.database(), "same database");
    }

    let err = refused(
        "postgres://copier:hunter2secret@127.0.0.1:1/invites",
        &at("new.db"),
        "Error: ",
    );
    assert!(!err.contains("hunter2secret"), "{err}");
    assert!(!Path::new(&at("new.db")).exists(), "no target was created");
}
