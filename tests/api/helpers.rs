//! The test fixture: the real `invite-server` binary on a free loopback port
//! with its own temporary database and configuration, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

/// The built binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_invite-server");

/// A running server and the files it uses.
pub struct TestApp {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    /// Holds the database and config; removed on drop.
    pub dir: TempDir,
    /// The configuration file the server (and `cli`) use.
    pub config: PathBuf,
    /// The database file.
    pub db: PathBuf,
    child: Option<Child>,
    /// Kept so the server never blocks writing to a closed pipe.
    _stdout: Option<ChildStdout>,
    stderr_log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The default test configuration: host `localhost` whose public URL is the
/// server itself, plus `example.com` on https (for Secure cookies). `{port}` is
/// replaced with the port the server will listen on.
pub const DEFAULT_CONFIG: &str = r#"
invite_expiry = "7d"
[hosts."localhost"]
public_url = "http://127.0.0.1:{port}"
site_name = "Test Site"
after_registration_url = "http://127.0.0.1:{port}/health"
after_registration_text = "Open the chat and sign in."
[hosts."example.com"]
public_url = "https://example.com"
"#;

impl TestApp {
    /// Starts the server on the default test configuration.
    pub fn spawn() -> Self {
        Self::spawn_with(DEFAULT_CONFIG)
    }

    /// Starts the server on `config` (`{port}` is replaced).
    pub fn spawn_with(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("test.db");
        Self::spawn_in(dir, db, config)
    }

    /// Starts a server over an existing directory and database (restarts).
    pub fn spawn_in(dir: TempDir, db: PathBuf, config: &str) -> Self {
        let mut last_err = String::new();
        // The port is chosen before the server binds it; retry on the rare race.
        for _ in 0..5 {
            let port = free_port();
            let config_path = dir.path().join("config.toml");
            std::fs::write(&config_path, config.replace("{port}", &port.to_string()))
                .expect("write config");
            let stderr_log = dir.path().join(format!("server-{port}.log"));
            let mut child = Command::new(BIN)
                .args(["--config"])
                .arg(&config_path)
                .arg("--db")
                .arg(&db)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .env("RUST_LOG", "info")
                .env_remove("INVITE_SERVER_LISTEN")
                .env_remove("INVITE_SERVER_DATABASE")
                .env_remove("INVITE_SERVER_CONFIG")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr_log).expect("log file"))
                .spawn()
                .expect("spawn invite-server");
            let stdout = child.stdout.take().expect("stdout");
            match wait_listening(stdout) {
                Some(stdout) => {
                    return Self {
                        url: format!("http://127.0.0.1:{port}"),
                        port,
                        config: config_path,
                        db,
                        dir,
                        child: Some(child),
                        _stdout: Some(stdout),
                        stderr_log,
                    };
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                }
            }
        }
        panic!("invite-server did not start: {last_err}");
    }

    /// Runs an admin command against this server's config and database.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Runs an admin command with `stdin` piped in.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli_at(&self.config, &self.db, args, stdin)
    }

    /// Creates an API key for `host` and returns `<id>/<secret>`.
    pub fn create_key(&self, host: &str) -> String {
        let out = self.cli(&["keys", "create", host, "test key"]);
        assert!(out.status.success(), "keys create failed: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Mints one invite for `localhost` with a fresh key; returns the page URL.
    pub fn mint(&self) -> String {
        let key = self.create_key("localhost");
        let res = client()
            .get(format!("{}/invites_api?key={key}", self.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201);
        res.headers()["location"].to_str().unwrap().to_owned()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Kills the server with SIGKILL and waits for it; the files stay.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server and hands back its directory and database path.
    pub fn into_parts(mut self) -> (TempDir, PathBuf) {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.db.clone())
    }

    /// Opens the database read-only, to check what the server stored.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open test db")
    }

    /// Counts rows with a SQL query returning one integer.
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).expect(sql)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_listening(stdout: ChildStdout) -> Option<ChildStdout> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let ok = reader.read_line(&mut line).is_ok() && line.starts_with("listening on ");
        let _ = tx.send(if ok { Some(reader.into_inner()) } else { None });
    });
    rx.recv_timeout(Duration::from_secs(20)).ok().flatten()
}

/// Runs the binary with `--config` and `--db` and optional stdin. A command
/// that exits before reading its input (a refused host or name) is not a
/// failure of the test: the write's broken pipe is ignored.
pub fn cli_at(config: &Path, db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("INVITE_SERVER_LISTEN")
        .env_remove("INVITE_SERVER_DATABASE")
        .env_remove("INVITE_SERVER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cli");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("cli output")
}

/// A command's standard output as text.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// A command's standard error as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// Asserts that an admin command refused the undefined `host` the documented
/// way: Prosody's words, then the host as given (quoted when empty or holding
/// spaces) and the hosts of [`DEFAULT_CONFIG`].
pub fn assert_unknown_host_refused(out: &Output, args: &[&str], host: &str) {
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    let shown = if host.is_empty() || host.contains(' ') {
        format!("\"{host}\"")
    } else {
        host.to_owned()
    };
    assert_eq!(
        stderr_of(out),
        format!(
            "Error: please supply a valid host: {shown} is not served here \
             (configured: example.com, localhost)\n"
        ),
        "{args:?}"
    );
    assert_eq!(stdout_of(out), "", "{args:?}");
}

/// `GET /api/invite/{token}` as JSON.
pub fn describe_invite(app: &TestApp, token: &str) -> serde_json::Value {
    client()
        .get(format!("{}/api/invite/{token}", app.url))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// An HTTP client that does not follow redirects and keeps no cookies.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends raw bytes over TCP and returns the status code of the answer (0 when
/// the server closed the connection without an answer).
pub fn raw_request(port: u16, bytes: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ------------------------------------------------------------------------
// The receiving side (pages, JSON invitation API, sign-in), shared by the
// `pages`, `json_api`, `accounts_cli` and `browser` modules.

/// A password the policy accepts for any test account.
pub const GOOD_PASSWORD: &str = "tulip quarry lantern 92";

/// The invite token in a page URL: everything after the `?`.
pub fn token_of(page_url: &str) -> String {
    page_url
        .split_once('?')
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("no token in {page_url}"))
}

/// How the database keeps an invite token (docs/storage.md): the row id its
/// first 8 bytes carry, and SHA-256 of the 16 secret bytes after them.
/// Decoded here from the documented format, not with the server's own code.
pub fn stored_form(token: &str) -> (i64, Vec<u8>) {
    use base64::Engine;
    use sha2::Digest;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap_or_else(|e| panic!("token {token:?} is not base64url: {e}"));
    assert_eq!(
        bytes.len(),
        24,
        "token {token:?} is not 8 id bytes and 16 secret bytes"
    );
    let id = i64::from_be_bytes(bytes[..8].try_into().unwrap());
    (id, sha2::Sha256::digest(&bytes[8..]).to_vec())
}

/// The whole `Set-Cookie` line a response sets for cookie `name`, if any.
pub fn set_cookie_line(res: &reqwest::blocking::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of cookie `name` set by a response, if it sets one.
pub fn set_cookie_value(res: &reqwest::blocking::Response, name: &str) -> Option<String> {
    set_cookie_line(res, name).map(|line| {
        let pair = line.split(';').next().unwrap_or("");
        pair[name.len() + 1..].to_owned()
    })
}

/// `POST /api/invite/{token}` with a JSON name and password.
pub fn accept_invite(
    app: &TestApp,
    token: &str,
    name: &str,
    password: &str,
) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/api/invite/{token}", app.url))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .unwrap()
}

/// Mints an invite and accepts it as `name`; returns the identity cookie value.
pub fn register_account(app: &TestApp, name: &str) -> String {
    let res = accept_invite(app, &token_of(&app.mint()), name, GOOD_PASSWORD);
    assert_eq!(res.status(), 204, "registering {name} failed");
    set_cookie_value(&res, "identity").expect("no identity cookie")
}

/// `POST /api/auth/login` with a JSON name and password.
pub fn login(app: &TestApp, name: &str, password: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/api/auth/login", app.url))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .unwrap()
}

/// `GET /api/auth/check`, with the identity cookie when one is given.
pub fn auth_check(app: &TestApp, identity: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(format!("{}/api/auth/check", app.url));
    if let Some(token) = identity {
        req = req.header(reqwest::header::COOKIE, format!("identity={token}"));
    }
    req.send().unwrap()
}

/// `GET /api/auth/check` addressed (by its `Host` header) to `host`.
pub fn auth_check_on(app: &TestApp, host: &str, identity: &str) -> reqwest::blocking::Response {
    client()
        .get(format!("{}/api/auth/check", app.url))
        .header(reqwest::header::HOST, host)
        .header(reqwest::header::COOKIE, format!("identity={identity}"))
        .send()
        .unwrap()
}

/// `POST /api/auth/login` addressed (by its `Host` header) to `host`.
pub fn login_on(
    app: &TestApp,
    host: &str,
    name: &str,
    password: &str,
) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/api/auth/login", app.url))
        .header(reqwest::header::HOST, host)
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .unwrap()
}

/// Creates a key for `host` and mints one invite with it through
/// `/invites_api`; returns the key (`<id>/<secret>`) and the page URL.
pub fn mint_for(app: &TestApp, host: &str) -> (String, String) {
    let key = app.create_key(host);
    let res = client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201, "minting for {host} failed");
    let url = res.headers()["location"].to_str().unwrap().to_owned();
    (key, url)
}
