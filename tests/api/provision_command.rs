//! The `command` provisioner through the real binary: a shell script that
//! records each JSON request it reads and answers as its control file says
//! (done, name taken, failure, or sleeping past the timeout).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::helpers::{
    accept_invite, execute_sql, header, stderr_of, stdout_of, token_of, TestApp, GOOD_PASSWORD,
};
use crate::probe;

/// Records stdin as one line of calls.log, then behaves as `mode` says:
/// `ok`, `taken` (exit 3), `fail` (exit 1), or `sleep N` then ok.
const SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
cat >> "$dir/calls.log"
mode=$(cat "$dir/mode" 2>/dev/null || echo ok)
case "$mode" in
  ok) exit 0 ;;
  taken) exit 3 ;;
  fail) exit 1 ;;
  sleep*) sleep "${mode#sleep }"; exit 0 ;;
esac
exit 1
"#;

struct Fixture {
    app: TestApp,
    dir: PathBuf,
}

impl Fixture {
    fn new(timeout: &str) -> Self {
        let scripts = tempfile::tempdir().unwrap().keep();
        let script = scripts.join("provision.sh");
        fs::write(&script, SCRIPT).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let config = format!(
            r#"
[hosts."localhost"]
public_url = "http://127.0.0.1:{{port}}"
[hosts."localhost".provision]
kind = "command"
command = ["{}"]
timeout = "{timeout}"
"#,
            script.display()
        );
        Self {
            app: TestApp::spawn_with(&config),
            dir: scripts,
        }
    }

    fn mode(&self, mode: &str) {
        fs::write(self.dir.join("mode"), mode).unwrap();
    }

    fn calls(&self) -> Vec<serde_json::Value> {
        read_calls(&self.dir)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read_calls(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn uses_spent(app: &TestApp) -> u64 {
    probe::census(app).uses_spent
}

#[test]
fn registering_runs_the_command_with_the_password_and_records_the_account() {
    let f = Fixture::new("10s");
    let token = token_of(&f.app.mint());
    let res = accept_invite(&f.app, &token, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["action"], "create");
    assert_eq!(calls[0]["host"], "localhost");
    assert_eq!(calls[0]["name"], "alice");
    assert_eq!(calls[0]["password"], GOOD_PASSWORD);
    assert_eq!(probe::accounts(&f.app), 1);
    assert_eq!(probe::census(&f.app).reservations, 0);
    assert_eq!(uses_spent(&f.app), 1);
    assert!(
        !f.app.log().contains(GOOD_PASSWORD),
        "the password was logged"
    );
}

#[test]
fn a_failing_command_answers_503_with_retry_after_and_leaves_the_invite_usable() {
    let f = Fixture::new("10s");
    f.mode("fail");
    let token = token_of(&f.app.mint());
    let res = accept_invite(&f.app, &token, "bob", GOOD_PASSWORD);
    assert_eq!(res.status(), 503);
    assert!(header(&res, "retry-after").is_some());
    assert_eq!(probe::accounts(&f.app), 0);
    assert_eq!(uses_spent(&f.app), 0);
    f.mode("ok");
    let res = accept_invite(&f.app, &token, "bob", GOOD_PASSWORD);
    assert_eq!(res.status(), 204, "the invite stayed usable");
    assert!(
        !f.app.log().contains(GOOD_PASSWORD),
        "the password was logged"
    );
}

#[test]
fn a_command_past_its_timeout_is_stopped_and_answers_503() {
    let f = Fixture::new("1s");
    f.mode("sleep 30");
    let token = token_of(&f.app.mint());
    let res = accept_invite(&f.app, &token, "carol", GOOD_PASSWORD);
    assert_eq!(res.status(), 503);
    assert_eq!(probe::accounts(&f.app), 0);
    assert_eq!(uses_spent(&f.app), 0);
}

#[test]
fn a_name_the_service_holds_answers_409_and_leaves_the_invite_usable() {
    let f = Fixture::new("10s");
    f.mode("taken");
    let token = token_of(&f.app.mint());
    let res = accept_invite(&f.app, &token, "dave", GOOD_PASSWORD);
    assert_eq!(res.status(), 409);
    assert_eq!(uses_spent(&f.app), 0);
    f.mode("ok");
    assert_eq!(
        accept_invite(&f.app, &token, "dave2", GOOD_PASSWORD).status(),
        204
    );
}

#[test]
fn concurrent_registrations_on_a_one_use_invite_with_a_slow_service_create_one_account() {
    let f = Fixture::new("10s");
    f.mode("sleep 2");
    let token = token_of(&f.app.mint());
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = ["erin", "frank", "grace"]
            .into_iter()
            .map(|name| {
                let (app, token) = (&f.app, &token);
                s.spawn(move || {
                    accept_invite(app, token, name, GOOD_PASSWORD)
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(probe::accounts(&f.app), 1);
    assert_eq!(
        f.calls().len(),
        1,
        "only the holder of the use called the service"
    );
    assert_eq!(uses_spent(&f.app), 1);
}

#[test]
fn a_kill_during_the_service_call_leaves_a_pending_registration_and_no_spent_use() {
    let mut f = Fixture::new("10s");
    // Long enough to be killed during; short, as the orphan outlives the server.
    f.mode("sleep 5");
    let token = token_of(&f.app.mint());
    let url = f.app.url.clone();
    let t = std::thread::spawn(move || {
        crate::helpers::client()
            .post(format!("{url}/api/invite/{token}"))
            .json(&serde_json::json!({"name": "heidi", "password": GOOD_PASSWORD}))
            .send()
            .map(|r| r.status().as_u16())
    });
    // Bounded wait until the script has been called.
    for _ in 0..100 {
        if !f.calls().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(f.calls().len(), 1);
    f.app.kill();
    assert!(
        t.join().unwrap().is_err(),
        "the request died with the server"
    );
    assert_eq!(probe::accounts(&f.app), 0);
    assert_eq!(uses_spent(&f.app), 0, "the invite was not over-spent");
    // The lease (timeout + 60 s) is still running: not yet listed as pending.
    let out = f.app.cli(&["accounts", "list", "localhost", "--pending"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "");
    // Once the lease has run out it is listed (made to have run out here
    // rather than waited for; no store method ends a lease early, so this
    // writes the database directly).
    execute_sql(
        &f.app.db,
        "UPDATE provision_reservations SET lease_until = 0",
        "UPDATE provision_reservations SET lease_until = 'epoch'",
    );
    let out = f.app.cli(&["accounts", "list", "localhost", "--pending"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).starts_with("heidi\t"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn accounts_create_delete_and_passwd_are_passed_to_the_command() {
    let f = Fixture::new("10s");
    let out = f.app.cli_with_stdin(
        &[
            "accounts",
            "create",
            "localhost",
            "ivan",
            "--password-stdin",
        ],
        Some(GOOD_PASSWORD),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    f.mode("fail");
    let out = f.app.cli(&["accounts", "delete", "localhost", "ivan"]);
    assert_eq!(out.status.code(), Some(1), "a refused delete fails");
    assert_eq!(probe::accounts(&f.app), 1, "and deletes nothing");
    f.mode("ok");
    let out = f.app.cli(&["accounts", "delete", "localhost", "ivan"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let actions: Vec<_> = f.calls().iter().map(|c| c["action"].clone()).collect();
    assert_eq!(actions, ["create", "delete", "delete"]);
}
