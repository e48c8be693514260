//! The OpenAPI document at `/api/openapi.json`: it lists exactly the routes
//! the server serves, and schemathesis, fuzzing the running server from it,
//! finds no 5xx and no answer the document does not describe.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{client, stdout_of, TestApp};

/// Every operation the server serves under `/api` and `/invites_api`.
const SERVED: &[(&str, &str)] = &[
    ("get", "/invites_api"),
    ("post", "/invites_api"),
    ("options", "/invites_api"),
    ("get", "/api/openapi.json"),
    ("post", "/api/invite"),
    ("get", "/api/invite/{id}"),
    ("post", "/api/invite/{id}"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("get", "/api/auth/check"),
    ("get", "/api/admin/invites"),
    ("post", "/api/admin/invites"),
    ("get", "/api/admin/invites/{invite_id}"),
    ("delete", "/api/admin/invites/{invite_id}"),
    ("get", "/api/admin/accounts"),
];

fn document(app: &TestApp) -> Value {
    let res = client()
        .get(format!("{}/api/openapi.json", app.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    serde_json::from_str(&res.text().unwrap()).expect("the document is JSON")
}

#[test]
fn the_openapi_document_is_3_1_and_lists_exactly_the_served_routes() {
    let app = TestApp::spawn();
    let doc = document(&app);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let mut listed = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if ["get", "post", "delete", "put", "patch", "options"].contains(&method.as_str()) {
                listed.insert((method.clone(), path.clone()));
                // Clients and fuzzers find operations by id: two alike would
                // send a link to the wrong one.
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            }
        }
    }
    let served: BTreeSet<_> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, served);

    // Each listed operation is really served: neither the /api catch-all's
    // "no such API endpoint" nor a 405.
    for (method, path) in SERVED {
        let path = path.replace("{id}", "x").replace("{invite_id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = client()
            .request(method.clone(), format!("{}{path}", app.url))
            .send()
            .unwrap();
        let status = res.status();
        let body = res.text().unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !body.contains("no such API endpoint"),
            "{method} {path}: {body}"
        );
    }

    // Every operation that touches the store says what a failing one answers
    // (the document and the CORS preflight do not).
    let stored = SERVED
        .iter()
        .filter(|(m, p)| *p != "/api/openapi.json" && *m != "options");
    for (method, path) in stored {
        let op = &doc["paths"][path][method];
        assert!(
            op["responses"]["503"]["headers"]["Retry-After"].is_object(),
            "{method} {path}"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer_key"]["scheme"], "bearer");
    assert_eq!(schemes["identity_cookie"]["in"], "cookie");
    assert_eq!(schemes["identity_cookie"]["name"], "identity");
    assert_eq!(schemes["identity_cookie_secure"]["name"], "__Host-identity");
}

/// The venv's schemathesis CLI, as tests/run sets it up.
fn schemathesis() -> PathBuf {
    let py = std::env::var("INVITE_SERVER_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/invite-server/venv/bin/python")
    });
    let st = PathBuf::from(py).with_file_name("st");
    let ok = Command::new(&st)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} is missing: run tests/run, or \
         python3 -m venv ~/.cache/invite-server/venv && \
         ~/.cache/invite-server/venv/bin/pip install -r tests/requirements.txt",
        st.display()
    );
    st
}

/// How long the whole fuzzing run may take before the test gives up on it.
const FUZZ_LIMIT: Duration = Duration::from_secs(480);

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let st = schemathesis();
    let app = TestApp::spawn();
    let out = app.cli(&["keys", "create", "localhost", "--scope", "admin", "fuzzer"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let key = stdout_of(&out).trim().to_owned();
    let log = app.dir.path().join("schemathesis.log");
    let mut child = Command::new(st)
        .current_dir(app.dir.path())
        .args(["run", &format!("{}/api/openapi.json", app.url)])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        ])
        .args(["--max-examples", "30", "--seed", "12"])
        // Redirects are answers to check, never followed (a Location may
        // name another host).
        .args(["--max-redirects", "0", "--workers", "1"])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .args(["--no-color", "--warnings", "off"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(app.dir.path().join("st.err")).unwrap(),
        ))
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > FUZZ_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    let errors = std::fs::read_to_string(app.dir.path().join("st.err")).unwrap_or_default();
    let status = status
        .unwrap_or_else(|| panic!("schemathesis ran over {FUZZ_LIMIT:?}:\n{report}\n{errors}"));
    assert!(
        status.success(),
        "schemathesis found problems:\n{report}\n{errors}"
    );
    println!("{report}");
    // The server logged no failure on its side either.
    assert!(!app.log().contains("panicked"), "{}", app.log());
}
