//! Graceful shutdown: SIGTERM under load stops the server cleanly. Every
//! request either completed or was refused at the connection (never a 5xx
//! or a cut-off answer), the process exits 0, and every invite a client was
//! told about is in the store when the server comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{client, token_of, TestApp, DEFAULT_CONFIG};

/// Client threads minting while the signal arrives.
const CLIENTS: usize = 8;
/// Mints each client sends at the most (the load loop is bounded).
const MAX_PER_CLIENT: usize = 2_000;

#[test]
fn sigterm_under_load_finishes_what_it_answered_exits_0_and_loses_nothing() {
    let mut app = TestApp::spawn();
    let key = app.create_key("localhost");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0_usize));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, key) = (app.url.clone(), key.clone());
            let (acknowledged, refused, stop) =
                (acknowledged.clone(), refused.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = client();
                for _ in 0..MAX_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match http.get(format!("{url}/invites_api?key={key}")).send() {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            assert_eq!(status, 201, "a mint during shutdown answered {status}");
                            let location = res.headers()["location"].to_str().unwrap().to_owned();
                            acknowledged.lock().unwrap().push(location);
                        }
                        // Refused or closed before an answer: the client knows
                        // nothing was promised.
                        Err(_) => *refused.lock().unwrap() += 1,
                    }
                }
            })
        })
        .collect();
    // Let the load build up, then ask the server to stop.
    while acknowledged.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = app.terminate(Duration::from_secs(40));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a client saw a bad answer");
    }
    let status = status.expect("the server did not exit within 40 s of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let log = app.log();
    assert!(!log.contains("panicked"), "{log}");

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 200,
        "too little load: {}",
        acknowledged.len()
    );
    let (dir, db) = app.into_parts();
    let app = TestApp::spawn_in(dir, db, DEFAULT_CONFIG);
    let http = client();
    for location in &acknowledged {
        let token = token_of(location);
        let res = http
            .get(format!("{}/api/invite/{token}", app.url))
            .send()
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "an acknowledged invite was lost: {location}"
        );
    }
}
