//! Configuration: errors that stop startup, environment overrides and flags,
//! and the per-host settings that show up in minted invites.

use std::io::Read;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::helpers::{self, client, free_port, TestApp};
use crate::probe;

const ENV_VARS: [&str; 3] = [
    "INVITE_SERVER_LISTEN",
    "INVITE_SERVER_DATABASE",
    "INVITE_SERVER_CONFIG",
];

/// The binary with none of our variables inherited from the test's environment.
pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(helpers::BIN);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Runs a command that must finish by itself within 20 seconds. Its output
/// is read while it runs: a child writing more than a pipe holds (the bash
/// completions are over 64 KiB) would otherwise wait for a reader forever.
pub(crate) fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn invite-server");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit; it wrote: {}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("read stdout"),
        stderr: stderr.join().expect("read stderr"),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Three distinct free ports (held together while chosen, so they differ).
fn three_free_ports() -> (u16, u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("no free loopback port");
    let held = [bind(), bind(), bind()];
    let port = |i: usize| held[i].local_addr().unwrap().port();
    (port(0), port(1), port(2))
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// How many keys the SQLite file at `db` holds (0 when there is none). These
/// tests are about which file a path in the flag, the environment or the
/// configuration selects, so they read the files themselves on purpose.
fn key_rows(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get(0))
        .unwrap()
}

/// A `serve` process, killed on drop.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (a `serve` command) and waits for its `listening on` line.
fn serve(mut cmd: Command) -> Served {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("serve did not start");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Served { child, addr },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line from serve: {line:?}");
        }
    }
}

fn health_at(port: u16) -> u16 {
    client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn nothing_listens_on(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_err()
}

// ---------------------------------------------------------------- bad files

/// Checks that a bad config file stops `keys list` and `serve` with exit 1 and
/// a message naming the file, the line and the key.
fn assert_rejected(text: &str, line: usize, key: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "bad.toml", text);
    let db = dir.path().join("test.db");
    let port = free_port();
    let commands: [&[&str]; 3] = [
        &["keys", "list", "localhost"],
        &["keys", "create", "localhost"],
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
    ];
    for args in commands {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&path)
            .arg("--db")
            .arg(&db)
            .args(args);
        let out = run(cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?} on {text:?}: {err}");
        let want = format!("{}, line {line}, key `{key}`", path.display());
        assert!(err.starts_with("Error: "), "{err}");
        assert!(err.contains(&want), "{args:?}: {err:?} lacks {want:?}");
        assert!(err.contains(says), "{args:?}: {err:?} lacks {says:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    assert!(nothing_listens_on(port), "serve started on a bad config");
    assert_eq!(key_rows(&db), 0, "nothing was written");
}

#[test]
fn a_config_file_with_bad_syntax_stops_startup_naming_file_line_and_key() {
    assert_rejected(
        "listen = \"127.0.0.1:1\"\ninvite_expiry = 7d\n",
        2,
        "invite_expiry",
        "",
    );
    assert_rejected(
        "invite_expiry = \"7d\"\n\n[hosts.\"localhost\"\npublic_url = \"http://x\"\n",
        3,
        "hosts.\"localhost\"",
        "",
    );
    assert_rejected(
        "[hosts.\"localhost\"]\npublic_url = \"http://localhost\n",
        2,
        "public_url",
        "",
    );
}

#[test]
fn an_unknown_key_stops_startup_naming_file_line_and_key() {
    assert_rejected(
        "listen = \"127.0.0.1:1\"\n# a comment\nbogus = 1\n",
        3,
        "bogus",
        "unknown field",
    );
    assert_rejected(
        "[hosts.\"localhost\"]\npublic_url = \"http://localhost\"\nfrob = \"x\"\n",
        3,
        "frob",
        "unknown field",
    );
}

#[test]
fn a_bad_duration_stops_startup_naming_file_line_and_key() {
    assert_rejected("invite_expiry = \"7x\"\n", 1, "invite_expiry", "7x");
    assert_rejected(
        "listen = \"127.0.0.1:1\"\n\n[hosts.\"localhost\"]\npublic_url = \"http://localhost\"\ninvite_expiry = \"7x\"\n",
        5,
        "invite_expiry",
        "7x",
    );
    assert_rejected("invite_expiry = \"0d\"\n", 1, "invite_expiry", "0d");
    assert_rejected("invite_expiry = 7\n", 1, "invite_expiry", "");
}

#[test]
fn a_public_url_without_scheme_stops_startup_naming_file_line_and_key() {
    for url in [
        "example.com",
        "localhost:5280",
        "ftp://example.com",
        "//example.com",
    ] {
        assert_rejected(
            &format!("invite_expiry = \"7d\"\n[hosts.\"localhost\"]\npublic_url = \"{url}\"\n"),
            3,
            "public_url",
            url,
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(&path)
        .arg("--db")
        .arg(dir.path().join("t.db"))
        .args(["keys", "list", "localhost"]);
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    // The OS's reason, said once.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

// ---------------------------------------------------------------- env and flags

#[test]
fn invite_server_config_names_the_file_and_config_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = write(
        &dir,
        "env.toml",
        "[hosts.\"env.example\"]\npublic_url = \"https://env.example\"\n",
    );
    let from_flag = write(
        &dir,
        "flag.toml",
        "[hosts.\"flag.example\"]\npublic_url = \"https://flag.example\"\n",
    );
    let db = dir.path().join("t.db");
    let keys_create = |host: &str, flag: bool| {
        let mut cmd = bin();
        cmd.env("INVITE_SERVER_CONFIG", &from_env);
        if flag {
            cmd.arg("--config").arg(&from_flag);
        }
        cmd.arg("--db").arg(&db).args(["keys", "create", host]);
        run(cmd)
    };
    let out = keys_create("env.example", false);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The file's [hosts] replace the defaults: localhost is no longer served.
    let out = keys_create("localhost", false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The flag wins over the variable.
    let out = keys_create("flag.example", true);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = keys_create("env.example", true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr(&out),
        "Error: please supply a valid host: env.example is not served here (configured: flag.example)\n"
    );
    assert_eq!(key_rows(&db), 2);
}

#[test]
fn invite_server_database_names_the_store_and_db_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let in_file = dir.path().join("from-file.db");
    let in_env = dir.path().join("from-env.db");
    let in_flag = dir.path().join("from-flag.db");
    let config = write(
        &dir,
        "c.toml",
        &format!(
            "database = \"{}\"\n[hosts.\"localhost\"]\npublic_url = \"http://localhost\"\n",
            in_file.display()
        ),
    );
    let keys_create = |env: bool, flag: bool| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&config);
        if env {
            cmd.env("INVITE_SERVER_DATABASE", &in_env);
        }
        if flag {
            cmd.arg("--db").arg(&in_flag);
        }
        cmd.args(["keys", "create", "localhost"]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    };
    keys_create(false, false);
    assert_eq!(
        (key_rows(&in_file), key_rows(&in_env), key_rows(&in_flag)),
        (1, 0, 0),
        "the config file's database is used"
    );
    keys_create(true, false);
    assert_eq!(
        (key_rows(&in_file), key_rows(&in_env), key_rows(&in_flag)),
        (1, 1, 0),
        "the variable wins over the file"
    );
    keys_create(true, true);
    assert_eq!(
        (key_rows(&in_file), key_rows(&in_env), key_rows(&in_flag)),
        (1, 1, 1),
        "the flag wins over the variable"
    );
}

#[test]
fn invite_server_listen_sets_the_address_and_listen_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (p_file, p_env, p_flag) = three_free_ports();
    let config = write(
        &dir,
        "c.toml",
        &format!(
            "listen = \"127.0.0.1:{p_file}\"\n[hosts.\"localhost\"]\npublic_url = \"http://localhost\"\n"
        ),
    );
    let db = dir.path().join("t.db");
    let start = |env: bool, flag: bool| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&config).arg("--db").arg(&db);
        if env {
            cmd.env("INVITE_SERVER_LISTEN", format!("127.0.0.1:{p_env}"));
        }
        cmd.arg("serve");
        if flag {
            cmd.args(["--listen", &format!("127.0.0.1:{p_flag}")]);
        }
        serve(cmd)
    };

    let s = start(false, false);
    assert_eq!(s.addr.port(), p_file, "the config file's listen is used");
    assert_eq!(health_at(p_file), 200);
    drop(s);

    let s = start(true, false);
    assert_eq!(s.addr.port(), p_env, "the variable wins over the file");
    assert_eq!(health_at(p_env), 200);
    assert!(nothing_listens_on(p_file));
    drop(s);

    let s = start(true, true);
    assert_eq!(s.addr.port(), p_flag, "the flag wins over the variable");
    assert_eq!(health_at(p_flag), 200);
    assert!(nothing_listens_on(p_env));
    assert!(nothing_listens_on(p_file));
    drop(s);
}

#[test]
fn all_three_variables_together_configure_a_working_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("env.db");
    let config = write(
        &dir,
        "c.toml",
        &format!("[hosts.\"localhost\"]\npublic_url = \"http://127.0.0.1:{port}\"\n"),
    );
    let with_env = |cmd: &mut Command| {
        cmd.env("INVITE_SERVER_CONFIG", &config)
            .env("INVITE_SERVER_DATABASE", &db)
            .env("INVITE_SERVER_LISTEN", format!("127.0.0.1:{port}"));
    };
    let mut cmd = bin();
    with_env(&mut cmd);
    cmd.arg("serve");
    let _server = serve(cmd);

    let mut cmd = bin();
    with_env(&mut cmd);
    cmd.args(["keys", "create", "localhost"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let res = client()
        .get(format!("http://127.0.0.1:{port}/invites_api?key={key}"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("http://127.0.0.1:{port}/invite?")),
        "{location}"
    );
    // In the file the variable named (see `key_rows`).
    let invites: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM invites", [], |r| r.get(0))
        .unwrap();
    assert_eq!(invites, 1);
}

#[test]
fn without_a_config_file_the_built_in_defaults_serve_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut cmd = bin();
    cmd.current_dir(dir.path())
        .arg("--db")
        .arg(&db)
        .args(["keys", "create", "localhost"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut cmd = bin();
    cmd.current_dir(dir.path())
        .arg("--db")
        .arg(&db)
        .args(["keys", "create", "example.com"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(key_rows(&db), 1);

    // And the default database is `invite-server.db` in the working directory.
    let mut cmd = bin();
    cmd.current_dir(dir.path())
        .args(["keys", "create", "localhost"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(key_rows(&dir.path().join("invite-server.db")), 1);
}

// ---------------------------------------------------------------- host settings

const MICROS_PER_SEC: i64 = 1_000_000;

#[test]
fn invite_page_and_per_host_invite_expiry_show_up_in_location_and_store() {
    let app = TestApp::spawn_with(
        r#"
invite_expiry = "2h"
[hosts."localhost"]
public_url = "http://127.0.0.1:{port}"
invite_page = "{public_url}/welcome/{host}?t={token}"
[hosts."s.test"]
public_url = "https://s.test/base/"
invite_expiry = "90s"
[hosts."m.test"]
public_url = "https://m.test"
invite_expiry = "15m"
[hosts."d.test"]
public_url = "https://d.test"
invite_expiry = "3d"
invite_page = "https://join.example/{host}/{token}"
[hosts."w.test"]
public_url = "https://w.test"
invite_expiry = "2w"
"#,
    );
    let cases: [(&str, String, i64); 5] = [
        (
            "localhost",
            format!("{}/welcome/localhost?t=", app.url),
            2 * 3600,
        ),
        ("s.test", "https://s.test/base/invite?".into(), 90),
        ("m.test", "https://m.test/invite?".into(), 15 * 60),
        ("d.test", "https://join.example/d.test/".into(), 3 * 86_400),
        ("w.test", "https://w.test/invite?".into(), 14 * 86_400),
    ];
    for (host, prefix, expiry_secs) in cases {
        let key = app.create_key(host);
        let before = chrono::Utc::now().timestamp_micros();
        let res = client()
            .get(format!("{}/invites_api?key={key}", app.url))
            .send()
            .unwrap();
        let after = chrono::Utc::now().timestamp_micros();
        assert_eq!(res.status(), 201, "{host}");
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let token = location
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{host}: {location:?} does not start with {prefix:?}"));
        assert!(token.len() >= 24, "{host}: {token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{host}: {token}"
        );

        let invite = probe::invite(&app, token).expect("the invite is stored");
        assert_eq!(invite.host.as_str(), host);
        let created = invite.created_at.timestamp_micros();
        let expires = invite.expires_at.timestamp_micros();
        assert!(
            (before - MICROS_PER_SEC..=after + MICROS_PER_SEC).contains(&created),
            "{host}: created_at {created} is not microseconds since the epoch near {before}"
        );
        assert_eq!(
            expires - created,
            expiry_secs * MICROS_PER_SEC,
            "{host}: expires_at - created_at"
        );
    }
    assert_eq!(probe::invites(&app), 5);
}

// ---------------------------------------------------------------- the built-in host

/// `keys create localhost` against `db`, with no configuration file.
fn key_without_config(db: &Path) -> String {
    let mut cmd = bin();
    cmd.arg("--db")
        .arg(db)
        .args(["keys", "create", "localhost"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn without_configured_hosts_links_name_the_address_serve_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let key = key_without_config(&db);
    let port = free_port();
    for listen in [format!("127.0.0.1:{port}"), "127.0.0.1:0".to_owned()] {
        let mut cmd = bin();
        cmd.current_dir(dir.path())
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", &listen]);
        let server = serve(cmd);
        if listen.ends_with(":0") {
            assert_ne!(server.addr.port(), 0, "{listen}");
        } else {
            assert_eq!(server.addr.port(), port, "{listen}");
        }
        let res = client()
            .get(format!("http://{}/invites_api?key={key}", server.addr))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201, "{listen}");
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let want = format!("http://{}/invite?", server.addr);
        assert!(
            location.starts_with(&want),
            "{listen}: {location} is not on {want}"
        );
        // The link leads to this server's page.
        let page = client().get(&location).send().unwrap();
        assert_eq!(page.status(), 200, "{listen}: {location}");
    }
}

#[test]
fn without_configured_hosts_invites_create_prints_links_on_the_configured_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let cases = [
        (None, "http://127.0.0.1:5280/invite?"),
        (Some("127.0.0.1:18914"), "http://127.0.0.1:18914/invite?"),
        (Some("0.0.0.0:18914"), "http://localhost:18914/invite?"),
        (Some("[::]:18914"), "http://localhost:18914/invite?"),
        (Some("[::1]:18914"), "http://[::1]:18914/invite?"),
    ];
    for (listen, want) in cases {
        let mut cmd = bin();
        if let Some(listen) = listen {
            let config = write(&dir, "c.toml", &format!("listen = \"{listen}\"\n"));
            cmd.arg("--config").arg(config);
        }
        // `--listen` and INVITE_SERVER_LISTEN belong to `serve` alone.
        cmd.env("INVITE_SERVER_LISTEN", "127.0.0.1:1")
            .arg("--db")
            .arg(&db)
            .args(["invites", "create", "localhost"]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{listen:?}: {out:?}");
        let link = String::from_utf8(out.stdout).unwrap();
        assert!(
            link.starts_with(want),
            "{listen:?}: {link} is not on {want}"
        );
    }
}

// ---------------------------------------------------------------- host tables

#[test]
fn an_empty_hosts_table_stops_startup_naming_file_line_and_key() {
    assert_rejected(
        "invite_expiry = \"7d\"\n[hosts]\n",
        2,
        "hosts",
        "names no host",
    );
    assert_rejected(
        "invite_expiry = \"7d\"\nhosts = {}\n",
        2,
        "hosts",
        "names no host",
    );
}

#[test]
fn hosts_sharing_an_address_stop_startup_naming_file_line_and_key() {
    // Same host name, whatever the scheme, port, path, case or trailing dot.
    for (first, second) in [
        ("https://chat.test", "https://chat.test"),
        ("https://chat.test/a", "https://chat.test/b"),
        ("http://chat.test", "https://Chat.Test:443/"),
        ("https://chat.test:8443", "https://chat.test.:8443/x"),
        ("http://127.0.0.1:5280", "http://127.0.0.1:5280/other"),
        ("https://chat.test:8443", "https://chat.test:9443"),
    ] {
        assert_rejected(
            &format!(
                "[hosts.\"localhost\"]\npublic_url = \"{first}\"\n\n[hosts.\"other.test\"]\npublic_url = \"{second}\"\n"
            ),
            5,
            "public_url",
            "same host name",
        );
    }
}

#[test]
fn a_public_url_on_another_hosts_name_stops_startup_naming_file_line_and_key() {
    for url in [
        "https://other.test",
        "https://other.test:8443",
        "http://OTHER.test./x",
    ] {
        assert_rejected(
            &format!(
                "[hosts.\"other.test\"]\npublic_url = \"https://other.test\"\n[hosts.\"localhost\"]\npublic_url = \"{url}\"\n"
            ),
            4,
            "public_url",
            "the name of another configured host",
        );
    }
}

#[test]
fn a_public_url_with_user_info_stops_startup_without_repeating_it() {
    for url in [
        "https://user:s3cret@chat.test",
        "https://user@chat.test",
        "http://:s3cret@127.0.0.1:5280",
    ] {
        let text = format!("[hosts.\"localhost\"]\npublic_url = \"{url}\"\n");
        assert_rejected(&text, 2, "public_url", "user name or password");
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(write(&dir, "c.toml", &text))
            .arg("--db")
            .arg(dir.path().join("t.db"))
            .args(["keys", "list", "localhost"]);
        let err = stderr(&run(cmd));
        assert!(!err.contains("s3cret") && !err.contains("user@"), "{err}");
    }
}

// ---------------------------------------------------------------- trusted_proxies

#[test]
fn trusted_proxies_are_accepted_and_a_bad_entry_stops_startup_naming_file_line_and_key() {
    let app = TestApp::spawn_with(
        "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\", \"2001:db8::/32\"]\n[hosts.\"localhost\"]\npublic_url = \"http://127.0.0.1:{port}\"\n",
    );
    assert_eq!(health_at(app.port), 200);
    for (entry, says) in [
        ("10.0.0.300", "write an IP address or a network"),
        ("10.0.0.0/33", "write an IP address or a network"),
        ("proxy.example", "write an IP address or a network"),
        ("10.0.0.1/8", "write \"10.0.0.0/8\""),
    ] {
        assert_rejected(
            &format!("invite_expiry = \"7d\"\ntrusted_proxies = [\"::1\", \"{entry}\"]\n"),
            2,
            "trusted_proxies",
            says,
        );
    }
    assert_rejected("trusted_proxies = \"10.0.0.1\"\n", 1, "trusted_proxies", "");
}

// ---------------------------------------------------------------- max_connections

#[test]
fn a_bad_max_connections_stops_startup_naming_file_line_and_key() {
    for bad in ["0", "-1", "1000001", "\"64\""] {
        assert_rejected(
            &format!("invite_expiry = \"7d\"\nmax_connections = {bad}\n"),
            2,
            "max_connections",
            "",
        );
    }
}

/// The server's open file descriptors.
fn open_fds(app: &TestApp) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", app.pid()))
        .expect("/proc/PID/fd of the server")
        .count()
}

#[test]
fn idle_connections_past_max_connections_wait_without_holding_descriptors() {
    const LIMIT: usize = 32;
    // Fewer than the listen queue holds (128), so every connect completes at
    // once; far more than LIMIT.
    const IDLE: usize = 120;
    // Descriptors the server may open besides connections meanwhile.
    const SLACK: usize = 16;
    let app = TestApp::spawn_with(&format!(
        "max_connections = {LIMIT}\n[hosts.\"localhost\"]\npublic_url = \"http://127.0.0.1:{{port}}\"\n"
    ));
    let before = open_fds(&app);
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port));
    let idle: Vec<TcpStream> = (0..IDLE)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() > LIMIT + SLACK, "only {} connected", idle.len());

    // Wait (bounded) until the server holds as many as it may, then watch a
    // while longer that it takes no more.
    let mut most = before;
    for _ in 0..200 {
        most = most.max(open_fds(&app));
        if most >= before + LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most >= before + LIMIT / 2,
        "the server took hardly any connection: {before} -> {most} descriptors"
    );
    for _ in 0..20 {
        most = most.max(open_fds(&app));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most <= before + LIMIT + SLACK,
        "{} idle connections took the server from {before} to {most} descriptors",
        idle.len()
    );

    // Once they are gone, the server answers again.
    drop(idle);
    assert_eq!(health_at(app.port), 200);
    // The server gives each socket back when it reads the close, which may
    // lag the client's drop on a busy machine: wait for it, bounded.
    let mut now = open_fds(&app);
    for _ in 0..200 {
        if now <= before + SLACK {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        now = open_fds(&app);
    }
    assert!(
        now <= before + SLACK,
        "descriptors were not given back: {before} -> {now}"
    );
}
