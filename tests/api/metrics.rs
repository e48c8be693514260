//! Prometheus metrics on their own listener (`metrics_listen`), and JSON logs
//! (`log_format = "json"`) carrying the request id.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// The test configuration with metrics on `port` and `extra` top-level keys
/// (before the host tables, where TOML wants them).
fn config_with(extra: &str) -> String {
    format!("{extra}\n{DEFAULT_CONFIG}")
}

/// `GET /metrics` on the metrics listener at `port`: its text.
fn scrape(port: u16) -> String {
    let res = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().unwrap()
}

/// The value of the series `name` whose labels include every one of
/// `labels` (written `key="value"`); `None` when there is none.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The TCP ports `pid` listens on: its socket inodes matched against the
/// kernel's table of listening sockets.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] (ADDR:PORT in hex), st f[3] (0A = LISTEN), inode f[9].
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

#[test]
fn traffic_moves_the_scraped_series_and_no_label_carries_a_secret_or_a_name() {
    let mport = free_port();
    let app = TestApp::spawn_with(&config_with(&format!(
        "metrics_listen = \"127.0.0.1:{mport}\"\nlogin_attempts_per_minute = 2"
    )));
    let name = "zebulon-metrics";
    let (key, page) = mint_for(&app, "localhost");
    let token = token_of(&page);
    let registered = accept_invite(&app, &token, name, GOOD_PASSWORD);
    assert_eq!(registered.status(), 204);
    let identity = set_cookie_value(&registered, "identity").unwrap();
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    let wrong = "not the password 77";
    assert_eq!(login(&app, name, wrong).status(), 401);
    assert_eq!(login(&app, name, wrong).status(), 401);
    // The third attempt in a minute from this address is over the limit.
    assert_eq!(login(&app, name, wrong).status(), 429);
    let unknown = client()
        .get(format!("{}/no/such/{token}", app.url))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let text = scrape(mport);
    let at = |name: &str, labels: &[&str]| {
        value(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(
        at(
            "invite_server_http_requests_total",
            &[r#"route="/api/auth/check""#, r#"status="2xx""#]
        ),
        1.0
    );
    assert_eq!(
        at(
            "invite_server_http_requests_total",
            &[r#"route="/api/auth/login""#, r#"status="4xx""#]
        ),
        3.0
    );
    assert_eq!(
        at(
            "invite_server_http_requests_total",
            &[r#"route="unmatched""#, r#"status="4xx""#]
        ),
        1.0
    );
    assert_eq!(
        at(
            "invite_server_http_request_duration_seconds_count",
            &[r#"route="/api/invite/{id}""#]
        ),
        1.0
    );
    assert_eq!(
        at(
            "invite_server_invites_minted_total",
            &[r#"host="localhost""#, r#"source="api""#]
        ),
        1.0
    );
    assert_eq!(at("invite_server_registrations_total", &[]), 1.0);
    assert_eq!(
        at(
            "invite_server_sign_in_failures_total",
            &[r#"reason="wrong_password""#]
        ),
        2.0
    );
    assert_eq!(
        at(
            "invite_server_sign_in_failures_total",
            &[r#"reason="rate_limited_address""#]
        ),
        1.0
    );
    assert_eq!(
        at(
            "invite_server_rate_limited_total",
            &[r#"limit="login_address""#]
        ),
        1.0
    );
    // Every queued hash has been taken: the queue is empty again.
    assert_eq!(at("invite_server_password_hash_queue_depth", &[]), 0.0);
    // The mint, the registration and the session were committed.
    assert!(at("invite_server_write_batch_size_count", &[]) >= 1.0);
    assert!(at("invite_server_write_batch_size_sum", &[]) >= 2.0);
    assert!(at("invite_server_commit_duration_seconds_count", &[]) >= 1.0);

    // No token, key id or secret, account name or password anywhere.
    let (key_id, key_secret) = key.split_once('/').unwrap();
    for secret in [
        token.as_str(),
        key_id,
        key_secret,
        identity.as_str(),
        name,
        GOOD_PASSWORD,
        wrong,
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }

    // The public port does not serve them.
    let public = client().get(format!("{}/metrics", app.url)).send().unwrap();
    assert_eq!(public.status(), 404);
    assert_eq!(listening_ports(app.pid()), {
        let mut both = vec![app.port, mport];
        both.sort_unstable();
        both
    });
}

#[test]
fn metrics_are_off_by_default_and_never_on_the_public_port() {
    let app = TestApp::spawn();
    assert_eq!(listening_ports(app.pid()), vec![app.port]);
    let res = client().get(format!("{}/metrics", app.url)).send().unwrap();
    assert_eq!(res.status(), 404);
}

#[test]
fn a_metrics_listener_on_the_listen_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:5299\"\nmetrics_listen = \"127.0.0.1:5299\"\n",
    )
    .unwrap();
    let db = fresh_db(dir.path());
    let out = cli_at(&config, &db, &["check-config"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr_of(&out).contains("metrics_listen"), "{out:?}");
}

#[test]
fn json_log_lines_parse_and_carry_the_request_id_returned_in_x_request_id() {
    let app = TestApp::spawn_with(&config_with("log_format = \"json\""));
    let res = client().get(format!("{}/health", app.url)).send().unwrap();
    assert_eq!(res.status(), 200);
    let id = header(&res, "x-request-id").expect("no X-Request-Id");
    // The line is written after the answer is sent: wait for it, boundedly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = app.log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if let Some(line) = lines
            .into_iter()
            .find(|l| l["fields"]["id"].as_str() == Some(id.as_str()))
        {
            break line;
        }
        assert!(Instant::now() < deadline, "no line with id {id} in:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(line["fields"]["path"], "/health");
    assert_eq!(line["fields"]["status"], 200);
}

/// A provisioning command that answers by the account's name: `taken`
/// exits 3 (name taken), `broken` exits 1 (failure), any other is created.
const PROVISION_SCRIPT: &str = r#"#!/bin/sh
input=$(cat)
case "$input" in
  *'"name":"taken"'*) exit 3 ;;
  *'"name":"broken"'*) exit 1 ;;
esac
exit 0
"#;

#[test]
fn webhook_deliveries_and_provisioning_calls_are_counted_by_outcome_without_names_or_urls() {
    use crate::webhooks::{cli_mint, config_for, Receiver};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let hook_port = free_port();
    // The first event: 500 then 200 (retried, delivered); the second: 410 (failed).
    let receiver = Receiver::start(dir.path(), hook_port, &[500, 200, 410]);
    let script = dir.path().join("provision.sh");
    std::fs::write(&script, PROVISION_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = format!(
        "metrics_listen = \"127.0.0.1:{mport}\"\n{}\n[hosts.\"localhost\".provision]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        config_for(dir.path(), hook_port, r#"["1s"]"#, r#"["invite.created"]"#),
        script.display()
    );
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_in(dir, db, &cfg);

    cli_mint(&app);
    assert_eq!(receiver.wait_for(2).len(), 2);
    cli_mint(&app);
    assert_eq!(receiver.wait_for(3).len(), 3);
    // The result is recorded just after the answer: scrape until it is (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = scrape(mport);
    while value(
        &text,
        "invite_server_webhook_deliveries_total",
        &[r#"outcome="failed""#],
    )
    .is_none()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        text = scrape(mport);
    }
    for outcome in ["delivered", "retried", "failed"] {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(
            value(&text, "invite_server_webhook_deliveries_total", &[&label]),
            Some(1.0),
            "{outcome} in:\n{text}"
        );
    }

    for (name, status) in [("alice", 204), ("taken", 409), ("broken", 503)] {
        let token = token_of(&app.mint());
        let res = accept_invite(&app, &token, name, GOOD_PASSWORD);
        assert_eq!(res.status(), status, "{name}");
    }
    let text = scrape(mport);
    for outcome in ["done", "taken", "unavailable"] {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(
            value(
                &text,
                "invite_server_provision_calls_total",
                &[r#"kind="command""#, &label]
            ),
            Some(1.0),
            "{outcome} in:\n{text}"
        );
    }
    for secret in [
        "alice",
        "broken",
        &hook_port.to_string(),
        "/hook",
        GOOD_PASSWORD,
    ] {
        assert!(
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(secret)),
            "a label carries {secret}:\n{text}"
        );
    }
}
