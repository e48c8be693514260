//! Webhooks, end to end: a Python receiver (tests/webhooks/receiver.py)
//! verifies every signature with the `standardwebhooks` package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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

struct Receiver {
    child: Child,
    record: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, port: u16, statuses: &[u16]) -> Self {
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

    fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record line"))
            .collect()
    }

    /// Waits (at most 60 s) until `n` requests arrived.
    fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
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

fn config(dir: &Path, hook_port: u16, retry: &str) -> String {
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

fn types(got: &[serde_json::Value]) -> Vec<String> {
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
    let db = dir.path().join("test.db");
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
    let db = dir.path().join("test.db");
    let app = TestApp::spawn_in(dir, db, &cfg);
    let out = app.cli(&["invites", "create", "localhost"]);
    assert!(out.status.success(), "{out:?}");
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
    let db = dir.path().join("test.db");
    let app = TestApp::spawn_in(dir, db, &cfg);
    assert!(app
        .cli(&["invites", "create", "localhost"])
        .status
        .success());
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
    let db = dir.path().join("test.db");
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
