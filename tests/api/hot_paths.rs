//! The two hot paths, `/api/auth/check` and the invite page: made cheap
//! without answering anything stale. A check answers from what it read before
//! only while nothing at all has been committed since (any process's commit
//! changes SQLite's WAL index), so a session ended anywhere (the CLI, another
//! server on the same database, expiry) is refused on the very next check,
//! however warm the server is. The invite page's QR code is one compact path
//! that still draws exactly the encoder's modules.

use std::time::Duration;

use qrcode::QrCode;

use crate::helpers::*;

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", stderr_of(out));
}

/// Both nodes let `identity` in (which also warms whatever they keep).
fn assert_both_accept(a: &TestApp, b: &TestApp, identity: &str) {
    for node in [a, b] {
        for _ in 0..3 {
            assert_eq!(auth_check(node, Some(identity)).status(), 200);
        }
    }
}

fn assert_both_refuse(a: &TestApp, b: &TestApp, identity: &str) {
    for node in [a, b] {
        assert_eq!(auth_check(node, Some(identity)).status(), 401);
    }
}

#[test]
fn a_session_of_an_account_disabled_or_deleted_on_the_cli_is_refused_by_every_node_on_the_next_check(
) {
    for command in ["disable", "delete"] {
        let app = TestApp::spawn();
        let other = app.spawn_node();
        let identity = register_account(&app, "alice");
        assert_both_accept(&app, &other, &identity);
        ok(&app.cli(&["accounts", command, "localhost", "alice"]));
        assert_both_refuse(&app, &other, &identity);
    }
}

#[test]
fn a_session_signed_out_on_one_node_is_refused_by_the_other_on_the_next_check() {
    let app = TestApp::spawn();
    let other = app.spawn_node();
    let identity = register_account(&app, "alice");
    assert_both_accept(&app, &other, &identity);
    let res = client()
        .post(format!("{}/api/auth/logout", other.url))
        .header(reqwest::header::COOKIE, format!("identity={identity}"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_both_refuse(&app, &other, &identity);
}

#[test]
fn an_idle_session_is_refused_on_the_first_check_after_it_expires() {
    let app = TestApp::spawn_with(
        r#"
session_idle_expiry = "1s"
[hosts."localhost"]
public_url = "http://127.0.0.1:{port}"
"#,
    );
    let identity = register_account(&app, "alice");
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    // Expiry is measured in wall-clock time; nothing else can stand in for it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(auth_check(&app, Some(&identity)).status(), 401);
}

/// The module matrix the page's QR path draws (without the quiet zone), or a
/// message saying why it is not one compact path of runs.
fn drawn_modules(svg: &str, modules: usize) -> Result<Vec<bool>, String> {
    let d = svg
        .split(" d=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("no path")?;
    let mut dark = vec![false; modules * modules];
    for run in d.split('M').filter(|r| !r.is_empty()) {
        // Each run is `M<x> <y>h<len>v1h-<len>z`, in module units.
        let (xy, rest) = run.split_once('h').ok_or(format!("run {run}"))?;
        let (x, y) = xy.split_once(' ').ok_or(format!("run {run}"))?;
        let len = rest.split_once('v').ok_or(format!("run {run}"))?.0;
        let num = |t: &str| t.parse::<usize>().map_err(|_| format!("run {run}"));
        let (x, y, len) = (num(x)?, num(y)?, num(len)?);
        if x < 4 || y < 4 || x - 4 + len > modules || y - 4 >= modules {
            return Err(format!("run {run} outside the code"));
        }
        let start = (y - 4) * modules + x - 4;
        for cell in &mut dark[start..start + len] {
            *cell = true;
        }
    }
    Ok(dark)
}

#[test]
fn the_invite_pages_qr_code_is_one_compact_path_drawing_the_invite_link() {
    let app = TestApp::spawn();
    let page_url = app.mint();
    let code = QrCode::new(page_url.as_bytes()).unwrap();
    let want: Vec<bool> = code
        .to_colors()
        .iter()
        .map(|c| *c == qrcode::Color::Dark)
        .collect();
    // Every view draws the same code.
    let (mut html, mut svg) = (String::new(), String::new());
    for view in 1..=2 {
        html = client().get(&page_url).send().unwrap().text().unwrap();
        let start = html.find("<svg").expect("a QR code");
        let end = start + html[start..].find("</svg>").expect("end of svg");
        svg = html[start..end].to_owned();
        assert_eq!(
            drawn_modules(&svg, code.width()),
            Ok(want.clone()),
            "view {view}: the QR code does not draw {page_url}"
        );
    }
    // Shown 200 px or more across as before, in whole pixels per module.
    let across = code.width() + 8;
    let px = 200usize.div_ceil(across) * across;
    assert!(
        svg.contains(&format!(r#"width="{px}" height="{px}""#)),
        "{svg}"
    );
    // Per-module rectangles made the page 14 KB; runs keep it small.
    assert!(html.len() < 8 * 1024, "the page is {} bytes", html.len());
}

#[test]
fn a_server_reaching_its_database_through_a_symlink_refuses_a_session_disabled_on_the_cli_on_the_next_check(
) {
    // The server learns of other processes' commits from the database's
    // WAL index, which SQLite names after the real path: the link must not
    // make it watch a file that no commit touches.
    // (A SQLite file of its own whatever the backend: the link is to a file.)
    let first = TestApp::spawn_sqlite();
    register_account(&first, "bob");
    let (dir, db) = first.into_parts();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let app = TestApp::spawn_in(dir, link, DEFAULT_CONFIG);
    let identity = register_account(&app, "alice");
    for _ in 0..3 {
        assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    }
    ok(&cli_at(
        &app.config,
        &db,
        &["accounts", "disable", "localhost", "alice"],
        None,
    ));
    assert_eq!(auth_check(&app, Some(&identity)).status(), 401);
}

#[test]
fn a_session_checked_again_and_again_is_refused_on_the_check_right_after_its_password_changes_on_the_cli(
) {
    let app = TestApp::spawn();
    let other = app.spawn_node();
    let identity = register_account(&app, "alice");
    assert_both_accept(&app, &other, &identity);
    let passwd = [
        "accounts",
        "passwd",
        "localhost",
        "alice",
        "--password-stdin",
    ];
    ok(&app.cli_with_stdin(&passwd, Some("a-new-Password-for-alice-9!\n")));
    assert_both_refuse(&app, &other, &identity);
}
