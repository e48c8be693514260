//! Forward auth through a real nginx, configured with the very server block
//! docs/reverse-proxy.md gives operators (read from the doc between its
//! markers, only addresses and ports changed), in front of a tiny app that
//! shows the user header it received; walked in headless Chromium.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use tempfile::TempDir;

use crate::browser::{fill, kill_group, runtime, submit, ChromeDriver};
use crate::helpers::{client, free_port, header, register_account, TestApp, GOOD_PASSWORD};

const NGINX: &str = "/usr/sbin/nginx";
const INSTALL: &str = "apt-get install nginx-light";
const BEGIN: &str = "<!-- nginx-forward-auth:begin -->";
const END: &str = "<!-- nginx-forward-auth:end -->";

/// The forward-auth server block of docs/reverse-proxy.md, with the TLS
/// listener swapped for `listen` and the two upstreams for the given ports.
fn documented_server_block(listen: u16, invite_server: u16, app: u16) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reverse-proxy.md"),
    )
    .unwrap();
    let inside = doc
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(snippet, _)| snippet)
        .expect("docs/reverse-proxy.md lost its nginx-forward-auth markers");
    let block = inside
        .trim()
        .strip_prefix("```nginx")
        .and_then(|s| s.strip_suffix("```"))
        .expect("the marked snippet is one ```nginx block");
    // Each replaced text must be there: a doc that changed them would
    // otherwise be tested with its own (unreachable) addresses.
    let mut block = block.to_owned();
    for (from, to) in [
        ("listen 443 ssl;", format!("listen 127.0.0.1:{listen};")),
        ("127.0.0.1:5280", format!("127.0.0.1:{invite_server}")),
        ("127.0.0.1:8080", format!("127.0.0.1:{app}")),
    ] {
        assert!(block.contains(from), "the documented block has no {from:?}");
        block = block.replace(from, &to);
    }
    block
}

/// nginx in the foreground with its own prefix, pid, logs and temp paths,
/// in a process group of its own that is killed whole on drop.
struct Nginx {
    child: Child,
    /// The prefix directory, removed after nginx is killed.
    _dir: TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx on `port` in front of invite-server and the app.
    fn start(port: u16, invite_server: u16, app: u16) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: the reverse-proxy test needs Debian's nginx; run `{INSTALL}`"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let server = documented_server_block(port, invite_server, app);
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             access_log {d}/access.log;\nclient_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{server}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NGINX} ({e}); run `{INSTALL}`"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("nginx exited ({exit}): {}", log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen: {}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            _dir: dir,
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The protected app: answers every request with a page that shows the
/// `X-Invite-Server-User` header it received (`-` without one). Stops
/// accepting when dropped.
struct EchoApp {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl EchoApp {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            // Bounded by the flag Drop sets.
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request head and answers it, closing the connection.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let user = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("x-invite-server-user"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "-".to_owned());
    let body = format!(
        "<!doctype html><title>The app</title><p id=\"user\">{}</p>",
        user.replace('&', "&amp;").replace('<', "&lt;")
    );
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The app, invite-server for one host whose public address is nginx's
/// (believing nginx's forwarding header), and nginx in front of both.
fn stack() -> (EchoApp, TestApp, Nginx) {
    let echo = EchoApp::start();
    // nginx needs invite-server's port and invite-server nginx's: nginx's
    // is chosen first and nginx started once invite-server listens.
    let nginx_port = free_port();
    let app = TestApp::spawn_with(&format!(
        "trusted_proxies = [\"127.0.0.1\"]\n\
         [hosts.\"localhost\"]\npublic_url = \"http://127.0.0.1:{nginx_port}\"\n"
    ));
    let nginx = Nginx::start(nginx_port, app.port, echo.port);
    (echo, app, nginx)
}

async fn path_of(c: &Client) -> (String, Option<String>) {
    let url = c.current_url().await.unwrap();
    (url.path().to_owned(), url.query().map(str::to_owned))
}

/// Waits (bounded) until the browser is on `path`.
async fn wait_path(c: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path_of(c).await.0 != path {
        assert!(
            Instant::now() < deadline,
            "the browser stayed on {:?}, not {path}",
            path_of(c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn behind_the_documented_nginx_a_browser_signs_in_reaches_the_app_as_itself_and_signs_out() {
    let (_echo, app, nginx) = stack();
    register_account(&app, "alice");

    let protected = nginx.url("/app/page");
    let driver = ChromeDriver::start();
    runtime().block_on(async {
        let c = driver.session().await;
        c.goto(&protected).await.unwrap();
        wait_path(&c, "/login").await;
        assert_eq!(path_of(&c).await.1.as_deref(), Some("next=/app/page"));

        fill(&c, "name", "alice").await;
        fill(&c, "password", GOOD_PASSWORD).await;
        submit(&c).await;
        wait_path(&c, "/app/page").await;
        let user = c
            .find(Locator::Css("#user"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(user, "alice@localhost", "the app got the signed-in user");

        c.goto(&nginx.url("/account")).await.unwrap();
        c.find(Locator::Css("#logout"))
            .await
            .expect("no sign-out button on /account")
            .click()
            .await
            .unwrap();
        // Wait for the sign-out to be answered before trying the app.
        let deadline = Instant::now() + Duration::from_secs(30);
        while path_of(&c).await.0 == "/account" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.goto(&protected).await.unwrap();
        wait_path(&c, "/login").await;
        c.close().await.unwrap();
    });
}

#[test]
fn behind_the_documented_nginx_the_user_header_cannot_be_forged_and_forwarding_is_honoured() {
    let (_echo, app, nginx) = stack();
    let identity = register_account(&app, "bob");
    let http = client();

    // Signed out, a forged header gets nowhere: the app is not reached.
    let res = http
        .get(nginx.url("/app/"))
        .header("X-Invite-Server-User", "mallory@localhost")
        .send()
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        header(&res, "location").as_deref(),
        Some(nginx.url("/login?next=/app/").as_str())
    );
    // Signed in, the app sees who signed in, never what the client wrote.
    let res = http
        .get(nginx.url("/app/"))
        .header("X-Invite-Server-User", "mallory@localhost")
        .header("Cookie", format!("identity={identity}"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().unwrap();
    assert!(page.contains(">bob@localhost<"), "{page}");

    // nginx appends the client to X-Forwarded-For and invite-server, which
    // trusts nginx's address, reads the chain from the right. On loopback the
    // client's address is nginx's (both 127.0.0.1, hence trusted too), so a
    // hop the client names itself stands for a real client address here:
    // the log line shows it, where without trusted_proxies it would show
    // nginx's 127.0.0.1.
    let res = http
        .get(nginx.url("/login"))
        .header("X-Forwarded-For", "192.0.2.77")
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = header(&res, "x-request-id").expect("nginx passes X-Request-Id on");
    let log = app.log();
    let line = log
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no log line for {id}: {log}"));
    assert!(line.contains("192.0.2.77"), "{line}");
}
