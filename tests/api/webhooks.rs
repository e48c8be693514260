//! Webhooks, end to end: a Python receiver (tests/webhooks/receiver.py)
//! verifies every signature with the `standardwebhooks` package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The Python with `standardwebhooks`, as tests/run sets it up.
fn python() -> String {
    let py = std::env::var("INVITE_SERVER_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/invite-server/venv/bin/python")
    });
    let ok = Command::new(&py)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} cannot import standardwebhooks: run tests/run, or \
         python3 -m venv ~/.cache/invite-server/venv && \
         ~/.cache/invite-server/venv/bin/pip install -r tests/requirements.txt"
    );
    py
}

pub(crate) struct Receiver {
    child: Child,
    record: PathBuf,
}

impl Receiver {
    pub(crate) fn start(dir: &Path, port: u16, statuses: &[u16]) -> Self {
        let record = dir.join("received.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(SECRET)
            .arg(&record)
            .arg(port.to_string())
            .args(statuses.iter().map(u16::to_string))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver port");
        assert!(line.starts_with("port "), "receiver said {line:?}");
        Self { child, record }
    }

    pub(crate) fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record line"))
            .collect()
    }

    /// Waits (at most 60 s) until `n` requests arrived.
    pub(crate) fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        self.wait_within(n, Duration::from_secs(60))
    }

    /// Waits (at most `limit`) until `n` requests arrived.
    pub(crate) fn wait_within(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver that takes one delivery's request and never answers, so the
/// server that made the attempt holds its lease, mid-attempt, until killed.
pub(crate) struct Holder {
    attempted: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Holder {
    pub(crate) fn listen(port: u16) -> Self {
        let slow = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (tx, attempted) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let conn = slow.accept().map(|(c, _)| c);
            let _ = tx.send(());
            // Held until the server is dead, then dropped with the listener.
            std::thread::sleep(Duration::from_secs(2));
            drop(conn);
        });
        Self { attempted, thread }
    }

    /// Waits (at most 30 s) for a server to start a delivery.
    pub(crate) fn wait_for_attempt(&self) {
        self.attempted
            .recv_timeout(Duration::from_secs(30))
            .expect("the server never tried to deliver");
    }

    /// Lets the port go, for a real receiver to take it.
    pub(crate) fn close(self) {
        self.thread.join().unwrap();
    }
}

pub(crate) fn config(dir: &Path, hook_port: u16, retry: &str) -> String {
    let secret_file = dir.join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    format!(
        r#"{DEFAULT_CONFIG}
[[hosts."localhost".webhooks]]
url = "http://127.0.0.1:{hook_port}/hook"
secret_file = "{}"
events = ["invite.created", "invite.redeemed", "invite.revoked", "account.created", "account.deleted"]
retry = {retry}
"#,
        secret_file.display()
    )
}

pub(crate) fn types(got: &[serde_json::Value]) -> Vec<String> {
    got.iter()
        .map(|r| {
            let body: serde_json::Value =
                serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn events_arrive_signed_and_carry_no_token_secret_or_password() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let receiver = Receiver::start(dir.path(), hook_port, &[]);
    let cfg = config(dir.path(), hook_port, r#"["1s"]"#);
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_in(dir, db, &cfg);
    let key = app.create_key("localhost");
    let res = client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let page = res.headers()["location"].to_str().unwrap().to_owned();
    let token = token_of(&page);
    assert_eq!(
        accept_invite(&app, &token, "alice", GOOD_PASSWORD).status(),
        204
    );
    let out = app.cli(&["accounts", "delete", "localhost", "alice"]);
    assert!(out.status.success(), "{out:?}");

    let got = receiver.wait_for(4);
    let mut kinds = types(&got);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "account.created",
            "account.deleted",
            "invite.created",
            "invite.redeemed"
        ]
    );
    let secret_half = key.split('/').nth(1).unwrap();
    for r in &got {
        assert_eq!(r["verified"], true, "{r}");
        let body = r["body"].as_str().unwrap();
        for secret in [token.as_str(), secret_half, GOOD_PASSWORD, SECRET] {
            assert!(!body.contains(secret), "{body} holds a secret");
        }
    }
    let log = app.log();
    for secret in [
        token.as_str(),
        secret_half,
        GOOD_PASSWORD,
        SECRET,
        &SECRET[6..],
    ] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
}

#[test]
fn a_receiver_answering_500_twice_then_200_gets_the_event_three_times_with_one_id() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let receiver = Receiver::start(dir.path(), hook_port, &[500, 500, 200]);
    let cfg = config(dir.path(), hook_port, r#"["1s", "1s", "1s"]"#);
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_in(dir, db, &cfg);
    cli_mint(&app);
    let got = receiver.wait_for(3);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got
        .iter()
        .all(|r| r["verified"] == true && r["id"] == got[0]["id"]));
    // Delivered: nothing more arrives, and the list says so.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 3);
    let list = app.cli(&["webhooks", "list", "localhost", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["state"], "delivered");
    assert_eq!(list[0]["attempts"], 3);
}

#[test]
fn a_410_stops_the_retries_and_the_delivery_is_listed_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let receiver = Receiver::start(dir.path(), hook_port, &[410]);
    let cfg = config(dir.path(), hook_port, r#"["1s", "1s", "1s"]"#);
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_in(dir, db, &cfg);
    cli_mint(&app);
    assert_eq!(receiver.wait_for(1).len(), 1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.received().len(), 1, "a 410 was retried");
    let failed = app.cli(&["webhooks", "list", "localhost", "--failed"]);
    let text = String::from_utf8(failed.stdout).unwrap();
    assert!(
        text.contains("invite.created") && text.contains("410"),
        "{text}"
    );
}

#[test]
fn a_delivery_survives_a_kill_9_between_the_commit_and_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    // No receiver yet: the first attempts fail and the event waits.
    let cfg = config(dir.path(), hook_port, r#"["1s", "1s", "1s", "1s", "1s"]"#);
    let db = fresh_db(dir.path());
    let mut app = TestApp::spawn_in(dir, db, &cfg);
    let _ = app.mint();
    app.kill();
    let (dir, db) = app.into_parts();
    let receiver = Receiver::start(dir.path(), hook_port, &[]);
    let _app = TestApp::spawn_in(dir, db, &cfg);
    let got = receiver.wait_for(1);
    assert_eq!(types(&got), ["invite.created"]);
    assert_eq!(got[0]["verified"], true);
}

#[test]
fn a_bad_or_unreadable_secret_file_is_a_config_error_naming_it_and_check_config_hides_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path(), 9, r#"["1s"]"#);
    let path = dir.path().join("config.toml");
    let db = dir.path().join("t.db");
    std::fs::write(&path, good.replace("{port}", "1")).unwrap();
    let out = cli_at(&path, &db, &["check-config"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("invite.created") && !text.contains(&SECRET[6..]),
        "{text}"
    );

    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "not-a-secret-abcdef\n").unwrap();
    let out = cli_at(&path, &db, &["check-config"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hook.secret") && !err.contains("not-a-secret-abcdef"),
        "{err}"
    );

    std::fs::remove_file(&secret_file).unwrap();
    let err =
        String::from_utf8_lossy(&cli_at(&path, &db, &["check-config"], None).stderr).into_owned();
    assert!(
        err.contains("cannot read secret_file") && err.contains("hook.secret"),
        "{err}"
    );

    std::fs::write(
        &path,
        good.replace("{port}", "1")
            .replace("\"account.deleted\"", "\"account.renamed\""),
    )
    .unwrap();
    std::fs::write(&secret_file, SECRET).unwrap();
    let err =
        String::from_utf8_lossy(&cli_at(&path, &db, &["check-config"], None).stderr).into_owned();
    assert!(err.contains("unknown event `account.renamed`"), "{err}");
}

/// The test configuration with the webhook taking only `events` (TOML list).
pub(crate) fn config_for(dir: &Path, hook_port: u16, retry: &str, events: &str) -> String {
    let all = r#"events = ["invite.created", "invite.redeemed", "invite.revoked", "account.created", "account.deleted"]"#;
    config(dir, hook_port, retry).replace(all, &format!("events = {events}"))
}

/// Mints one invite for `localhost` with `invites create`.
pub(crate) fn cli_mint(app: &TestApp) {
    let out = app.cli(&["invites", "create", "localhost"]);
    assert!(out.status.success(), "{out:?}");
}

/// The body of each received request, parsed.
fn bodies(got: &[serde_json::Value]) -> Vec<serde_json::Value> {
    got.iter()
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect()
}

/// The public ids of `localhost`'s pending invites.
fn pending_ids(app: &TestApp) -> std::collections::BTreeSet<String> {
    let out = app.cli(&[
        "invites",
        "list",
        "localhost",
        "--status",
        "pending",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["invite_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `action`, which must revoke `count` pending invites, and checks that
/// exactly one verified `invite.revoked` per revoked invite arrives, naming
/// its public id; `seen` counts the requests received before.
fn revokes(
    app: &TestApp,
    receiver: &Receiver,
    seen: &mut usize,
    count: usize,
    action: impl FnOnce(),
) {
    let before = pending_ids(app);
    action();
    let after = pending_ids(app);
    let revoked: Vec<String> = before.difference(&after).cloned().collect();
    assert_eq!(revoked.len(), count, "{before:?} -> {after:?}");
    let got = receiver.wait_for(*seen + count);
    let new = &got[*seen..];
    *seen = got.len();
    assert!(new.iter().all(|r| r["verified"] == true), "{new:?}");
    let mut ids: Vec<String> = bodies(new)
        .iter()
        .map(|b| {
            assert_eq!(b["type"], "invite.revoked", "{b}");
            assert_eq!(b["data"]["host"], "localhost", "{b}");
            b["data"]["invite_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, revoked);
}

#[test]
fn every_way_of_revoking_sends_one_invite_revoked_per_revoked_invite_with_its_public_id() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let receiver = Receiver::start(dir.path(), hook_port, &[]);
    let cfg = config_for(dir.path(), hook_port, r#"["1s"]"#, r#"["invite.revoked"]"#);
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_in(dir, db, &cfg);
    let mut seen = 0;

    // `invites revoke`: the one named, once, even when revoked twice.
    for _ in 0..2 {
        cli_mint(&app);
    }
    let target = pending_ids(&app).into_iter().next().unwrap();
    revokes(&app, &receiver, &mut seen, 1, || {
        let out = app.cli(&["invites", "revoke", "localhost", &target]);
        assert!(out.status.success(), "{out:?}");
    });
    let again = app.cli(&["invites", "revoke", "localhost", &target]);
    assert!(again.status.success(), "{again:?}");

    // `keys delete`: the key's pending invites, not the one spent.
    let (key, _pending) = mint_for(&app, "localhost");
    let spent = client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap();
    assert_eq!(spent.status(), 201);
    let spent = token_of(spent.headers()["location"].to_str().unwrap());
    assert_eq!(
        accept_invite(&app, &spent, "bob", GOOD_PASSWORD).status(),
        204
    );
    let key_id = key.split('/').next().unwrap().to_owned();
    revokes(&app, &receiver, &mut seen, 1, || {
        let out = app.cli(&["keys", "delete", "localhost", &key_id]);
        assert!(out.status.success(), "{out:?}");
    });

    // `accounts delete`: what the account minted.
    let alice = register_account(&app, "alice");
    for _ in 0..2 {
        let res = client()
            .post(format!("{}/api/invite", app.url))
            .header("cookie", format!("identity={alice}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // And a reset invite for the account, which dies with it.
    let out = app.cli(&["invites", "reset", "localhost", "alice"]);
    assert!(out.status.success(), "{out:?}");
    revokes(&app, &receiver, &mut seen, 3, || {
        let out = app.cli(&["accounts", "delete", "localhost", "alice"]);
        assert!(out.status.success(), "{out:?}");
    });

    // The admin API's DELETE.
    let out = app.cli(&["keys", "create", "localhost", "--scope", "admin"]);
    assert!(out.status.success(), "{out:?}");
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let minted: serde_json::Value = client()
        .post(format!("{}/api/admin/invites", app.url))
        .header("authorization", format!("Bearer {admin}"))
        .json(&serde_json::json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = minted["invite_id"].as_str().unwrap().to_owned();
    revokes(&app, &receiver, &mut seen, 1, || {
        let res = client()
            .delete(format!("{}/api/admin/invites/{id}", app.url))
            .header("authorization", format!("Bearer {admin}"))
            .send()
            .unwrap();
        assert_eq!(res.status(), 204);
    });

    // Nothing more: no event twice, none for the spent invite.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), seen);
}

#[test]
fn a_delivery_claimed_by_a_killed_server_is_delivered_by_the_next_once_the_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let holder = Holder::listen(hook_port);
    let cfg = config(dir.path(), hook_port, r#"["1s"]"#);
    let db = fresh_db(dir.path());
    let mut app = TestApp::spawn_in(dir, db, &cfg);
    cli_mint(&app);
    holder.wait_for_attempt();
    app.kill();
    holder.close();

    let (dir, db) = app.into_parts();
    let receiver = Receiver::start(dir.path(), hook_port, &[]);
    let app = TestApp::spawn_in(dir, db, &cfg);
    // The dead server's lease (60 s) still holds the row: no early takeover.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        receiver.received().len(),
        0,
        "taken over before the lease expired"
    );
    let got = receiver.wait_within(1, Duration::from_secs(90));
    assert_eq!(types(&got), ["invite.created"]);
    assert_eq!(got[0]["verified"], true);
    let list = app.cli(&["webhooks", "list", "localhost", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["state"], "delivered", "{list}");
}

#[test]
fn webhooks_retry_sends_a_given_up_delivery_again_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    // Two failures spend the schedule of one retry; the third answer is 200.
    let receiver = Receiver::start(dir.path(), hook_port, &[500, 500]);
    let cfg = config(dir.path(), hook_port, r#"["1s"]"#);
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_in(dir, db, &cfg);
    cli_mint(&app);
    assert_eq!(receiver.wait_for(2).len(), 2);
    let failed = |app: &TestApp| -> serde_json::Value {
        let out = app.cli(&["webhooks", "list", "localhost", "--failed", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The result is written just after the answer: wait (bounded) for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while failed(&app).as_array().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = failed(&app);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["state"], "failed");
    assert_eq!(list[0]["attempts"], 2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        receiver.received().len(),
        2,
        "a given-up delivery went again"
    );

    let id = list[0]["id"].to_string();
    let out = app.cli(&["webhooks", "retry", "localhost", &id]);
    assert!(out.status.success(), "{out:?}");
    let got = receiver.wait_for(3);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got
        .iter()
        .all(|r| r["verified"] == true && r["id"] == got[0]["id"]));
    assert_eq!(got[2]["status"], 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !failed(&app).as_array().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = app.cli(&["webhooks", "list", "localhost", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all[0]["state"], "delivered", "{all}");
    assert_eq!(all[0]["attempts"], 3);

    // Another host's or an unknown id: a clear error.
    let out = app.cli(&["webhooks", "retry", "example.com", &id]);
    assert!(!out.status.success(), "{out:?}");
}
