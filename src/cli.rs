//! The command line: raw arguments (clap) kept apart from the validated config.
//! Every subcommand opens the store the same way the server does.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use chrono::{SecondsFormat, Utc};
use clap::{Parser, Subcommand};
use clap_complete::Shell;

use crate::config::{Config, ConfigDuration, HostConfig, ListenAddr};
use crate::domain::{
    AccountName, InviteId, InviteOptions, KeyId, KeyScope, MintRate, Password, RawInviteOptions,
};
use crate::passwords::Hasher;
use crate::service::{self, invites, HashedWriteError};
use crate::startup::Application;
use crate::store::{
    self, DatabaseLocation, ImportError, InviteSource, SqliteStore, Store, StoreError, Table,
};

/// How many invites one transaction of `invites create --count` carries, so a
/// bulk fill never holds the write lock long enough to stall a running server.
const BULK_CHUNK: usize = 10_000;

/// invite-server: hands out sign-up invites safely.
#[derive(Debug, Parser)]
#[command(name = "invite-server", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML); built-in defaults apply without one.
    #[arg(long, global = true, env = "INVITE_SERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SQLite database file, or PostgreSQL URL (postgres://user@host/db);
    /// overrides `database` in the configuration.
    #[arg(
        long,
        global = true,
        env = "INVITE_SERVER_DATABASE",
        // A URL may hold a password: never echo it in --help.
        hide_env_values = true,
        value_name = "PATH|URL"
    )]
    pub db: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:5280; overrides `listen`.
        #[arg(long, env = "INVITE_SERVER_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
        listen: Option<ListenAddr>,
    },
    /// Manage API keys that mint invites.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Mint invites directly, without a key.
    #[command(subcommand)]
    Invites(InvitesCommand),
    /// Load and check the configuration as `serve` would, and print it as
    /// TOML with secrets redacted.
    CheckConfig {
        /// Address to check instead of `listen`, as `serve --listen` takes it.
        #[arg(long, env = "INVITE_SERVER_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
        listen: Option<ListenAddr>,
    },
    /// Print a shell completion script, e.g. `invite-server completions bash`.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
    /// Print the manual page (roff), e.g. `invite-server man | man -l -`.
    Man,
    /// Copy the database to FILE (mode 0600) while the server runs: a
    /// consistent snapshot, checked with SQLite's integrity check, that
    /// opens as a normal database.
    Backup {
        /// Where to write the copy; its directory must exist.
        file: PathBuf,
        /// Replace FILE if it exists (never the database itself).
        #[arg(long)]
        force: bool,
    },
    /// Inspect and retry webhook deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Bring the database's schema up to date and print its version. Every
    /// server also does so when it starts; run this once before rolling a
    /// new version out to several servers on one PostgreSQL database.
    Migrate,
    /// Copy a whole store (keys, invites, accounts, sessions, audit log,
    /// webhook outbox, server secrets) into an empty database, then check
    /// that every table holds as many rows on both sides and print them.
    /// Refuses a target that holds any row. Stop the server first: what it
    /// writes after the copy is read is not copied.
    CopyDb {
        /// The database to copy: a SQLite file, which must exist, or a
        /// `postgres://` URL.
        #[arg(long, value_name = "URL|PATH")]
        from: String,
        /// The empty database to copy into: a SQLite file (created if
        /// missing; its directory must exist) or a `postgres://` URL.
        #[arg(long, value_name = "URL|PATH")]
        to: String,
    },
}

/// `invite-server webhooks ...`
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List a host's webhook deliveries, newest first: id, event, target,
    /// attempts, last status, next attempt (or delivered/failed), tab-separated.
    List {
        /// The host whose deliveries to list.
        host: String,
        /// Only the deliveries given up on.
        #[arg(long)]
        failed: bool,
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
    },
    /// Make one delivery due now (also one given up on or delivered).
    Retry {
        /// The host of the delivery.
        host: String,
        /// The delivery's id, as `webhooks list` shows it.
        id: i64,
    },
}

/// `invite-server keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints `<id>/<secret>` once.
    Create {
        /// The host the key mints invites for.
        host: String,
        /// A label to remember what the key is for (may start with `-`).
        #[arg(allow_hyphen_values = true)]
        name: Option<String>,
        /// What the key may do: `mint` invites only, or also manage the
        /// host's invites and accounts (`admin`).
        #[arg(long, default_value = "mint", value_name = "SCOPE", value_parser = parse_scope)]
        scope: KeyScope,
        /// Refuse the key after this long, e.g. `90d`, `12h` (s, m, h, d, w).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<ConfigDuration>,
        /// The most invites the key may mint per period, e.g. `60/h`
        /// (s, m, h, d); counted by each server process on its own.
        #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate)]
        rate: Option<MintRate>,
    },
    /// List a host's keys: `<id>\t<name>` per line.
    List {
        /// The host whose keys to list.
        host: String,
        /// Print JSON (with scope, expiry, last use and invites minted)
        /// instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key; requests with it are refused from then on, and the
    /// invites it minted that are still pending are revoked.
    Delete {
        /// The host the key belongs to.
        host: String,
        /// The key's id: the part before the `/` (may start with `-`).
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Leave the key's pending invites usable.
        #[arg(long)]
        keep_invites: bool,
    },
}

/// `invite-server accounts ...`
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account; the password is asked for, or read from stdin.
    Create {
        /// The host the account belongs to.
        host: String,
        /// The account name (may start with `-`, as registration allows).
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List a host's accounts: `<name>\t<created>\t<invited by>` per line.
    List {
        /// The host whose accounts to list.
        host: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        /// List instead the registrations a crash left half done: created
        /// (perhaps) in the host's account service but not here, as
        /// `<name>\t<invite id or ->\t<since>`.
        #[arg(long)]
        pending: bool,
    },
    /// Delete an account, sign it out everywhere, and revoke the pending
    /// invites it minted.
    Delete {
        /// The host the account belongs to.
        host: String,
        /// The account name (may start with `-`, as registration allows).
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Show where an account came from: its invite, who minted that invite
    /// and when, and when the account registered.
    Show {
        /// The host the account belongs to.
        host: String,
        /// The account name (may start with `-`, as registration allows).
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it cannot sign in, and its sessions end.
    Disable {
        /// The host the account belongs to.
        host: String,
        /// The account name (may start with `-`, as registration allows).
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The host the account belongs to.
        host: String,
        /// The account name (may start with `-`, as registration allows).
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Set an account's password (asked for, or read from stdin) and end
    /// every one of its sessions.
    Passwd {
        /// The host the account belongs to.
        host: String,
        /// The account name (may start with `-`, as registration allows).
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `invite-server invites ...`
#[derive(Debug, Subcommand)]
pub enum InvitesCommand {
    /// Mint invites (source `cli`) and print each page URL on its own line.
    Create {
        /// The host the invites are for.
        host: String,
        /// How many to mint.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        count: u64,
        /// How long each stays valid (`30m`, `12h`, `7d`); at most the host's
        /// `max_invite_expiry`; default its `invite_expiry`.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// How many accounts may register with each, 1 to the host's
        /// `max_invite_uses`; default 1.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        uses: Option<String>,
        /// A note for operators (at most 200 characters), never shown to invitees.
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        note: Option<String>,
        /// The only account name that may register with it.
        #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
        name: Option<String>,
        /// Print a JSON array of {invite_id, url, expires_at, uses}.
        #[arg(long)]
        json: bool,
    },
    /// List a host's invites, newest first: id, status, uses spent/allowed,
    /// created, expires, source, note, tab-separated.
    List {
        /// The host whose invites to list.
        host: String,
        /// Which invites: pending, used, expired, revoked or all.
        #[arg(long, default_value = "pending", value_parser = ["pending", "used", "expired", "revoked", "all"])]
        status: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show one invite, with the accounts registered with it and when.
    Show {
        /// The host the invite is for.
        host: String,
        /// The invite id, as `invites list` shows it.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke invites: their links stop working at once. Prints nothing.
    Revoke {
        /// The host the invites are for.
        host: String,
        /// The invite ids, as `invites list` shows them.
        #[arg(required = true, allow_hyphen_values = true)]
        ids: Vec<String>,
    },
    /// Delete invites that ended (spent, expired or revoked) more than
    /// --older-than ago, and sessions past their idle expiry; prints how
    /// many of each. Accounts keep their record of who invited them.
    Purge {
        /// The host to purge.
        host: String,
        /// How long ago an invite must have ended to be deleted (`0`: all
        /// that have ended).
        #[arg(long, default_value = "30d", value_name = "DURATION")]
        older_than: String,
        /// Print JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Mint a password-reset invite for an existing account and print its
    /// page URL.
    Reset {
        /// The host of the account.
        host: String,
        /// The account whose password it resets (may start with `-`).
        #[arg(allow_hyphen_values = true)]
        account: String,
        /// How long it stays valid, e.g. `30m`, `12h`, `7d` (default 1 day; at
        /// most the host's `max_invite_expiry`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<ConfigDuration>,
    },
}

fn parse_scope(s: &str) -> Result<KeyScope, String> {
    KeyScope::parse(s).map_err(|e| e.0)
}

fn parse_duration(s: &str) -> Result<ConfigDuration, String> {
    ConfigDuration::parse(s).map_err(|e| e.0)
}

fn parse_rate(s: &str) -> Result<MintRate, String> {
    MintRate::parse(s).map_err(|e| e.0)
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    ListenAddr::parse(s).map_err(|e| format!("{} (from --listen or INVITE_SERVER_LISTEN)", e.0))
}

/// Parses the command line and runs it; the exit code for `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(done) = run_without_config(&cli.command) {
        return done;
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(db) = cli.db {
        // Parsed here, not by clap, whose error would quote the value and
        // so a URL's password.
        config.database = DatabaseLocation::parse(&db)
            .map_err(|e| anyhow!("{e} (from --db or INVITE_SERVER_DATABASE)"))?;
    }
    actix_web::rt::System::new().block_on(dispatch(config, cli.command))
}

/// The store an admin command works on: the one `serve` would open.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(store::open(
        &config.database,
        config.database_pool_size,
        crate::webhooks::Routes::of(config),
        store::Purpose::Admin,
    )
    .await?)
}

async fn webhooks(config: &Config, cmd: WebhooksCommand) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::List {
            host: h,
            failed,
            json,
        } => {
            let host = host(config, &h)?;
            let list = open_store(config)
                .await?
                .list_deliveries(&host.name, failed)
                .await?;
            let mut out = std::io::stdout().lock();
            if json {
                let rows: Vec<_> = list.iter().map(crate::webhooks::delivery_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
            } else {
                for d in &list {
                    writeln!(out, "{}", crate::webhooks::delivery_line(d))?;
                }
            }
            Ok(())
        }
        WebhooksCommand::Retry { host: h, id } => {
            let host = host(config, &h)?;
            let retried = open_store(config)
                .await?
                .retry_delivery(&host.name, id, chrono::Utc::now())
                .await;
            named_not_found(retried, "no such delivery on that host")?;
            println!("delivery {id} is due now; a running server sends it within a second");
            Ok(())
        }
    }
}

/// Turns the store's `NotFound` into the message the operator should see.
fn named_not_found<T>(r: Result<T, StoreError>, message: &'static str) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        StoreError::NotFound => anyhow!(message),
        other => other.into(),
    })
}

/// The configured host `name`, or an error that starts as Prosody's does and
/// then says which hosts there are.
fn host<'c>(config: &'c Config, name: &str) -> anyhow::Result<&'c HostConfig> {
    config.host(name).ok_or_else(|| {
        let configured: Vec<&str> = config.hosts.keys().map(|h| h.as_str()).collect();
        // Plain when it is a plain word; quoted (and escaped) when it is
        // empty or holds spaces or control characters, so it reads as given.
        let given = if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()) {
            name.to_owned()
        } else {
            format!("{name:?}")
        };
        anyhow!(
            "please supply a valid host: {given} is not served here (configured: {})",
            configured.join(", ")
        )
    })
}

async fn dispatch(mut config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen } => {
            apply_listen(&mut config, listen);
            serve(config).await
        }
        Command::Keys(cmd) => keys(&config, cmd).await,
        Command::Accounts(cmd) => accounts(&config, cmd).await,
        Command::Invites(cmd) => invites(&config, cmd).await,
        Command::CheckConfig { listen } => check_config(config, listen),
        Command::Webhooks(cmd) => webhooks(&config, cmd).await,
        // Handled by `run_without_config`, before any configuration is read.
        Command::Completions { .. } | Command::Man => Ok(()),
        Command::Backup { file, force } => backup(&config, &file, force),
        Command::Migrate => migrate(&config).await,
        Command::CopyDb { from, to } => copy_db(&from, &to).await,
    }
}

/// Opens the store `location` names for `copy-db` as the admin commands
/// open theirs, without webhooks (a copy writes no events).
async fn open_location(location: &DatabaseLocation) -> anyhow::Result<Arc<dyn Store>> {
    Ok(store::open(
        location,
        store::DEFAULT_POOL_SIZE,
        crate::webhooks::Routes::default(),
        store::Purpose::Admin,
    )
    .await?)
}

/// Whether two locations name one database: the same file (however the
/// paths are spelled), or the same PostgreSQL database.
fn same_database(a: &DatabaseLocation, b: &DatabaseLocation) -> bool {
    match (a, b) {
        (DatabaseLocation::Sqlite(a), DatabaseLocation::Sqlite(b)) => {
            match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        }
        (DatabaseLocation::Postgres(a), DatabaseLocation::Postgres(b)) => a == b,
        _ => false,
    }
}

/// `copy-db --from A --to B`: reads A in one transaction, writes it into B in
/// one transaction (refused unless B is empty), then counts B's tables
/// against what was read, and prints both; then checks that A did not change
/// meanwhile.
async fn copy_db(from: &str, to: &str) -> anyhow::Result<()> {
    let from = DatabaseLocation::parse(from).context("--from")?;
    let to = DatabaseLocation::parse(to).context("--to")?;
    let (from_shown, to_shown) = (from.to_string(), to.to_string());
    if same_database(&from, &to) {
        bail!("--from and --to name the same database ({from_shown}); nothing was copied");
    }
    // Opening would create an empty database where the source should be.
    if let DatabaseLocation::Sqlite(path) = &from {
        if !path.is_file() {
            bail!("the source database {from_shown} does not exist; nothing was copied");
        }
    }
    let source = open_location(&from).await?;
    let target = open_location(&to).await?;
    // Checked again in the import's own transaction; here, before reading
    // what may be a large store for nothing.
    if let Some((table, rows)) = target.table_counts().await?.first_nonempty() {
        let refused = ImportError::NotEmpty { table, rows };
        bail!("cannot copy into {to_shown} (nothing was written): {refused}");
    }
    let dump = source
        .export()
        .await
        .with_context(|| format!("cannot read {from_shown}"))?;
    let (version, read) = (dump.schema_version, dump.counts());
    target
        .import_into_empty(dump)
        .await
        .with_context(|| format!("cannot copy into {to_shown} (nothing was written)"))?;
    let written = target.table_counts().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<24}{:>12}{:>12}", "table", "source", "target")?;
    for table in Table::ALL {
        let (a, b) = (read.get(table), written.get(table));
        writeln!(out, "{:<24}{a:>12}{b:>12}", table.as_str())?;
    }
    if let Some(table) = Table::ALL
        .into_iter()
        .find(|&t| read.get(t) != written.get(t))
    {
        bail!(
            "after the copy {} holds {} row(s) in {to_shown} against {} read from {from_shown}; \
             the target is not a faithful copy: empty it before trying again",
            table.as_str(),
            written.get(table),
            read.get(table)
        );
    }
    // Counted again: a source that changed since it was read has a writer
    // the operator forgot to stop, whose later writes the copy lacks.
    let now = source.table_counts().await?;
    if let Some(table) = Table::ALL.into_iter().find(|&t| now.get(t) != read.get(t)) {
        bail!(
            "{from_shown} changed while it was copied ({} holds {} row(s) now, {} when read): \
             is a server still writing to it? The target holds the store as read; stop every \
             writer, empty the target and copy again",
            table.as_str(),
            now.get(table),
            read.get(table)
        );
    }
    writeln!(
        out,
        "copied {from_shown} to {to_shown} (schema version {version}); every table's count matches"
    )?;
    out.flush()?;
    Ok(())
}

/// `backup FILE`: the copy is made by the store; one line on stdout says
/// what was written.
fn backup(config: &Config, file: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let path = match &config.database {
        DatabaseLocation::Sqlite(path) => path,
        DatabaseLocation::Postgres(url) => bail!(
            "backup copies a SQLite file; {url} is PostgreSQL: use pg_dump (for example \
             pg_dump --format=custom --file=FILE DATABASE) or the cluster's own backups"
        ),
    };
    let done = SqliteStore::backup(path, file, force)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "backed up {} to {} ({} bytes, schema version {}, integrity ok)",
        path.display(),
        file.display(),
        done.bytes,
        done.schema_version
    )?;
    out.flush()?;
    Ok(())
}

/// `migrate`: applies what the database lacks, says which version it is at.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let (before, after) = store::migrate(&config.database).await?;
    let mut out = std::io::stdout().lock();
    if before == after {
        writeln!(
            out,
            "{}: schema version {after}, up to date",
            config.database
        )?;
    } else {
        writeln!(
            out,
            "{}: schema version {after} (migrated from {before})",
            config.database
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `--listen` (or INVITE_SERVER_LISTEN) over the configured `listen`: one
/// function, so `check-config` checks what `serve` would use.
fn apply_listen(config: &mut Config, listen: Option<ListenAddr>) {
    if let Some(l) = listen {
        config.listen = l.0;
    }
}

/// Runs the commands that print something generated from the command line
/// itself; they work even when the configuration is broken. `None` for the
/// commands that need the configuration.
fn run_without_config(command: &Command) -> Option<anyhow::Result<()>> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Completions { shell } => {
            Some(crate::ops::completions(*shell, &mut out).map_err(Into::into))
        }
        Command::Man => Some(crate::ops::man(&mut out).map_err(Into::into)),
        _ => None,
    }
}

/// `check-config`: the configuration `serve` would run with (errors are
/// `Config::load`'s, as for `serve`), printed with secrets redacted.
fn check_config(mut config: Config, listen: Option<ListenAddr>) -> anyhow::Result<()> {
    apply_listen(&mut config, listen);
    // The links of the built-in host follow the listen address, as `serve`
    // makes them follow the address it binds.
    config.follow_listen_address(config.listen);
    crate::metrics::check_listen(&config)?;
    let text = crate::ops::effective_config_toml(&config)?;
    // Not print!, which panics when stdout is a closed pipe.
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(config.log_format);
    // Before listening, the store proves it takes writes: a server that
    // cannot write must not report healthy.
    let store = store::open(
        &config.database,
        config.database_pool_size,
        crate::webhooks::Routes::of(&config),
        store::Purpose::Serve,
    )
    .await?;
    let listen = config.listen;
    let app = Application::build(Arc::new(config), store, listen).await?;
    let addr = app.addr();
    tracing::info!(%addr, "invite-server listening");
    // One machine-readable line on stdout, for scripts and tests started on port 0.
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    app.run().await?;
    Ok(())
}

/// The actor the audit log names for whatever an operator does here.
const CLI_ACTOR: &str = "cli";

async fn keys(config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            host: h,
            name,
            scope,
            expires_in,
            rate,
        } => {
            let host = host(config, &h)?;
            // `keys list` prints one line per key: the name must fit on it.
            if name
                .as_deref()
                .is_some_and(|n| n.chars().any(char::is_control) || n.chars().count() > 200)
            {
                bail!("a key name is one line of at most 200 characters, without tabs");
            }
            let store = open_store(config).await?;
            let options = service::keys::KeyOptions {
                name,
                scope,
                expires_in: expires_in.map(|d| d.0),
                rate,
            };
            let key = service::keys::create(&*store, host, options, CLI_ACTOR).await?;
            println!("{}", key.expose());
        }
        KeysCommand::List { host: h, json } => {
            let host = host(config, &h)?;
            let keys = open_store(config).await?.list_keys(&host.name).await?;
            if json {
                let time =
                    |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
                let list: Vec<_> = keys
                    .iter()
                    .map(|listed| {
                        let k = &listed.key;
                        serde_json::json!({
                            "id": k.id.as_str(),
                            "name": k.name,
                            "host": k.host.as_str(),
                            "created_at": time(k.created_at),
                            "scope": k.scope.as_str(),
                            "expires_at": k.expires_at.map(time),
                            "rate": k.rate.map(|r| r.to_string()),
                            "last_used_at": k.last_used_at.map(time),
                            "invites_minted": listed.invites_minted,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for k in keys {
                    let k = k.key;
                    println!("{}\t{}", k.id, k.name.as_deref().unwrap_or("<unknown>"));
                }
            }
        }
        KeysCommand::Delete {
            host: h,
            id,
            keep_invites,
        } => {
            let host = host(config, &h)?;
            if id.contains('/') {
                // The whole key was pasted; its secret is not needed (and is
                // better not typed into shells and their history).
                bail!("give only the key's id, the part before the `/`; nothing was deleted");
            }
            let id = KeyId::parse(&id).map_err(|_| anyhow!("key not found"))?;
            let store = open_store(config).await?;
            let deleted =
                service::keys::delete(&*store, &host.name, &id, keep_invites, CLI_ACTOR).await;
            named_not_found(deleted, "key not found")?;
        }
    }
    Ok(())
}

/// The password for `accounts create` and `accounts passwd`: the first line
/// of stdin with `--password-stdin`, else asked twice on the terminal.
fn read_password(password_stdin: bool) -> anyhow::Result<String> {
    if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    // rpassword asks on the terminal, not on standard input; a script piping
    // the password in has forgotten the flag, and without any terminal it
    // would fail with an OS error.
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password on: pipe it in with --password-stdin");
    }
    let ask = |prompt| {
        rpassword::prompt_password(prompt).context(
            "cannot read the password from the terminal (pipe it in with --password-stdin)",
        )
    };
    let first = ask("Password: ")?;
    let again = ask("Password again: ")?;
    if first != again {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// An account name the operator gave for an existing account: one that is
/// not even a valid name is simply not found.
fn existing_name(name: &str) -> anyhow::Result<AccountName> {
    AccountName::parse(name).map_err(|_| anyhow!("account not found"))
}

/// Prints `value` as one pretty JSON document.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn accounts(config: &Config, cmd: AccountsCommand) -> anyhow::Result<()> {
    use service::accounts::{self as acc, AccountChain, AccountView, CLI_ACTOR};
    match cmd {
        AccountsCommand::Create {
            host: h,
            name,
            password_stdin,
        } => {
            let host = host(config, &h)?;
            let name = AccountName::parse(&name)?;
            let text = read_password(password_stdin)?;
            let password = Password::parse(&text, &name, &host.name)?;
            let store = open_store(config).await?;
            match acc::create(&*store, &Hasher::new(), host, name, password).await {
                Ok(a) => eprintln!("Created {}@{}", a.name, a.host),
                Err(HashedWriteError::Store(StoreError::NameTaken)) => {
                    bail!("that name is taken")
                }
                Err(e) => return Err(e.into()),
            }
        }
        AccountsCommand::List {
            host: h,
            json,
            pending: true,
        } => {
            let host = host(config, &h)?;
            let store = open_store(config).await?;
            let pending = store.pending_reservations(&host.name, Utc::now()).await?;
            let ids = service::form_key(&*store).await?.invite_ids();
            let views: Vec<_> = pending
                .iter()
                .map(|p| acc::PendingView::of(p, &ids))
                .collect();
            if json {
                print_json(&views)?;
            } else {
                for v in views {
                    println!(
                        "{}\t{}\t{}",
                        v.name,
                        v.invite_id.as_deref().unwrap_or("-"),
                        v.since
                    );
                }
            }
        }
        AccountsCommand::List {
            host: h,
            json,
            pending: false,
        } => {
            let host = host(config, &h)?;
            let store = open_store(config).await?;
            let accounts = store.list_accounts(&host.name).await?;
            if json {
                let ids = service::form_key(&*store).await?.invite_ids();
                let list: Vec<_> = accounts.iter().map(|a| AccountView::of(a, &ids)).collect();
                print_json(&list)?;
            } else {
                for a in accounts {
                    println!(
                        "{}\t{}\t{}",
                        a.name,
                        a.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        a.invited_by
                    );
                }
            }
        }
        AccountsCommand::Show {
            host: h,
            name,
            json,
        } => {
            let host = host(config, &h)?;
            let name = existing_name(&name)?;
            let store = open_store(config).await?;
            let origin = named_not_found(
                store.account_origin(&host.name, &name).await,
                "account not found",
            )?;
            let ids = service::form_key(&*store).await?.invite_ids();
            let chain = AccountChain::of(&origin, &ids);
            if json {
                print_json(&chain)?;
            } else {
                print_chain(&chain);
            }
        }
        AccountsCommand::Disable { host: h, name } => {
            set_disabled(config, &h, &name, true).await?;
        }
        AccountsCommand::Enable { host: h, name } => {
            set_disabled(config, &h, &name, false).await?;
        }
        AccountsCommand::Passwd {
            host: h,
            name,
            password_stdin,
        } => {
            let host = host(config, &h)?;
            let name = existing_name(&name)?;
            let store = open_store(config).await?;
            // Before asking: a typo in the name should not cost a prompt.
            let account = named_not_found(
                store.find_account(&host.name, &name).await,
                "account not found",
            )?;
            let text = read_password(password_stdin)?;
            let password = Password::parse(&text, &name, &host.name)?;
            let changed = acc::set_password(
                &*store,
                &Hasher::new(),
                host,
                &account,
                password,
                None,
                CLI_ACTOR,
            )
            .await;
            match changed {
                Ok(()) => {}
                Err(HashedWriteError::Store(e)) => named_not_found(Err(e), "account not found")?,
                Err(e) => return Err(e.into()),
            }
        }
        AccountsCommand::Delete { host: h, name } => {
            let host = host(config, &h)?;
            let name = existing_name(&name)?;
            let store = open_store(config).await?;
            named_not_found(
                store.find_account(&host.name, &name).await,
                "account not found",
            )?;
            pass_on(host, &name, service::provisioned::Change::Delete).await?;
            let deleted = store.delete_account(&host.name, &name, CLI_ACTOR).await;
            named_not_found(deleted, "account not found")?;
        }
    }
    Ok(())
}

/// Passes an account change on to the host's account service first; a
/// refusal stops the command with its reason, changing nothing here.
async fn pass_on(
    host: &crate::config::HostConfig,
    name: &AccountName,
    change: service::provisioned::Change,
) -> anyhow::Result<()> {
    use service::provisioned::Passed;
    if service::provisioned::pass_on(host, name, change).await? == Passed::Unsupported {
        eprintln!(
            "note: the account service of {} cannot do this; only invite-server's account changes",
            host.name
        );
    }
    Ok(())
}

/// `accounts disable` and `accounts enable`.
async fn set_disabled(config: &Config, h: &str, name: &str, disabled: bool) -> anyhow::Result<()> {
    let host = host(config, h)?;
    let name = existing_name(name)?;
    let store = open_store(config).await?;
    named_not_found(
        store.find_account(&host.name, &name).await,
        "account not found",
    )?;
    let change = if disabled {
        service::provisioned::Change::Disable
    } else {
        service::provisioned::Change::Enable
    };
    pass_on(host, &name, change).await?;
    let changed = store
        .set_account_disabled(
            &host.name,
            &name,
            disabled,
            Utc::now(),
            service::accounts::CLI_ACTOR,
        )
        .await;
    named_not_found(changed, "account not found")
}

/// `accounts show`: one `field<TAB>value` line each, `-` for none.
fn print_chain(chain: &service::accounts::AccountChain) {
    let a = &chain.account;
    let none = "-";
    println!("account\t{}@{}", a.name, a.host);
    println!("invite\t{}", a.invite_id.as_deref().unwrap_or(none));
    println!("invited by\t{}", a.invited_by);
    println!(
        "invite minted\t{}",
        chain.invite_minted_at.as_deref().unwrap_or(none)
    );
    println!("registered\t{}", chain.registered_at);
    println!("disabled\t{}", chain.disabled_at.as_deref().unwrap_or(none));
}

async fn invites(config: &Config, cmd: InvitesCommand) -> anyhow::Result<()> {
    match cmd {
        InvitesCommand::Create {
            host: h,
            count,
            ttl,
            uses,
            note,
            name,
            json,
        } => {
            let host = host(config, &h)?;
            let raw = RawInviteOptions {
                ttl,
                uses,
                note,
                name,
            };
            let options = InviteOptions::validate(&raw, host)?;
            create_invites(config, host, &options, count, json).await
        }
        InvitesCommand::List {
            host: h,
            status,
            json,
        } => {
            let host = host(config, &h)?;
            let status = invites::parse_status(&status)?;
            let store = open_store(config).await?;
            let ids = service::form_key(&*store).await?.invite_ids();
            let now = Utc::now();
            let list = invites::list_all(&*store, host, status, now).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                let list: Vec<_> = list
                    .iter()
                    .map(|d| invites::invite_json(d, &ids, now))
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                for d in &list {
                    writeln!(out, "{}", invites::invite_line(d, &ids, now))?;
                }
            }
            out.flush()?;
            Ok(())
        }
        InvitesCommand::Show { host: h, id, json } => {
            let host = host(config, &h)?;
            let id = InviteId::parse(&id).map_err(|_| anyhow!("invite not found"))?;
            let store = open_store(config).await?;
            let ids = service::form_key(&*store).await?.invite_ids();
            let now = Utc::now();
            let found = invites::find(&*store, &ids, host, &id).await;
            let d = named_not_found(found, "invite not found")?;
            let v = invites::invite_details_json(&d, &ids, now);
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let shown = |k: &str| match &v[k] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                for k in [
                    "invite_id",
                    "host",
                    "status",
                    "kind",
                    "source",
                    "note",
                    "name",
                    "uses_allowed",
                    "uses_spent",
                    "created_at",
                    "expires_at",
                    "revoked_at",
                ] {
                    println!("{k}\t{}", shown(k));
                }
                for u in &d.uses {
                    println!(
                        "account\t{}\t{}",
                        u.name,
                        u.used_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                    );
                }
            }
            Ok(())
        }
        InvitesCommand::Revoke {
            host: h,
            ids: given,
        } => {
            let host = host(config, &h)?;
            let store = open_store(config).await?;
            let ids = service::form_key(&*store).await?.invite_ids();
            // Each id on its own: one unknown id does not keep the others
            // from being revoked, and every failure is reported.
            let mut failed = 0;
            for text in &given {
                let revoked = match InviteId::parse(text) {
                    Ok(id) => invites::revoke(&*store, &ids, host, &id, "cli").await,
                    Err(_) => Err(StoreError::NotFound),
                };
                let why = match revoked {
                    Ok(()) => continue,
                    Err(StoreError::NotFound) => "invite not found".to_owned(),
                    Err(StoreError::InviteUsed) => "invite already used".to_owned(),
                    Err(StoreError::InviteExpired) => "invite already expired".to_owned(),
                    Err(e) => return Err(e.into()),
                };
                failed += 1;
                if given.len() > 1 {
                    eprintln!("Error: {why}: {}", text.escape_default());
                } else {
                    bail!("{why}");
                }
            }
            if failed > 0 {
                bail!("{failed} of {} invites not revoked", given.len());
            }
            Ok(())
        }
        InvitesCommand::Reset { host, account, ttl } => {
            reset_invite(config, &host, &account, ttl.map(|d| d.0)).await
        }
        InvitesCommand::Purge {
            host: h,
            older_than,
            json,
        } => {
            let host = host(config, &h)?;
            // 0 purges everything that has ended; otherwise the config's syntax.
            let older_than = match older_than.trim() {
                "0" => std::time::Duration::ZERO,
                d => {
                    ConfigDuration::parse(d)
                        .map_err(|e| anyhow!("--older-than: {e}; nothing was purged"))?
                        .0
                }
            };
            let store = open_store(config).await?;
            let p = invites::purge(&*store, config, host, older_than, "cli").await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "invites": p.invites, "sessions": p.sessions })
                );
            } else {
                let plural = |n: u64, one: &str, many: &str| {
                    format!("{n} {}", if n == 1 { one } else { many })
                };
                println!(
                    "purged {}, {}",
                    plural(p.invites, "invite", "invites"),
                    plural(p.sessions, "session", "sessions")
                );
            }
            Ok(())
        }
    }
}

/// `invites create`: mints `count` invites in chunks, printing each only
/// once it is committed (a URL on stdout is an invite on disk).
async fn create_invites(
    config: &Config,
    host: &HostConfig,
    options: &InviteOptions,
    count: u64,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let ids = if json {
        Some(service::form_key(&*store).await?.invite_ids())
    } else {
        None
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut left = count;
    let mut first = true;
    if json {
        write!(out, "[")?;
    }
    while left > 0 {
        let n = left.min(BULK_CHUNK as u64) as usize;
        let now = Utc::now();
        let mut records = Vec::with_capacity(n);
        let mut unsaved = Vec::with_capacity(n);
        for _ in 0..n {
            let (invite, record) =
                service::new_invite(host, InviteSource::Cli, None, options, now)?;
            unsaved.push(invite);
            records.push(record);
        }
        let saved = store.create_invites(records).await?;
        for (invite, id) in unsaved.into_iter().zip(saved) {
            let minted = invite.saved_as(id, host);
            match &ids {
                Some(ids) => {
                    let v = serde_json::json!({
                        "invite_id": ids.public(minted.row_id).as_str(),
                        "url": minted.url,
                        "expires_at": minted.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                        "uses": minted.uses,
                    });
                    write!(out, "{}\n  {v}", if first { "" } else { "," })?;
                    first = false;
                }
                None => writeln!(out, "{}", minted.url)?,
            }
        }
        left -= n as u64;
    }
    if json {
        writeln!(out, "\n]")?;
    }
    out.flush()?;
    Ok(())
}

/// `invites reset HOST ACCOUNT [--ttl D]`: prints the page URL like
/// `invites create`.
async fn reset_invite(
    config: &Config,
    h: &str,
    account: &str,
    ttl: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    use service::accounts::{mint_reset, reset_ttl, CLI_ACTOR};
    let host = host(config, h)?;
    let name = existing_name(account)?;
    let ttl = reset_ttl(ttl, host).map_err(|e| anyhow!("--{e}; nothing was minted"))?;
    let store = open_store(config).await?;
    let minted = mint_reset(&*store, host, &name, ttl, InviteSource::Cli, CLI_ACTOR).await;
    let minted = named_not_found(minted, "account not found")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", minted.url)?;
    out.flush()?;
    Ok(())
}
