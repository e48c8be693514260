//! `invite-server backup FILE`: a consistent copy of the live database,
//! taken while the server mints, that a server can then run on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{cli_at, client, stderr_of, stdout_of, token_of, TestApp, DEFAULT_CONFIG};

/// SQLite's own check of `app`'s database file. `invite-server backup` copies
/// the SQLite store to a SQLite file, so this module reads SQLite on purpose.
fn integrity_check(app: &TestApp) -> String {
    rusqlite::Connection::open_with_flags(&app.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| db.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .expect("integrity_check of the test db")
}

/// Minting clients running side by side during the backup.
const MINTERS: usize = 4;
/// The most invites one minting client asks for (bounds the loop).
const MAX_PER_MINTER: usize = 20_000;
/// How many invites must be acknowledged after the backup ended before the
/// load stops: proof that the server kept minting through it.
const AFTER_BACKUP: usize = 40;

/// `GET /api/invite/{token}` on `url`: 200 for a usable invite, 404 for one
/// the database does not hold.
fn invite_status(url: &str, token: &str) -> u16 {
    client()
        .get(format!("{url}/api/invite/{token}"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (bounded) until `count` reaches `at_least`.
fn wait_for(count: &AtomicUsize, at_least: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < at_least {
        assert!(Instant::now() < deadline, "{what}: only {count:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_backup_taken_while_minting_holds_every_invite_acknowledged_before_it_and_serves() {
    let app = TestApp::spawn_sqlite();
    let key = app.create_key("localhost");
    // Each acknowledged invite with the moment its 201 arrived.
    let minted: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let minters: Vec<_> = (0..MINTERS)
        .map(|_| {
            let (minted, acknowledged, stop) = (minted.clone(), acknowledged.clone(), stop.clone());
            let url = format!("{}/invites_api?key={key}", app.url);
            std::thread::spawn(move || {
                let http = client();
                for _ in 0..MAX_PER_MINTER {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let res = http.get(&url).send().unwrap();
                    assert_eq!(res.status(), 201, "minting failed during the backup");
                    let page = res.headers()["location"].to_str().unwrap().to_owned();
                    minted.lock().unwrap().push((Instant::now(), page));
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_for(&acknowledged, 100, "minting did not get going");

    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("copy.db");
    let began = Instant::now();
    let out = app.cli(&["backup", copy.to_str().unwrap()]);
    let ended = Instant::now();
    let at_end = acknowledged.load(Ordering::SeqCst);
    wait_for(
        &acknowledged,
        at_end + AFTER_BACKUP,
        "minting stalled after the backup",
    );
    stop.store(true, Ordering::SeqCst);
    for m in minters {
        m.join().unwrap();
    }

    assert!(out.status.success(), "backup failed: {out:?}");
    let said = stdout_of(&out);
    assert!(said.contains("integrity ok"), "{said}");
    assert_eq!(stderr_of(&out), "");
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the copy holds password hashes and key digests"
    );
    let leftovers: Vec<_> = std::fs::read_dir(copies.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["copy.db"],
        "the copy is one file, nothing beside it"
    );

    let minted = std::mem::take(&mut *minted.lock().unwrap());
    let before: Vec<&String> = minted
        .iter()
        .filter(|(t, _)| *t < began)
        .map(|(_, p)| p)
        .collect();
    let after: Vec<&String> = minted
        .iter()
        .filter(|(t, _)| *t > ended)
        .map(|(_, p)| p)
        .collect();
    assert!(before.len() >= 100 && after.len() >= AFTER_BACKUP);

    let restored = TestApp::spawn_in(copies, copy.clone(), DEFAULT_CONFIG);
    let integrity = integrity_check(&restored);
    assert_eq!(integrity, "ok");
    for page in &before {
        assert_eq!(
            invite_status(&restored.url, &token_of(page)),
            200,
            "an invite acknowledged before the backup began is missing from the copy"
        );
    }
    // A snapshot: what was minted after the backup finished is not in it.
    for page in &after {
        assert_eq!(invite_status(&restored.url, &token_of(page)), 404);
    }
    // And the copy is a working store: it mints too.
    assert_eq!(
        invite_status(&restored.url, &token_of(&restored.mint())),
        200
    );
}

#[test]
fn backup_refuses_an_existing_file_unless_forced_and_then_replaces_it() {
    let app = TestApp::spawn_sqlite();
    let page = app.mint();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("existing.db");
    std::fs::write(&file, "precious").unwrap();

    let out = app.cli(&["backup", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_of(&out),
        format!(
            "Error: {} already exists; nothing was written (pass --force to replace it)\n",
            file.display()
        )
    );
    assert_eq!(stdout_of(&out), "");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let out = app.cli(&["backup", "--force", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let listed = cli_at(&app.config, &file, &["invites", "list", "localhost"], None);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(stdout_of(&listed).lines().count(), 1, "{listed:?}");
    assert_eq!(invite_status(&app.url, &token_of(&page)), 200);
}

#[test]
fn backup_never_writes_over_the_live_database_even_when_forced() {
    let app = TestApp::spawn_sqlite();
    let page = app.mint();
    let wal = format!("{}-wal", app.db.display());
    for target in [app.db.to_str().unwrap(), wal.as_str()] {
        let out = app.cli(&["backup", "--force", target]);
        assert_eq!(out.status.code(), Some(1), "{target}: {out:?}");
        assert!(
            stderr_of(&out).contains("is the database being backed up"),
            "{target}: {out:?}"
        );
    }
    // Still the same database, still serving.
    assert_eq!(invite_status(&app.url, &token_of(&page)), 200);
    assert_eq!(invite_status(&app.url, &token_of(&app.mint())), 200);
}

#[test]
fn backup_of_a_missing_database_or_into_a_missing_directory_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let db = dir.path().join("missing.db");
    let copy = dir.path().join("copy.db");

    let out = cli_at(&config, &db, &["backup", copy.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_of(&out),
        format!(
            "Error: database {} does not exist; nothing to back up\n",
            db.display()
        )
    );
    assert!(!db.exists() && !copy.exists(), "nothing is created");

    let app = TestApp::spawn_sqlite();
    let nowhere = dir.path().join("no-such-dir").join("copy.db");
    let out = app.cli(&["backup", nowhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr_of(&out).contains("does not exist (create it first)"),
        "{out:?}"
    );
    assert!(!Path::new(&nowhere).exists());
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 1, "only the config file is there");
}
