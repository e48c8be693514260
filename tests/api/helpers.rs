//! The test fixture: the real `invite-server` binary on a free loopback port
//! with its own temporary database and configuration, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    /// The database: a SQLite file, or (with [`POSTGRES_ENV`]) the URL of
    /// this app's own PostgreSQL database, carried as a path so that every
    /// helper passes it to `--db` alike.
    pub db: PathBuf,
    /// Whether dropping this app drops its PostgreSQL database (not after
    /// [`TestApp::into_parts`], whose caller goes on with it).
    owns_database: bool,
    child: Option<Child>,
    /// Kept so the server never blocks writing to a closed pipe.
    _stdout: Option<ChildStdout>,
    stderr_log: PathBuf,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
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

/// The variable that selects PostgreSQL for the black-box tests: a base URL
/// of a role that may CREATE DATABASE, e.g.
/// `postgres://postgres@127.0.0.1:55432/postgres`. Unset: SQLite files.
pub const POSTGRES_ENV: &str = "INVITE_SERVER_TEST_POSTGRES";

/// The PostgreSQL base URL the tests run against, if one is selected.
pub fn postgres_base() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|s| !s.is_empty())
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// A new, empty database for one test: `test.db` in `dir`, or, when
/// [`POSTGRES_ENV`] is set, a PostgreSQL database made for it.
pub fn fresh_db(dir: &Path) -> PathBuf {
    match postgres_base() {
        Some(base) => PathBuf::from(create_postgres_database(&base)),
        None => dir.join("test.db"),
    }
}

/// Runs one statement on the database at `url` (the test's own tool, not
/// the server's): creating and dropping the tests' databases.
fn postgres_admin(url: &str, sql: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let connection = tokio::spawn(connection);
        let done = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = connection.await;
        done
    })
}

/// Everything the store holds, as bytes to search for secrets: on SQLite
/// every byte of the database file, its WAL and its shared memory (freed
/// pages included); on PostgreSQL a plain `pg_dump` of the database (what
/// its rows hold, which is what a copy or a backup of it would leak).
pub fn stored_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    if is_postgres(db) {
        let out = Command::new("pg_dump")
            .args(["--no-owner", "--data-only"])
            .arg(db)
            .output()
            .expect("run pg_dump (Debian's postgresql-client)");
        assert!(out.status.success(), "pg_dump failed: {out:?}");
        all = out.stdout;
    } else {
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", db.display());
            if let Ok(bytes) = std::fs::read(&path) {
                all.extend(bytes);
            }
        }
    }
    assert!(!all.is_empty(), "nothing stored at {}", db.display());
    all
}

/// Runs one statement on `db` from outside the server: `sqlite` on a SQLite
/// file, `postgres` on a PostgreSQL database. Only to set up what no
/// command or request can (say, a lease that has already run out), never
/// to check a result: results are read through [`crate::probe`].
pub fn execute_sql(db: &Path, sqlite: &str, postgres: &str) {
    if is_postgres(db) {
        postgres_admin(&db.to_string_lossy(), postgres)
            .unwrap_or_else(|e| panic!("{postgres}: {e}"));
    } else {
        let conn = rusqlite::Connection::open(db).expect("open the test database");
        conn.busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        conn.execute_batch(sqlite)
            .unwrap_or_else(|e| panic!("{sqlite}: {e}"));
    }
}

/// Creates `t_<random>` on the server of `base` and returns its URL.
pub fn create_postgres_database(base: &str) -> String {
    let name = format!("t_{:016x}", rand::random::<u64>());
    postgres_admin(base, &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("cannot create a test database on {POSTGRES_ENV}: {e}"));
    let mut url = url::Url::parse(base).expect("INVITE_SERVER_TEST_POSTGRES is a URL");
    url.set_path(&name);
    url.to_string()
}

/// The PostgreSQL databases a live [`TestApp`] owns (drops when it drops).
static OWNED_DATABASES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Makes `db` owned by the app about to start, unless a live app owns it.
fn claim_database(db: &Path) -> bool {
    let mut owned = OWNED_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if owned.iter().any(|o| o == db) {
        return false;
    }
    owned.push(db.to_owned());
    true
}

/// Gives up the ownership [`claim_database`] took.
fn release_database(db: &Path) {
    let mut owned = OWNED_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    owned.retain(|o| o != db);
}

/// Drops a database [`fresh_db`] made that no [`TestApp`] took over; a
/// SQLite file goes with its directory.
pub fn drop_database(db: &Path) {
    if is_postgres(db) {
        drop_postgres_database(&db.to_string_lossy());
    }
}

/// Drops the test database at `url`, closing the connections still on it
/// (a killed server's, which PostgreSQL may not have noticed yet).
fn drop_postgres_database(url: &str) {
    let (Some(base), Ok(parsed)) = (postgres_base(), url::Url::parse(url)) else {
        return;
    };
    let name = parsed.path().trim_start_matches('/');
    if name.starts_with("t_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let _ = postgres_admin(
            &base,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
    }
}

impl TestApp {
    /// Starts the server on the default test configuration.
    pub fn spawn() -> Self {
        Self::spawn_with(DEFAULT_CONFIG)
    }

    /// Starts the server on `config` (`{port}` is replaced), over a new
    /// database of the backend the tests run on (see [`POSTGRES_ENV`]).
    pub fn spawn_with(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fresh_db(dir.path());
        Self::spawn_in(dir, db, config)
    }

    /// Starts the server on the default configuration over a SQLite file
    /// whatever the backend the tests run on: for tests of SQLite itself
    /// (file modes, deleted or replaced files, backup, old files).
    pub fn spawn_sqlite() -> Self {
        Self::spawn_sqlite_with(DEFAULT_CONFIG)
    }

    /// [`TestApp::spawn_sqlite`] on `config`.
    pub fn spawn_sqlite_with(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("test.db");
        Self::spawn_in(dir, db, config)
    }

    /// The database location as `--db` takes it: a file path or a URL.
    pub fn database(&self) -> String {
        self.db.to_string_lossy().into_owned()
    }

    /// Starts a server over an existing directory and database (restarts).
    pub fn spawn_in(dir: TempDir, db: PathBuf, config: &str) -> Self {
        Self::spawn_listening(dir, db, config, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts a server listening on `ip` (`::1`, or `::` for IPv6 and IPv4
    /// at once); `url` reaches it over the loopback of the same family.
    pub fn spawn_listening(dir: TempDir, db: PathBuf, config: &str, ip: IpAddr) -> Self {
        let reach = match ip {
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            other => other,
        };
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
                .args(["serve", "--listen", &SocketAddr::new(ip, port).to_string()])
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
                        url: format!("http://{}", SocketAddr::new(reach, port)),
                        port,
                        config: config_path,
                        // A restart over a PostgreSQL database takes it
                        // over; a second node on a live app's does not.
                        owns_database: is_postgres(&db) && claim_database(&db),
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

    /// Another node beside this server: a second server process on the same
    /// database, with the same configuration (so the same public URL, as
    /// behind a load balancer) but a directory, port and log of its own.
    pub fn spawn_node(&self) -> Self {
        let config = std::fs::read_to_string(&self.config).expect("read the first node's config");
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_in(dir, self.db.clone(), &config)
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

    /// The server's process id (to look at it in /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server was killed").id()
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

    /// Sends SIGTERM and waits (at most `within`) for the server to exit;
    /// its exit status, or `None` if it was still running (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Stops the server and hands back its directory and database path.
    pub fn into_parts(mut self) -> (TempDir, PathBuf) {
        self.kill();
        if std::mem::take(&mut self.owns_database) {
            release_database(&self.db);
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.db.clone())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
        if self.owns_database {
            release_database(&self.db);
            drop_postgres_database(&self.database());
        }
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

/// A header of an answer, as text, if it has one.
pub fn header(res: &reqwest::blocking::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// An HTTP client that does not follow redirects and keeps no cookies.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends raw bytes to the server on `port` and returns the final answer's
/// status (0 when the connection ended without one) and its head and body.
pub fn raw_request(port: u16, bytes: &[u8]) -> (u16, String) {
    let answer = exchange(port, bytes, false);
    (
        answer.status,
        format!("{}\r\n\r\n{}", answer.head, answer.body),
    )
}

/// How long one raw exchange may take before it counts as a hang.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(20);

/// The final answer to a raw request (interim `1xx` answers skipped).
#[derive(Debug)]
pub struct Answer {
    /// 0 when the connection ended without a complete answer.
    pub status: u16,
    pub head: String,
    pub body: String,
    pub elapsed: Duration,
}

/// Parses the first final answer in `buf`, once it is complete.
fn parse_answer(mut buf: &[u8]) -> Option<(u16, String, String)> {
    loop {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        let rest = &buf[end + 4..];
        if (100..200).contains(&status) {
            buf = rest;
            continue;
        }
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if rest.len() < length {
            return None;
        }
        let body = String::from_utf8_lossy(&rest[..length]).into_owned();
        return Some((status, head, body));
    }
}

/// Sends `request` on a fresh loopback connection and reads the answer,
/// stopping as soon as it is complete (actix may keep a connection open after
/// answering), at EOF, or after [`EXCHANGE_LIMIT`].
pub fn exchange(port: u16, request: &[u8], half_close: bool) -> Answer {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_write_timeout(Some(EXCHANGE_LIMIT)).unwrap();
    // The server may answer and close before reading everything (431, 413).
    let _ = stream.write_all(request);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let parsed = loop {
        if let Some(answer) = parse_answer(&buf) {
            break Some(answer);
        }
        let left = EXCHANGE_LIMIT.saturating_sub(start.elapsed());
        if left.is_zero() {
            break None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break parse_answer(&buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let (status, head, body) =
        parsed.unwrap_or_else(|| (0, String::from_utf8_lossy(&buf).into_owned(), String::new()));
    Answer {
        status,
        head,
        body,
        elapsed: start.elapsed(),
    }
}

/// `METHOD target HTTP/1.1` with Host, `Connection: close`, `headers` and `body`
/// (no Content-Length is added: the caller says how the body is framed).
pub fn request(method: &str, target: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} ").into_bytes();
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

pub fn get(target: &[u8], headers: &[&[u8]]) -> Vec<u8> {
    request("GET", target, headers, b"")
}

/// A POST whose Content-Length matches `body`.
pub fn post(target: &[u8], content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let length = format!("Content-Length: {}", body.len());
    let ct = content_type.map(|c| format!("Content-Type: {c}"));
    let mut headers: Vec<&[u8]> = vec![length.as_bytes()];
    if let Some(ct) = &ct {
        headers.push(ct.as_bytes());
    }
    request("POST", target, &headers, body)
}

pub fn json(target: &[u8], body: &[u8]) -> Vec<u8> {
    post(target, Some("application/json"), body)
}

pub fn chunked(target: &[u8], content_type: &str, framed_body: &[u8]) -> Vec<u8> {
    let ct = format!("Content-Type: {content_type}");
    request(
        "POST",
        target,
        &[ct.as_bytes(), b"Transfer-Encoding: chunked"],
        framed_body,
    )
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

/// The value of a landing page's hidden `csrf` field (what the server signed
/// for this invite and the browser's CSRF cookie).
pub fn csrf_field(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).expect("no csrf field") + marker.len();
    let len = html[at..].find('"').expect("an unterminated csrf field");
    html[at..at + len].to_owned()
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

/// `POST path` with a JSON name and password, addressed (by its `Host`
/// header) to `host` when one is given.
fn post_credentials(
    app: &TestApp,
    host: Option<&str>,
    path: &str,
    name: &str,
    password: &str,
) -> reqwest::blocking::Response {
    let mut req = client()
        .post(format!("{}{path}", app.url))
        .json(&serde_json::json!({ "name": name, "password": password }));
    if let Some(h) = host {
        req = req.header(reqwest::header::HOST, h);
    }
    req.send().unwrap()
}

/// `POST /api/invite/{token}` with a JSON name and password.
pub fn accept_invite(
    app: &TestApp,
    token: &str,
    name: &str,
    password: &str,
) -> reqwest::blocking::Response {
    post_credentials(app, None, &format!("/api/invite/{token}"), name, password)
}

/// `POST /api/invite/{token}` addressed (by its `Host` header) to `host`.
pub fn accept_invite_on(
    app: &TestApp,
    host: &str,
    token: &str,
    name: &str,
    password: &str,
) -> reqwest::blocking::Response {
    let path = format!("/api/invite/{token}");
    post_credentials(app, Some(host), &path, name, password)
}

/// Mints an invite and accepts it as `name`; returns the identity cookie value.
pub fn register_account(app: &TestApp, name: &str) -> String {
    let res = accept_invite(app, &token_of(&app.mint()), name, GOOD_PASSWORD);
    assert_eq!(res.status(), 204, "registering {name} failed");
    set_cookie_value(&res, "identity").expect("no identity cookie")
}

/// `POST /api/auth/login` with a JSON name and password.
pub fn login(app: &TestApp, name: &str, password: &str) -> reqwest::blocking::Response {
    post_credentials(app, None, "/api/auth/login", name, password)
}

/// `GET /api/auth/check`, with the identity cookie when one is given.
pub fn auth_check(app: &TestApp, identity: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(format!("{}/api/auth/check", app.url));
    if let Some(token) = identity {
        req = req.header(reqwest::header::COOKIE, format!("identity={token}"));
    }
    req.send().unwrap()
}

/// `GET /api/auth/check` addressed (by its `Host` header) to `host`. The
/// cookie goes under both names: the server reads the one its host uses
/// (`__Host-identity` on https hosts, `identity` on http ones).
pub fn auth_check_on(app: &TestApp, host: &str, identity: &str) -> reqwest::blocking::Response {
    client()
        .get(format!("{}/api/auth/check", app.url))
        .header(reqwest::header::HOST, host)
        .header(
            reqwest::header::COOKIE,
            format!("identity={identity}; __Host-identity={identity}"),
        )
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
    post_credentials(app, Some(host), "/api/auth/login", name, password)
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
