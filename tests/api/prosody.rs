//! Compatibility with the real thing: the same client requests against Prosody's
//! mod_invites_api (the reference peer, `tests/peer/start-prosody`) and
//! against invite-server, compared status by status.
//!
//! This test process starts its own peer once, on free loopback ports with a
//! throwaway directory, and stops it when the process ends. Prosody is
//! installed by `tests/run`; its absence is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::AUTHORIZATION;
use reqwest::Method;

use crate::helpers::{client, free_port, header, TestApp};
use crate::probe;

/// A running peer: its base URL and an API key made for these tests.
struct Peer {
    url: String,
    key: String,
}

/// The peer of this test process, started by the first test that needs it.
static PEER: OnceLock<Peer> = OnceLock::new();

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/start-prosody")
}

/// Stops the Prosody this test process started once the process is gone. A
/// static is never dropped, so a small shell waits for our pid instead.
fn stop_peer_when_tests_end(peer_dir: &Path) {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(
            r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
               kill "$(cat "$2/prosody.pid" 2>/dev/null)" 2>/dev/null
               sleep 1; rm -rf "$2""#,
        )
        .arg("sh")
        .arg(std::process::id().to_string())
        .arg(peer_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("cannot arrange for the Prosody peer to stop after the tests: {e}");
    }
}

fn start_peer() -> Peer {
    let path = script();
    let peer_dir = tempfile::Builder::new()
        .prefix("invite-server-tests-prosody.")
        .tempdir()
        .expect("a directory for the Prosody peer")
        .keep();
    let out = Command::new(&path)
        .env("PEER_DIR", &peer_dir)
        .env("PEER_HTTP_PORT", free_port().to_string())
        .env("PEER_C2S_PORT", free_port().to_string())
        .output();
    // Before anything below can panic and leave it running.
    stop_peer_when_tests_end(&peer_dir);
    let out = out.unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}): {stdout}{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(url), Some(key)) if url.starts_with("http://127.0.0.1:") && key.contains('/') => {
            Peer {
                url: url.to_owned(),
                key: key.to_owned(),
            }
        }
        _ => panic!("unexpected output from {}: {stdout:?}", path.display()),
    }
}

/// The running peer, started on first use.
fn peer() -> &'static Peer {
    PEER.get_or_init(start_peer)
}

/// Builds one request for a base URL and a key.
type Build = Box<dyn Fn(&str, &str) -> RequestBuilder>;
/// Gives a request URL for a base URL and a key.
type Target = fn(&str, &str) -> String;

/// The same request against both servers.
struct Pair<'a> {
    peer: &'a Peer,
    app: &'a TestApp,
    key: &'a str,
}

impl Pair<'_> {
    /// Sends `build(base_url, key)` to Prosody and to invite-server.
    fn send(&self, build: impl Fn(&str, &str) -> RequestBuilder) -> (Response, Response) {
        let prosody = build(&self.peer.url, &self.peer.key)
            .send()
            .expect("the Prosody peer does not answer");
        let ours = build(&self.app.url, self.key).send().unwrap();
        (prosody, ours)
    }
}

fn location(res: &Response) -> Option<String> {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Asserts both answered `status` with an invite page Location.
fn assert_both_mint(what: &str, pair: &Pair, prosody: &Response, ours: &Response, status: u16) {
    assert_eq!(prosody.status(), status, "{what}: Prosody");
    assert_eq!(ours.status(), status, "{what}: invite-server");
    let theirs = location(prosody).unwrap_or_else(|| panic!("{what}: Prosody gave no Location"));
    assert!(
        theirs.starts_with(&format!("{}/invites_page?", pair.peer.url)),
        "{what}: Prosody Location {theirs}"
    );
    let mine = location(ours).unwrap_or_else(|| panic!("{what}: invite-server gave no Location"));
    let token = mine
        .strip_prefix(&format!("{}/invite?", pair.app.url))
        .unwrap_or_else(|| panic!("{what}: invite-server Location {mine}"));
    assert!(token.len() >= 24, "{what}: {mine}");
}

fn with_both<T>(test: impl FnOnce(&Pair) -> T) -> T {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let pair = Pair {
        peer: peer(),
        app: &app,
        key: &key,
    };
    test(&pair)
}

#[test]
fn a_bookmark_with_redirect_true_gets_303_and_a_location_from_both() {
    with_both(|pair| {
        let (prosody, ours) = pair
            .send(|url, key| client().get(format!("{url}/invites_api?key={key}&redirect=true")));
        assert_both_mint("bookmark", pair, &prosody, &ours, 303);
        assert_eq!(probe::invites(pair.app), 1);
    });
}

#[test]
fn a_curl_style_key_query_gets_201_and_a_location_from_both() {
    with_both(|pair| {
        let (prosody, ours) =
            pair.send(|url, key| client().get(format!("{url}/invites_api?key={key}")));
        assert_both_mint("?key=", pair, &prosody, &ours, 201);
        assert_eq!(prosody.text().unwrap(), "");
        assert_eq!(ours.text().unwrap(), "");
        assert_eq!(probe::invites(pair.app), 1);
    });
}

#[test]
fn a_bearer_program_that_sends_a_query_gets_the_same_answer_from_both() {
    with_both(|pair| {
        // Prosody needs some query string beside a Bearer key (see below).
        for (query, status) in [("?redirect=true", 303), ("?client=bot", 201)] {
            let (prosody, ours) = pair.send(|url, key| {
                client()
                    .get(format!("{url}/invites_api{query}"))
                    .header(AUTHORIZATION, format!("Bearer {key}"))
            });
            assert_both_mint(&format!("Bearer {query}"), pair, &prosody, &ours, status);
        }
        assert_eq!(probe::invites(pair.app), 2);
    });
}

#[test]
fn a_bearer_program_without_a_query_string_gets_500_from_prosody_and_201_here() {
    with_both(|pair| {
        for path in ["/invites_api", "/invites_api?"] {
            let (prosody, ours) = pair.send(|url, key| {
                client()
                    .get(format!("{url}{path}"))
                    .header(AUTHORIZATION, format!("Bearer {key}"))
            });
            assert_eq!(prosody.status(), 500, "Prosody's known bug on {path}");
            assert_eq!(ours.status(), 201, "{path}");
            let mine = location(&ours).expect("Location");
            assert!(
                mine.starts_with(&format!("{}/invite?", pair.app.url)),
                "{mine}"
            );
        }
        assert_eq!(probe::invites(pair.app), 2);
    });
}

#[test]
fn a_wrong_key_is_refused_with_403_by_both() {
    with_both(|pair| {
        let wrong_secret = |key: &str| {
            let (id, _) = key.split_once('/').unwrap();
            format!("{id}/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        };
        let cases: Vec<(&str, Build)> = vec![
            (
                "?key= with a wrong secret",
                Box::new(move |url, key| {
                    client().get(format!("{url}/invites_api?key={}", wrong_secret(key)))
                }),
            ),
            (
                "?key= with an unknown id",
                Box::new(|url, _| {
                    client().get(format!(
                        "{url}/invites_api?key=AAAAAAAAAAAA/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    ))
                }),
            ),
            (
                "?key= malformed",
                Box::new(|url, _| client().get(format!("{url}/invites_api?key=nonsense"))),
            ),
            (
                "bookmark with a wrong secret",
                Box::new(move |url, key| {
                    client().get(format!(
                        "{url}/invites_api?key={}&redirect=true",
                        wrong_secret(key)
                    ))
                }),
            ),
            (
                "Bearer with a wrong secret",
                Box::new(move |url, key| {
                    client()
                        .get(format!("{url}/invites_api?redirect=true"))
                        .header(AUTHORIZATION, format!("Bearer {}", wrong_secret(key)))
                }),
            ),
        ];
        for (what, build) in &cases {
            let (prosody, ours) = pair.send(build);
            assert_eq!(prosody.status(), 403, "{what}: Prosody");
            assert_eq!(ours.status(), 403, "{what}: invite-server");
            assert_eq!(location(&prosody), None, "{what}");
            assert_eq!(location(&ours), None, "{what}");
        }
        assert_eq!(probe::invites(pair.app), 0);
    });
}

#[test]
fn a_missing_key_is_403_at_prosody_and_a_401_challenge_here() {
    with_both(|pair| {
        for query in ["?redirect=true", "?key="] {
            let (prosody, ours) =
                pair.send(|url, _| client().get(format!("{url}/invites_api{query}")));
            assert_eq!(prosody.status(), 403, "{query}: Prosody");
            assert_eq!(ours.status(), 401, "{query}: invite-server");
            assert!(header(&ours, "www-authenticate")
                .unwrap()
                .starts_with("Bearer"));
            assert_eq!(location(&prosody), None);
            assert_eq!(location(&ours), None);
        }
        assert_eq!(probe::invites(pair.app), 0);
    });
}

#[test]
fn a_browser_client_gets_the_cors_headers_it_relies_on_from_both() {
    with_both(|pair| {
        let origin = "https://web.example";
        let requests: [(&str, Target); 2] = [
            ("201", |url, key| format!("{url}/invites_api?key={key}")),
            ("403", |url, _| format!("{url}/invites_api?key=nonsense")),
        ];
        for (what, target) in requests {
            let (prosody, ours) =
                pair.send(|url, key| client().get(target(url, key)).header("Origin", origin));
            for (who, res) in [("Prosody", &prosody), ("invite-server", &ours)] {
                assert_eq!(
                    header(res, "access-control-allow-origin").as_deref(),
                    Some(origin),
                    "{what}: {who}"
                );
                assert_eq!(
                    header(res, "access-control-max-age").as_deref(),
                    Some("7200"),
                    "{what}: {who}"
                );
                let methods = header(res, "access-control-allow-methods").unwrap_or_default();
                for m in ["GET", "OPTIONS"] {
                    assert!(methods.contains(m), "{what}: {who} allows {methods}");
                }
                let allowed = header(res, "access-control-allow-headers").unwrap_or_default();
                assert!(allowed.contains("Content-Type"), "{what}: {who}: {allowed}");
            }
        }
        let (prosody, ours) = pair.send(|url, _| {
            client()
                .request(Method::OPTIONS, format!("{url}/invites_api"))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "GET")
        });
        assert!(prosody.status().is_success(), "Prosody preflight");
        assert!(ours.status().is_success(), "invite-server preflight");
    });
}

/// Where invite-server answers differently on purpose (documented), pinned
/// here so a change on either side is noticed.
#[test]
fn the_deliberate_differences_from_prosody_hold() {
    with_both(|pair| {
        // `redirect=false`: Prosody redirects on any value, invite-server reads it.
        let (prosody, ours) = pair
            .send(|url, key| client().get(format!("{url}/invites_api?key={key}&redirect=false")));
        assert_eq!(prosody.status(), 303, "redirect=false: Prosody");
        assert_eq!(ours.status(), 201, "redirect=false: invite-server");

        // A bare `redirect` (no `=`): Prosody ignores it, invite-server redirects.
        let (prosody, ours) =
            pair.send(|url, key| client().get(format!("{url}/invites_api?key={key}&redirect")));
        assert_eq!(prosody.status(), 201, "bare redirect: Prosody");
        assert_eq!(ours.status(), 303, "bare redirect: invite-server");

        // POST: Prosody never routed it.
        let (prosody, ours) =
            pair.send(|url, key| client().post(format!("{url}/invites_api?key={key}")));
        assert_eq!(prosody.status(), 404, "POST: Prosody");
        assert_eq!(ours.status(), 201, "POST: invite-server");

        // HEAD mints at neither.
        let (prosody, ours) =
            pair.send(|url, key| client().head(format!("{url}/invites_api?key={key}")));
        assert_eq!(prosody.status(), 405, "HEAD: Prosody");
        assert_eq!(ours.status(), 405, "HEAD: invite-server");

        assert_eq!(probe::invites(pair.app), 3);
    });
}
