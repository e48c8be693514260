//! The `prosody` provisioner against the real thing: Debian's Prosody,
//! started per test with its own throwaway configuration
//! (tests/provision/prosody.cfg.lua: data, pid file, log and admin socket
//! in a temporary directory, c2s on a free loopback port), and a real XMPP
//! client (tests/xmpp/login.py, slixmpp) logging in with the password
//! chosen on invite-server. Prosody and slixmpp are installed by
//! `tests/run`; their absence is a failure, not a skip.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{
    accept_invite, client, free_port, set_cookie_value, stderr_of, token_of, TestApp, GOOD_PASSWORD,
};
use crate::probe;

/// A password the policy accepts, other than [`GOOD_PASSWORD`].
const NEW_PASSWORD: &str = "copper meadow violin 47";

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A running throwaway Prosody serving `localhost`, stopped on drop.
struct Prosody {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Prosody {
    fn start() -> Self {
        assert!(
            Path::new("/usr/bin/prosody").exists(),
            "Prosody is missing: run tests/run, or apt-get install prosody"
        );
        let dir = tempfile::Builder::new()
            .prefix("invite-server-provision-prosody.")
            .tempdir()
            .expect("a directory for Prosody");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let child = Self::command(dir.path(), port, "prosody")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prosody");
        let mut prosody = Self { child, dir, port };
        prosody.wait_until_up();
        prosody
    }

    /// `program` (prosody or prosodyctl) on this instance's configuration.
    fn command(dir: &Path, port: u16, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(repo_file("tests/provision/prosody.cfg.lua"))
            .current_dir(dir)
            .env("PROVISION_DIR", dir)
            .env("PROVISION_C2S_PORT", port.to_string())
            .env("PROVISION_DOMAIN", "localhost");
        cmd
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Prosody exited at start ({status}): {}", self.logs());
            }
            let listening = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if listening && self.socket().exists() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prosody did not start within 20 s: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        ["stdout.log", "prosody.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("prosody.sock")
    }

    /// Creates `user@localhost` with prosodyctl, behind invite-server's back.
    fn prosodyctl_register(&self, user: &str, password: &str) {
        let out = Self::command(self.dir.path(), self.port, "prosodyctl")
            .args(["register", user, "localhost", password])
            .output()
            .expect("cannot run prosodyctl");
        assert!(out.status.success(), "prosodyctl: {}", stderr_of(&out));
    }

    /// Logs in as `user@localhost` with a real XMPP client: `Some(true)`
    /// when the session starts, `Some(false)` when authentication fails.
    fn login(&self, user: &str, password: &str) -> bool {
        use std::io::Write as _;
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo_file("tests/xmpp/login.py"))
            .arg(format!("{user}@localhost"))
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run tests/xmpp/login.py");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(password.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!(
                "login.py failed (is python3-slixmpp installed? run tests/run): {}{}",
                stderr_of(&out),
                self.logs()
            ),
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prosody and invite-server provisioning into it for host `localhost`.
fn fixture() -> (Prosody, TestApp) {
    let prosody = Prosody::start();
    let config = format!(
        r#"
[hosts."localhost"]
public_url = "http://127.0.0.1:{{port}}"
[hosts."localhost".provision]
kind = "prosody"
admin_socket = "{}"
"#,
        prosody.socket().display()
    );
    let app = TestApp::spawn_with(&config);
    (prosody, app)
}

/// Opens the page at `url` and submits its form with `fields` (and the
/// CSRF cookie and field) as a browser would.
fn submit_page(url: &str, fields: &[(&str, &str)]) -> reqwest::blocking::Response {
    let res = client().get(url).send().unwrap();
    assert_eq!(res.status(), 200, "the page did not open");
    let cookie = set_cookie_value(&res, "invite_csrf").expect("no CSRF cookie");
    let csrf = crate::helpers::csrf_field(&res.text().unwrap());
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    client()
        .post(url)
        .header("cookie", format!("invite_csrf={cookie}"))
        .form(&form)
        .send()
        .unwrap()
}

/// Registers `name` through the invite page's form.
fn register_on_page(page_url: &str, name: &str, password: &str) -> reqwest::blocking::Response {
    submit_page(
        page_url,
        &[
            ("name", name),
            ("password", password),
            ("password2", password),
        ],
    )
}

fn uses_spent(app: &TestApp) -> u64 {
    probe::census(app).uses_spent
}

#[test]
fn accounts_registered_on_the_page_and_over_json_log_into_prosody_with_their_password() {
    let (prosody, app) = fixture();
    let res = register_on_page(&app.mint(), "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 200, "{}", res.text().unwrap_or_default());
    let res = accept_invite(&app, &token_of(&app.mint()), "bob", NEW_PASSWORD);
    assert_eq!(res.status(), 204);

    assert!(prosody.login("alice", GOOD_PASSWORD), "alice's session");
    assert!(prosody.login("bob", NEW_PASSWORD), "bob's session");
    assert!(!prosody.login("alice", NEW_PASSWORD), "a wrong password");
    assert!(!prosody.login("carol", GOOD_PASSWORD), "an unknown user");
    assert!(!app.log().contains(GOOD_PASSWORD), "a password was logged");
    assert!(!app.log().contains(NEW_PASSWORD), "a password was logged");
}

#[test]
fn a_reset_invite_and_accounts_passwd_change_the_password_prosody_accepts() {
    let (prosody, app) = fixture();
    let res = accept_invite(&app, &token_of(&app.mint()), "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);

    let out = app.cli(&["invites", "reset", "localhost", "alice"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let reset = token_of(String::from_utf8_lossy(&out.stdout).trim());
    let res = client()
        .post(format!("{}/api/invite/{reset}", app.url))
        .json(&serde_json::json!({ "password": NEW_PASSWORD }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(prosody.login("alice", NEW_PASSWORD), "after the reset");
    assert!(!prosody.login("alice", GOOD_PASSWORD), "the old password");

    let out = app.cli_with_stdin(
        &[
            "accounts",
            "passwd",
            "localhost",
            "alice",
            "--password-stdin",
        ],
        Some(&format!("{GOOD_PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        prosody.login("alice", GOOD_PASSWORD),
        "after accounts passwd"
    );
    assert!(!prosody.login("alice", NEW_PASSWORD), "the reset password");
}

#[test]
fn a_name_prosody_already_has_answers_409_and_leaves_the_invite_usable() {
    let (prosody, app) = fixture();
    prosody.prosodyctl_register("alice", NEW_PASSWORD);
    let token = token_of(&app.mint());
    let res = accept_invite(&app, &token, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 409);
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(uses_spent(&app), 0);
    // Prosody's own account is untouched.
    assert!(prosody.login("alice", NEW_PASSWORD));
    assert!(!prosody.login("alice", GOOD_PASSWORD));

    let res = accept_invite(&app, &token, "bob", GOOD_PASSWORD);
    assert_eq!(res.status(), 204, "the invite stayed usable");
    assert!(prosody.login("bob", GOOD_PASSWORD));
}

#[test]
fn a_hostile_password_is_only_a_password_in_prosody_and_runs_nothing() {
    let (prosody, app) = fixture();
    let marker = prosody.dir.path().join("pwned");
    let m = marker.display();
    let hostile = format!(
        "a\"]]\\\\'\"..os.execute('touch {m}')..\" ]]..os.execute(\"touch {m}\")--[[ \\\"); x"
    );
    let res = accept_invite(&app, &token_of(&app.mint()), "alice", &hostile);
    assert_eq!(res.status(), 204);
    assert!(prosody.login("alice", &hostile), "the hostile password");
    assert!(!prosody.login("alice", "a"), "a prefix of it");
    assert!(!marker.exists(), "Prosody ran code from a password");

    // A line break: Prosody's SASLprep refuses it as a password, for good.
    // That is a 400 saying why (not a 503 asking to retry the same password
    // later); nothing is created anywhere, nothing runs, the invite stays
    // usable.
    let token = token_of(&app.mint());
    let with_newline = format!("line one\n{hostile}");
    let res = accept_invite(&app, &token, "bob", &with_newline);
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"], "invalid_password", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("line break"), "{body}");
    assert!(!message.contains("line one"), "the password was repeated");
    assert!(!marker.exists(), "Prosody ran code from a password");
    assert!(probe::account(&app, "bob").is_none());
    // Not 409: bob was not created in Prosody either.
    let res = accept_invite(&app, &token, "bob", GOOD_PASSWORD);
    assert_eq!(res.status(), 204, "the invite stayed usable");
    assert!(prosody.login("bob", GOOD_PASSWORD));
    assert!(!app.log().contains("os.execute"), "a password was logged");
}

#[test]
fn accounts_delete_removes_the_prosody_user() {
    let (prosody, app) = fixture();
    let res = accept_invite(&app, &token_of(&app.mint()), "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    assert!(prosody.login("alice", GOOD_PASSWORD));
    let out = app.cli(&["accounts", "delete", "localhost", "alice"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        !prosody.login("alice", GOOD_PASSWORD),
        "after accounts delete"
    );
}

#[test]
fn a_password_prosody_refuses_brings_the_page_form_and_the_reset_back_with_400() {
    let (prosody, app) = fixture();
    let with_newline = format!("line one\n{GOOD_PASSWORD}");
    let url = app.mint();
    let res = register_on_page(&url, "alice", &with_newline);
    assert_eq!(res.status(), 400);
    assert!(res.text().unwrap().contains("line break"));
    let res = register_on_page(&url, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 200, "the invite stayed usable");

    let out = app.cli(&["invites", "reset", "localhost", "alice"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let reset_url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let res = submit_page(
        &reset_url,
        &[("password", &with_newline), ("password2", &with_newline)],
    );
    assert_eq!(res.status(), 400, "the reset page");
    assert!(res.text().unwrap().contains("line break"));
    let reset = token_of(&reset_url);
    let post = |password: &str| {
        client()
            .post(format!("{}/api/invite/{reset}", app.url))
            .json(&serde_json::json!({ "password": password }))
            .send()
            .unwrap()
    };
    let res = post(&with_newline);
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"], "invalid_password", "{body}");
    assert!(
        prosody.login("alice", GOOD_PASSWORD),
        "unchanged in Prosody"
    );
    assert_eq!(post(NEW_PASSWORD).status(), 204, "the reset stayed usable");
    assert!(prosody.login("alice", NEW_PASSWORD));
}
