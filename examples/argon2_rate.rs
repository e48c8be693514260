//! The Argon2 ceiling for redemption: how many password hashes per second this
//! machine can compute with invite-server's parameters, nothing else running in
//! the process. Every redemption (`POST /api/invite/{id}`) costs one such hash,
//! so this rate is the physical limit of redemption throughput.
//!
//!     cargo run --release --example argon2_rate -- [SECONDS] [THREADS]
//!
//! SECONDS defaults to 5; THREADS defaults to the core count, which is what
//! `passwords::Hasher` allows at once. Prints one line to stdout:
//! `argon2_rate hashes=N seconds=S threads=T rate=R cpu_seconds=C cpu_ms_per_hash=H`
//! (R in hashes per second of wall time; C the CPU time the process spent in
//! that window, so H = C / N is what one hash costs, whatever else the machine
//! is doing).
//!
//! It first hashes one password through the server's own `Hasher` and checks
//! that the PHC string carries the parameters measured here, so the two cannot
//! silently drift apart.
//!
//! Each thread hashes into one buffer it allocated once, the cheapest way to
//! compute these hashes: allocating 19 MiB per hash (as `hash_password` does)
//! adds page faults and zeroing, and a ceiling measured that way is one a
//! well-built server can beat.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use invite_server::domain::{AccountName, HostName, Password};
use invite_server::passwords::Hasher;

/// The parameters `passwords::Hasher` uses (OWASP: m = 19 MiB, t = 2, p = 1).
const M_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_LANES: u32 = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5.0);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(cores);

    // The server's hasher must produce exactly the parameters measured below.
    let expected = format!("$argon2id$v=19$m={M_KIB},t={T_COST},p={P_LANES}$");
    let name = AccountName::parse("bench")?;
    let host = HostName::parse("localhost")?;
    let password = Password::parse("correct horse battery staple 42", &name, &host)?;
    let phc = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(Hasher::new().hash(password))?;
    if !phc.starts_with(&expected) {
        return Err(format!("Hasher uses {phc:.40}…, this example measures {expected}").into());
    }

    let params = Params::new(M_KIB, T_COST, P_LANES, None).map_err(|e| e.to_string())?;
    let cpu_start = process_cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, done, params) = (Arc::clone(&stop), Arc::clone(&done), params.clone());
            std::thread::spawn(move || {
                let mut memory = vec![Block::default(); params.block_count()];
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                let (mut salt, mut out) = ([0u8; 16], [0u8; 32]);
                while !stop.load(Ordering::Relaxed) {
                    OsRng.fill_bytes(&mut salt);
                    let hash = argon2.hash_password_into_with_memory(
                        b"correct horse battery staple 42",
                        &salt,
                        &mut out,
                        &mut memory,
                    );
                    if hash.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    // Hashes finished after `stop` count, and so does the time they took.
    let elapsed = start.elapsed().as_secs_f64();
    let hashes = done.load(Ordering::Relaxed);
    let cpu = match (cpu_start, process_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    println!(
        "argon2_rate hashes={hashes} seconds={elapsed:.3} threads={threads} rate={:.1} \
         cpu_seconds={cpu:.3} cpu_ms_per_hash={:.2}",
        hashes as f64 / elapsed,
        cpu * 1000.0 / hashes.max(1) as f64
    );
    Ok(())
}

/// User + system CPU time of this process (all threads) from /proc/self/stat,
/// in seconds; None where there is no /proc. Assumes the usual 100 ticks/s.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
