//! Logging setup: lines on stderr, filtered by `RUST_LOG`, human-readable or
//! JSON (`log_format`). A line logged while a request runs carries its id
//! (the `request` span's `id`), as returned in `X-Request-Id`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber writing `format`; `RUST_LOG` overrides the
/// `info` default.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) finds a subscriber already set; that is fine.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // tracing-subscriber's own JSON layer: one object per line, the
        // current span (with the request id) under "span".
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
