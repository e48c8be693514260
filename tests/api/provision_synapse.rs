//! The `synapse` provisioner against a real Synapse (`matrix-synapse` from
//! PyPI, in the test venv tests/run makes): registering through invite-server
//! (page and JSON API) makes an account that logs into Synapse with the
//! chosen password; a name Synapse holds is 409; Synapse down is 503.
//!
//! This test process starts one Synapse, on a free loopback port with
//! SQLite in a throwaway directory, and stops it when the process ends. Its
//! absence is a failure that names the install command, not a skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    accept_invite, client, free_port, header, stderr_of, token_of, TestApp, GOOD_PASSWORD,
};
use crate::probe;

/// The homeserver's `server_name` (deliberately not invite-server's host).
const SERVER_NAME: &str = "test.local";
const SHARED_SECRET: &str = "test-shared-secret-0123456789";
const ADMIN_PASSWORD: &str = "admin-password-for-tests-9f3a";

/// The running Synapse of this test process.
struct Synapse {
    url: String,
    dir: PathBuf,
    /// Kept, never waited for: the shell of [`stop_when_tests_end`] ends it.
    _process: std::process::Child,
}

static SYNAPSE: OnceLock<Synapse> = OnceLock::new();

/// The Python with `matrix-synapse`, as tests/run sets it up.
fn python() -> String {
    let py = std::env::var("INVITE_SERVER_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/invite-server/venv/bin/python")
    });
    let ok = Command::new(&py)
        .args(["-c", "import synapse"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} cannot import synapse: run tests/run, or \
         python3 -m venv ~/.cache/invite-server/venv && \
         ~/.cache/invite-server/venv/bin/pip install -r tests/requirements.txt"
    );
    py
}

/// The homeserver configuration: loopback, no TLS, SQLite and media in
/// `dir`, no federation or URL previews, rate limits out of the way.
fn homeserver_yaml(dir: &Path, port: u16) -> String {
    let d = dir.display();
    let limit = "{per_second: 1000, burst_count: 1000}";
    format!(
        r#"server_name: "{SERVER_NAME}"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
log_config: "{d}/{SERVER_NAME}.log.config"
media_store_path: {d}/media_store
registration_shared_secret: "{SHARED_SECRET}"
enable_registration: false
report_stats: false
macaroon_secret_key: "macaroon-secret-for-tests"
form_secret: "form-secret-for-tests"
signing_key_path: "{d}/{SERVER_NAME}.signing.key"
trusted_key_servers: []
federation_domain_whitelist: []
url_preview_enabled: false
suppress_key_server_warning: true
rc_message: {limit}
rc_registration: {limit}
rc_admin_redaction: {limit}
rc_login:
  address: {limit}
  account: {limit}
  failed_attempts: {limit}
"#
    )
}

/// Stops the Synapse this test process started once the process is gone. A
/// static is never dropped, so a small shell waits for our pid instead.
fn stop_when_tests_end(pid: u32, dir: &Path) {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(
            r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
               kill "$2" 2>/dev/null; sleep 2; kill -9 "$2" 2>/dev/null; rm -rf "$3""#,
        )
        .arg("sh")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("cannot arrange for Synapse to stop after the tests: {e}");
    }
}

fn start() -> Synapse {
    let py = python();
    let dir = tempfile::Builder::new()
        .prefix("invite-server-tests-synapse.")
        .tempdir()
        .expect("a directory for Synapse")
        .keep();
    let config = dir.join("homeserver.yaml");
    // Generated for its signing key and log configuration; the
    // configuration itself is then replaced by the test's own.
    let out = Command::new(&py)
        .args(["-m", "synapse.app.homeserver", "--generate-config"])
        .args(["--server-name", SERVER_NAME, "--report-stats=no"])
        .arg("--config-path")
        .arg(&config)
        .current_dir(&dir)
        .output()
        .expect("run synapse --generate-config");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let port = free_port();
    fs::write(&config, homeserver_yaml(&dir, port)).unwrap();
    let child = Command::new(&py)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(&config)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("stdout")).unwrap())
        .stderr(fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("start Synapse");
    stop_when_tests_end(child.id(), &dir);
    let url = format!("http://127.0.0.1:{port}");
    // Bounded: Synapse starts in seconds, slower on a busy machine.
    let up = (0..600).any(|_| {
        let ok = client()
            .get(format!("{url}/_matrix/client/versions"))
            .send()
            .is_ok_and(|r| r.status() == 200);
        if !ok {
            std::thread::sleep(Duration::from_millis(200));
        }
        ok
    });
    assert!(
        up,
        "Synapse did not answer within 120 s:\n{}",
        fs::read_to_string(dir.join("stderr")).unwrap_or_default()
    );
    fs::write(dir.join("shared_secret"), format!("{SHARED_SECRET}\n")).unwrap();
    // A server admin for the password and deactivation calls.
    register_in_synapse(&py, &url, "admin", ADMIN_PASSWORD, true);
    let res = synapse_login(&url, "admin", ADMIN_PASSWORD);
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    fs::write(dir.join("admin_token"), token).unwrap();
    Synapse {
        url,
        dir,
        _process: child,
    }
}

fn synapse() -> &'static Synapse {
    SYNAPSE.get_or_init(start)
}

/// Makes an account directly in Synapse with its own registration script.
fn register_in_synapse(py: &str, url: &str, name: &str, password: &str, admin: bool) {
    let out = Command::new(py)
        .args(["-m", "synapse._scripts.register_new_matrix_user"])
        .args(["-u", name, "-p", password, "-k", SHARED_SECRET])
        .arg(if admin { "--admin" } else { "--no-admin" })
        .arg(url)
        .output()
        .expect("run register_new_matrix_user");
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// `POST /_matrix/client/v3/login` with a password.
fn synapse_login(url: &str, name: &str, password: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{url}/_matrix/client/v3/login"))
        .json(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": password,
        }))
        .send()
        .unwrap()
}

/// Asserts that Synapse lets `name` in with `password` and gives a token.
fn assert_logs_into_synapse(url: &str, name: &str, password: &str) {
    let res = synapse_login(url, name, password);
    assert_eq!(res.status(), 200, "{name} could not log into Synapse");
    let body: Value = res.json().unwrap();
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(body["user_id"], format!("@{name}:{SERVER_NAME}"));
}

/// invite-server with one host provisioning into Synapse at `url`.
fn app_for(url: &str, dir: &Path, admin: bool) -> TestApp {
    let admin_line = if admin {
        format!(
            "admin_token_file = \"{}\"\n",
            dir.join("admin_token").display()
        )
    } else {
        String::new()
    };
    TestApp::spawn_with(&format!(
        r#"
[hosts."localhost"]
public_url = "http://127.0.0.1:{{port}}"
[hosts."localhost".provision]
kind = "synapse"
url = "{url}"
shared_secret_file = "{}"
server_name = "{SERVER_NAME}"
{admin_line}"#,
        dir.join("shared_secret").display()
    ))
}

fn uses_spent(app: &TestApp) -> u64 {
    probe::census(app).uses_spent
}

#[test]
fn registering_through_the_json_api_makes_an_account_that_logs_into_synapse() {
    let s = synapse();
    let app = app_for(&s.url, &s.dir, false);
    let res = accept_invite(&app, &token_of(&app.mint()), "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    assert_logs_into_synapse(&s.url, "alice", GOOD_PASSWORD);
    assert_eq!(
        synapse_login(&s.url, "alice", "not-the-password-at-all").status(),
        403,
        "a wrong password is refused"
    );
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(uses_spent(&app), 1);
    assert!(
        !app.log().contains(GOOD_PASSWORD),
        "the password was logged"
    );
    assert!(!app.log().contains(SHARED_SECRET), "the secret was logged");
}

#[test]
fn registering_through_the_page_makes_an_account_that_logs_into_synapse() {
    let s = synapse();
    let app = app_for(&s.url, &s.dir, false);
    let url = app.mint();
    let page = client().get(&url).send().unwrap();
    assert_eq!(page.status(), 200);
    let cookie = crate::helpers::set_cookie_value(&page, "invite_csrf").expect("no CSRF cookie");
    let field = crate::helpers::csrf_field(&page.text().unwrap());
    let res = client()
        .post(&url)
        .header(reqwest::header::COOKIE, format!("invite_csrf={cookie}"))
        .form(&[
            ("csrf", field.as_str()),
            ("name", "bob"),
            ("password", GOOD_PASSWORD),
            ("password2", GOOD_PASSWORD),
        ])
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(crate::helpers::set_cookie_value(&res, "identity").is_some());
    assert_logs_into_synapse(&s.url, "bob", GOOD_PASSWORD);
}

#[test]
fn a_name_synapse_already_holds_answers_409_and_leaves_the_invite_usable() {
    let s = synapse();
    register_in_synapse(&python(), &s.url, "carol", ADMIN_PASSWORD, false);
    let app = app_for(&s.url, &s.dir, false);
    let token = token_of(&app.mint());
    let res = accept_invite(&app, &token, "carol", GOOD_PASSWORD);
    assert_eq!(res.status(), 409);
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(uses_spent(&app), 0);
    // Synapse's own account is untouched.
    assert_logs_into_synapse(&s.url, "carol", ADMIN_PASSWORD);
    let res = accept_invite(&app, &token, "carol2", GOOD_PASSWORD);
    assert_eq!(res.status(), 204, "the invite stayed usable");
    assert_logs_into_synapse(&s.url, "carol2", GOOD_PASSWORD);
}

#[test]
fn synapse_down_answers_503_with_retry_after_and_leaves_the_invite_usable() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("shared_secret"), SHARED_SECRET).unwrap();
    // Nothing listens there.
    let down = format!("http://127.0.0.1:{}", free_port());
    let app = app_for(&down, dir.path(), false);
    let token = token_of(&app.mint());
    let res = accept_invite(&app, &token, "dave", GOOD_PASSWORD);
    assert_eq!(res.status(), 503);
    assert!(header(&res, "retry-after").is_some());
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(uses_spent(&app), 0);
    assert_eq!(
        probe::census(&app).reservations,
        0,
        "the reservation was given back"
    );
}

#[test]
fn accounts_passwd_and_delete_reach_synapse_with_the_admin_token() {
    let s = synapse();
    let app = app_for(&s.url, &s.dir, true);
    let res = accept_invite(&app, &token_of(&app.mint()), "erin", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let new_password = "an0ther-Long-passphrase-42";
    let out = app.cli_with_stdin(
        &[
            "accounts",
            "passwd",
            "localhost",
            "erin",
            "--password-stdin",
        ],
        Some(new_password),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_logs_into_synapse(&s.url, "erin", new_password);
    assert_eq!(synapse_login(&s.url, "erin", GOOD_PASSWORD).status(), 403);
    let out = app.cli(&["accounts", "delete", "localhost", "erin"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_ne!(
        synapse_login(&s.url, "erin", new_password).status(),
        200,
        "a deleted account is deactivated in Synapse"
    );
}

#[test]
fn without_an_admin_token_a_password_change_is_refused_and_changes_nothing() {
    let s = synapse();
    let app = app_for(&s.url, &s.dir, false);
    let res = accept_invite(&app, &token_of(&app.mint()), "frank", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let out = app.cli_with_stdin(
        &[
            "accounts",
            "passwd",
            "localhost",
            "frank",
            "--password-stdin",
        ],
        Some("an0ther-Long-passphrase-42"),
    );
    assert!(!out.status.success(), "a password change without a token");
    assert_logs_into_synapse(&s.url, "frank", GOOD_PASSWORD);
}
