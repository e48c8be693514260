//! `invite-server keys ...`: output formats, exit codes, host scoping, and the
//! CLI changing keys under a running server.
//!
//! `keys delete` is called with `--` before its arguments: a key id is
//! base64url, so one in 64 starts with `-`, which clap takes for an option (see
//! `a_key_whose_id_starts_with_a_dash_can_be_deleted`).

use reqwest::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use crate::helpers::{assert_unknown_host_refused, client, stored_bytes, TestApp};

use crate::helpers::{stderr_of as stderr, stdout_of as stdout};
use crate::probe;

fn is_base64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs `keys create`, checks its output is exactly one key line, and returns
/// `(id, secret)`.
fn create(app: &TestApp, host: &str, name: Option<&str>) -> (String, String) {
    let mut args = vec!["keys", "create", host];
    args.extend(name);
    let out = app.cli(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stderr(&out), "", "keys create prints nothing on stderr");
    let text = stdout(&out);
    let line = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline at the end of {text:?}"));
    assert!(!line.contains('\n'), "more than one line: {text:?}");
    let (id, secret) = line
        .split_once('/')
        .unwrap_or_else(|| panic!("not <id>/<secret>: {line:?}"));
    assert_eq!(id.len(), 12, "id {id:?}");
    assert!(is_base64url(id), "id {id:?}");
    assert!(secret.len() >= 32, "secret {secret:?}");
    assert!(is_base64url(secret), "secret {secret:?}");
    (id.to_owned(), secret.to_owned())
}

/// `keys list HOST` as `(id, name)` pairs; checks the line format.
fn list(app: &TestApp, host: &str) -> Vec<(String, String)> {
    let out = app.cli(&["keys", "list", host]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| {
            let (id, name) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("not <id>\\t<name>: {l:?}"));
            (id.to_owned(), name.to_owned())
        })
        .collect()
}

fn mint_status(app: &TestApp, key: &str) -> u16 {
    client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn bearer_status(app: &TestApp, key: &str) -> u16 {
    client()
        .get(format!("{}/invites_api", app.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn keys_create_prints_exactly_one_line_with_a_fresh_key() {
    let app = TestApp::spawn();
    let (id, secret) = create(&app, "localhost", Some("my bot"));
    let (id2, secret2) = create(&app, "localhost", None);
    assert_ne!(id, id2);
    assert_ne!(secret, secret2);
    assert_eq!(probe::census(&app).keys, 2);

    let stored = probe::key(&app, &id).expect("the key is stored");
    assert_eq!(stored.host.as_str(), "localhost");
    assert_eq!(stored.name.as_deref(), Some("my bot"));
    assert_eq!(
        stored.secret_digest.as_bytes().to_vec(),
        Sha256::digest(secret.as_bytes()).to_vec()
    );
    let age = chrono::Utc::now() - stored.created_at;
    assert!(
        age.num_seconds().abs() < 60,
        "created_at {} is near now",
        stored.created_at
    );
    // The secret itself is nowhere in what the store holds; its id is.
    let bytes = stored_bytes(&app.db);
    assert!(bytes.windows(id.len()).any(|w| w == id.as_bytes()));
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is stored"
    );
    // And the printed key works.
    assert_eq!(mint_status(&app, &format!("{id}/{secret}")), 201);
}

#[test]
fn keys_list_prints_id_tab_name_with_unknown_for_no_name() {
    let app = TestApp::spawn();
    assert!(list(&app, "localhost").is_empty(), "no keys yet");
    let (named, _) = create(&app, "localhost", Some("web form"));
    let (unnamed, _) = create(&app, "localhost", None);
    let (empty, _) = create(&app, "localhost", Some(""));
    let (blank, _) = create(&app, "localhost", Some("   "));
    let mut got = list(&app, "localhost");
    got.sort();
    let mut want = vec![
        (named, "web form".to_owned()),
        (unnamed, "<unknown>".to_owned()),
        (empty, "<unknown>".to_owned()),
        (blank, "<unknown>".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);
    // Another host's list is unaffected.
    assert!(list(&app, "example.com").is_empty());
}

#[test]
fn keys_list_json_parses_and_matches_the_keys() {
    let app = TestApp::spawn();
    let out = app.cli(&["keys", "list", "localhost", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let empty: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(empty, serde_json::json!([]));

    let (a, _) = create(&app, "localhost", Some("alpha"));
    let (b, _) = create(&app, "localhost", None);
    create(&app, "example.com", Some("elsewhere"));
    let out = app.cli(&["keys", "list", "--json", "localhost"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stderr(&out), "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let items = v.as_array().expect("a JSON array");
    assert_eq!(items.len(), 2, "{v}");
    let by_id = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {v}"))
            .clone()
    };
    let ka = by_id(&a);
    assert_eq!(ka["name"], "alpha");
    assert_eq!(ka["host"], "localhost");
    let created = ka["created_at"].as_str().expect("created_at is text");
    let parsed = chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339");
    assert!((chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 60);
    let kb = by_id(&b);
    assert!(kb["name"].is_null(), "{kb}");
    for item in items {
        assert!(
            item.get("secret").is_none() && item.get("secret_digest").is_none(),
            "the list shows no secret: {item}"
        );
    }
}

#[test]
fn keys_delete_is_silent_and_removes_only_that_key() {
    let app = TestApp::spawn();
    let (gone, _) = create(&app, "localhost", Some("gone"));
    let (kept, _) = create(&app, "localhost", Some("kept"));
    let out = app.cli(&["keys", "delete", "--", "localhost", &gone]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    assert_eq!(probe::census(&app).keys, 1);
    assert_eq!(list(&app, "localhost"), vec![(kept, "kept".to_owned())]);
}

#[test]
fn deleting_an_unknown_key_says_key_not_found_and_exits_1() {
    let app = TestApp::spawn();
    let (id, _) = create(&app, "localhost", None);
    let out = app.cli(&["keys", "delete", "--", "localhost", &id]);
    assert_eq!(out.status.code(), Some(0));
    for unknown in [id.as_str(), "AAAAAAAAAAAA", "short", "", "AAAAAAAAAAAAA"] {
        let out = app.cli(&["keys", "delete", "--", "localhost", unknown]);
        assert_eq!(out.status.code(), Some(1), "{unknown:?}: {out:?}");
        assert_eq!(stderr(&out), "Error: key not found\n", "{unknown:?}");
        assert_eq!(stdout(&out), "", "{unknown:?}");
    }
    assert_eq!(probe::census(&app).keys, 0);
}

#[test]
fn an_undefined_host_is_refused_with_exit_1() {
    let app = TestApp::spawn();
    let (id, _) = create(&app, "localhost", None);
    for host in [
        "nohost.example",
        "example.org",
        "bad host",
        "",
        "localhost.",
    ] {
        for args in [
            vec!["keys", "create", host],
            vec!["keys", "create", host, "name"],
            vec!["keys", "list", host],
            vec!["keys", "list", host, "--json"],
            vec!["keys", "delete", "--", host, &id],
        ] {
            let out = app.cli(&args);
            assert_unknown_host_refused(&out, &args, host);
        }
    }
    assert_eq!(
        probe::census(&app).keys,
        1,
        "nothing was created or deleted"
    );
}

#[test]
fn misuse_is_a_usage_error_with_exit_2() {
    let app = TestApp::spawn();
    for args in [
        &["keys"][..],
        &["keys", "create"],
        &["keys", "list"],
        &["keys", "delete"],
        &["keys", "delete", "localhost"],
        &["keys", "frob"],
        &["keys", "frob", "localhost"],
        &["frob"],
        &["keys", "create", "localhost", "name", "extra"],
        &["keys", "delete", "localhost", "AAAAAAAAAAAA", "extra"],
        &["keys", "list", "localhost", "--bogus"],
        &["keys", "create", "--json", "localhost"],
    ] {
        let out = app.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(stderr(&out).contains("Usage"), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    assert_eq!(probe::census(&app).keys, 0);
}

#[test]
fn keys_of_one_host_are_not_listed_or_deletable_under_another() {
    let app = TestApp::spawn();
    let (theirs, secret) = create(&app, "example.com", Some("theirs"));
    let (ours, _) = create(&app, "localhost", Some("ours"));
    assert_eq!(list(&app, "localhost"), vec![(ours, "ours".to_owned())]);
    assert_eq!(
        list(&app, "example.com"),
        vec![(theirs.clone(), "theirs".to_owned())]
    );

    let out = app.cli(&["keys", "delete", "--", "localhost", &theirs]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr(&out), "Error: key not found\n");
    assert_eq!(probe::census(&app).keys, 2);
    // Still a working key of its own host.
    assert_eq!(mint_status(&app, &format!("{theirs}/{secret}")), 201);
    assert_eq!(probe::census_of(&app, "example.com").invites, 1);

    let out = app.cli(&["keys", "delete", "--", "example.com", &theirs]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(probe::census(&app).keys, 1);
}

#[test]
fn a_key_created_while_serving_works_on_the_very_next_request() {
    let app = TestApp::spawn();
    // Warm the server's read path first, so nothing is opened lazily later.
    assert_eq!(
        mint_status(&app, "AAAAAAAAAAAA/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        403
    );
    for i in 0..5 {
        let (id, secret) = create(&app, "localhost", None);
        let key = format!("{id}/{secret}");
        if i % 2 == 0 {
            assert_eq!(mint_status(&app, &key), 201, "round {i}");
        } else {
            assert_eq!(bearer_status(&app, &key), 201, "round {i}");
        }
        assert_eq!(probe::invites(&app), i + 1);
    }
    assert_eq!(
        app.log().matches("invite-server listening").count(),
        1,
        "the server was started once and never restarted"
    );
}

#[test]
fn a_key_deleted_while_serving_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn();
    for i in 0..5 {
        let (id, secret) = create(&app, "localhost", None);
        let key = format!("{id}/{secret}");
        // In use (and so possibly cached) right before the delete.
        assert_eq!(mint_status(&app, &key), 201, "round {i}");
        assert_eq!(bearer_status(&app, &key), 201, "round {i}");
        let minted = probe::invites(&app);

        let out = app.cli(&["keys", "delete", "--", "localhost", &id]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");

        let res = client()
            .get(format!("{}/invites_api?key={key}", app.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 403, "round {i}");
        assert!(res.text().unwrap().contains("not valid"));
        assert_eq!(bearer_status(&app, &key), 403, "round {i}");
        assert_eq!(probe::invites(&app), minted, "round {i}: nothing minted");
    }
}

#[test]
fn the_cli_and_the_server_can_write_at_the_same_time() {
    let app = TestApp::spawn();
    let (id, secret) = create(&app, "localhost", None);
    let key = format!("{id}/{secret}");
    let url = format!("{}/invites_api?key={key}", app.url);
    let minter = std::thread::spawn(move || {
        let c = client();
        (0..40)
            .map(|_| c.get(&url).send().unwrap().status().as_u16())
            .collect::<Vec<_>>()
    });
    let created: Vec<_> = (0..4).map(|_| create(&app, "localhost", None)).collect();
    let statuses = minter.join().unwrap();
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    assert_eq!(probe::invites(&app), 40);
    assert_eq!(probe::census(&app).keys, 1 + created.len() as u64);
}

#[test]
fn key_ids_never_start_with_a_dash_and_a_dash_id_is_still_read_as_an_id() {
    let app = TestApp::spawn();
    // One random id in 64 would start with `-`; 300 keys would show it.
    for _ in 0..300 {
        let (id, _) = create(&app, "localhost", None);
        assert!(!id.starts_with('-'), "generated id {id} starts with a dash");
    }
    // Ids from elsewhere (a Prosody import, a typo) may: clap must not take
    // them for options.
    let out = app.cli(&["keys", "delete", "localhost", "-AAAAAAAAAAA"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr(&out), "Error: key not found\n");
}

#[test]
fn deleting_with_the_whole_key_says_to_give_only_the_id_and_deletes_nothing() {
    let app = TestApp::spawn();
    let (id, secret) = create(&app, "localhost", None);
    for given in [format!("{id}/{secret}"), format!("{id}/"), "a/b".to_owned()] {
        let out = app.cli(&["keys", "delete", "localhost", &given]);
        assert_eq!(out.status.code(), Some(1), "{given}: {out:?}");
        assert_eq!(
            stderr(&out),
            "Error: give only the key's id, the part before the `/`; nothing was deleted\n",
            "{given}"
        );
        assert!(!stderr(&out).contains(&secret), "the secret was echoed");
    }
    assert_eq!(probe::census(&app).keys, 1);
    let out = app.cli(&["keys", "delete", "localhost", &id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_key_name_that_looks_like_an_option_is_taken_as_the_name() {
    let app = TestApp::spawn();
    let (id, _) = create(&app, "localhost", Some("-x"));
    assert_eq!(list(&app, "localhost"), vec![(id, "-x".to_owned())]);
}

#[test]
fn a_key_name_that_would_break_the_list_format_is_refused() {
    let app = TestApp::spawn();
    for bad in ["line1\nline2", "tab\there"] {
        let out = app.cli(&["keys", "create", "localhost", bad]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            stderr(&out).starts_with("Error: a key name is one line"),
            "{out:?}"
        );
    }
    assert!(list(&app, "localhost").is_empty());
}
