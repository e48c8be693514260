//! Running the server for years: shell completions and the manual page, both
//! generated from the command line's definition so they cannot drift from
//! it, and the effective configuration as `check-config` prints it.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use ipnet::IpNet;
use serde::Serialize;

use crate::cli::Cli;
use crate::config::{Config, ForwardingHeader, HostConfig, LogFormat};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// The last word of a key (after its last `_`) that marks its value as
/// secret, or as the name of a file holding one (`*_file`): such values are
/// never printed.
const SECRET_WORDS: [&str; 11] = [
    "file",
    "secret",
    "secrets",
    "password",
    "passwords",
    "passphrase",
    "token",
    "tokens",
    "key",
    "keys",
    "credentials",
];

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut impl Write) -> std::io::Result<()> {
    // clap_complete panics when its writer fails (a closed pipe, say): it
    // writes into memory here, and only our own write can fail, as an error.
    let mut script = Vec::new();
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes the manual page (roff, section 1) to `out`: one page, whose
/// COMMANDS section describes every command and its arguments.
pub fn man(out: &mut impl Write) -> std::io::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    // Built, so each subcommand's usage names its whole path.
    command.build();
    let page = clap_mangen::Man::new(command.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    // clap_mangen would list `invite-server-serve(1)` and so on: pages of
    // their own, which are not shipped. One page says it all instead.
    let mut roff = roff::Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let globals: Vec<_> = command
        .get_arguments()
        .map(|a| a.get_id().clone())
        .collect();
    describe_commands(&mut roff, &command, &globals);
    roff.to_writer(out)?;
    page.render_version_section(out)?;
    out.flush()
}

/// One subsection per command that does something (`keys create`, not
/// `keys`): its usage, what it does, and each of its own arguments.
fn describe_commands(roff: &mut roff::Roff, parent: &clap::Command, globals: &[clap::Id]) {
    use roff::{bold, italic, roman};
    for command in parent.get_subcommands() {
        if command.has_subcommands() {
            describe_commands(roff, command, globals);
            continue;
        }
        let usage = command.clone().render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        roff.control("SS", [usage]);
        roff.text([roman(sentence(command.get_about().map(|a| a.to_string())))]);
        let own = command.get_arguments().filter(|a| {
            !a.is_hide_set()
                && !globals.contains(a.get_id())
                && !matches!(a.get_id().as_str(), "help" | "version")
        });
        for arg in own {
            let name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => String::new(),
            };
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let mut help = sentence(arg.get_help().map(|h| h.to_string()));
            let possible: Vec<_> = arg
                .get_possible_values()
                .iter()
                .filter(|p| !p.is_hide_set())
                .map(|p| p.get_name().to_owned())
                .collect();
            if !possible.is_empty() {
                help.push_str(&format!(" One of: {}.", possible.join(", ")));
            }
            // A flag's default (false) says nothing.
            if let Some(default) = arg.get_default_values().first().filter(|_| takes_value) {
                help.push_str(&format!(" Default: {}.", default.to_string_lossy()));
            }
            if let Some(env) = arg.get_env() {
                help.push_str(&format!(
                    " Also read from the {} environment variable.",
                    env.to_string_lossy()
                ));
            }
            roff.control("TP", [] as [&str; 0]);
            match (name.is_empty(), takes_value) {
                (true, _) => roff.text([italic(value)]),
                (false, true) => roff.text([bold(name), roman(" "), italic(value)]),
                (false, false) => roff.text([bold(name)]),
            };
            roff.text([roman(help)]);
        }
    }
}

/// The effective configuration as TOML, in the shape of a configuration
/// file (fed back with `--config`, it gives the same configuration), with
/// every secret value replaced by [`REDACTED`].
pub fn effective_config_toml(config: &Config) -> anyhow::Result<String> {
    let builtin = config.serves_builtin_host();
    let effective = Effective {
        listen: config.listen.to_string(),
        // Shown without a PostgreSQL URL's password.
        database: config.database.to_string(),
        database_pool_size: config.database_pool_size,
        // Outside [hosts] this key is only the default of each host: with
        // hosts configured, each says its own below.
        invite_expiry: builtin
            .then(|| config.hosts.values().next().map(|h| h.invite_expiry))
            .flatten()
            .map(duration_text),
        session_idle_expiry: duration_text(config.session_idle_expiry),
        login_attempts_per_minute: config.login_attempts_per_minute,
        trusted_proxies: config
            .trusted_proxies
            .networks()
            .iter()
            .map(proxy_text)
            .collect(),
        trusted_proxy_header: config.trusted_proxies.header,
        max_connections: config.max_connections,
        login_attempts_per_account_per_minute: config.login_attempts_per_account_per_minute,
        password_hash_queue: config.password_hash_queue,
        // Like invite_expiry: per host when hosts are configured.
        max_invite_expiry: builtin
            .then(|| config.hosts.values().next().map(|h| h.max_invite_expiry))
            .flatten()
            .map(duration_text),
        max_invite_uses: builtin
            .then(|| config.hosts.values().next().map(|h| h.max_invite_uses))
            .flatten(),
        account_invites: builtin
            .then(|| config.hosts.values().next().map(|h| h.account_invites))
            .flatten(),
        retention: duration_text(config.retention),
        purge_interval: duration_text(config.purge_interval),
        metrics_listen: config.metrics_listen.map(|a| a.to_string()),
        log_format: config.log_format,
        // The built-in host cannot be written as a [hosts] table: one would
        // stop its links following the listen address.
        hosts: (!builtin).then(|| {
            config
                .hosts
                .values()
                .map(|h| (h.name.as_str(), EffectiveHost::of(h)))
                .collect()
        }),
    };
    let mut table = toml::Table::try_from(&effective)
        .context("cannot show the configuration as TOML (is a path not UTF-8?)")?;
    redact(&mut table);
    let mut text = toml::to_string(&table).context("cannot show the configuration as TOML")?;
    if builtin {
        let url = config
            .hosts
            .values()
            .next()
            .map_or("", |h| h.public_url.as_str());
        text.push_str(&format!(
            "\n# No [hosts] is configured: the built-in host `localhost` is served,\n\
             # its links on the address `serve` binds ({url}).\n"
        ));
    }
    Ok(text)
}

/// Replaces, at any depth, the value of every key [`is_secret_key`] names.
pub fn redact(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        if is_secret_key(key) {
            *value = toml::Value::String(REDACTED.to_owned());
        } else {
            redact_value(value);
        }
    }
}

fn redact_value(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => redact(t),
        toml::Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// True for a key whose value must not be printed: its last word (after the
/// last `_`) is one of [`SECRET_WORDS`], e.g. `smtp_password`,
/// `form_key_file`. Only the last word counts, so `password_hash_queue` (a
/// number) is shown.
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('_').next().unwrap_or(key).to_ascii_lowercase();
    SECRET_WORDS.contains(&last.as_str())
}

/// A help text as a sentence: clap drops the final period of a doc comment,
/// and the page appends more sentences after it.
fn sentence(text: Option<String>) -> String {
    let mut text = text.unwrap_or_default();
    if !text.is_empty() && !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// A duration as the configuration writes it, in the largest of `d`, `h`,
/// `m`, `s` that divides it (configured durations are whole seconds).
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    [(86_400, 'd'), (3600, 'h'), (60, 'm')]
        .into_iter()
        .find(|&(per, _)| secs % per == 0 && secs > 0)
        .map_or_else(
            || format!("{secs}s"),
            |(per, u)| format!("{}{u}", secs / per),
        )
}

/// A trusted proxy as it would be written: a single address without `/32`.
fn proxy_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The configuration file's keys, in the order of config/default.toml.
#[derive(Serialize)]
struct Effective<'c> {
    listen: String,
    database: String,
    database_pool_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_expiry: Option<String>,
    session_idle_expiry: String,
    login_attempts_per_minute: u32,
    trusted_proxies: Vec<String>,
    trusted_proxy_header: ForwardingHeader,
    max_connections: usize,
    login_attempts_per_account_per_minute: u32,
    password_hash_queue: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_invite_expiry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_invite_uses: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_invites: Option<u32>,
    retention: String,
    purge_interval: String,
    /// Off (left out) unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<String>,
    log_format: LogFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<BTreeMap<&'c str, EffectiveHost<'c>>>,
}

/// One `[hosts."NAME"]` table, every default filled in.
#[derive(Serialize)]
struct EffectiveHost<'c> {
    public_url: &'c str,
    invite_page: &'c str,
    invite_expiry: String,
    site_name: &'c str,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_registration_url: Option<&'c str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_registration_text: Option<&'c str>,
    max_invite_expiry: String,
    max_invite_uses: u32,
    account_invites: u32,
    /// Each webhook's target, events and retry schedule; never its secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhooks: Vec<EffectiveWebhook<'c>>,
}

/// One `[[hosts."NAME".webhooks]]` table without its secret.
#[derive(Serialize)]
struct EffectiveWebhook<'c> {
    url: &'c str,
    events: Vec<&'static str>,
    retry: Vec<String>,
}

impl<'c> EffectiveHost<'c> {
    fn of(h: &'c HostConfig) -> Self {
        Self {
            public_url: h.public_url.as_str(),
            invite_page: h.invite_page.as_str(),
            invite_expiry: duration_text(h.invite_expiry),
            site_name: &h.site_name,
            after_registration_url: h.after_registration_url.as_deref(),
            after_registration_text: h.after_registration_text.as_deref(),
            max_invite_expiry: duration_text(h.max_invite_expiry),
            max_invite_uses: h.max_invite_uses,
            account_invites: h.account_invites,
            webhooks: h
                .webhooks
                .iter()
                .map(|w| EffectiveWebhook {
                    url: &w.url,
                    events: w.events.iter().map(|e| e.as_str()).collect(),
                    retry: w.retry.iter().map(|d| duration_text(*d)).collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_naming_a_secret_or_a_file_by_their_last_word_are_secret() {
        for key in [
            "secret",
            "api_secret",
            "smtp_password",
            "form_key",
            "form_key_file",
            "tls_key_file",
            "password_file",
            "Admin_Token",
            "oauth_credentials",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "listen",
            "database",
            "password_hash_queue",
            "login_attempts_per_account_per_minute",
            "public_url",
            "site_name",
            "keyboard",
            "filed_at",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn redaction_reaches_into_host_tables_and_arrays_and_spares_the_rest() {
        let mut table: toml::Table = toml::from_str(
            r#"
            listen = "127.0.0.1:5280"
            smtp_password = "hunter2"
            password_hash_queue = 64
            [hosts."a.test"]
            public_url = "https://a.test"
            form_key_file = "/run/secrets/a"
            [[relays]]
            name = "x"
            token = "t0ps3cret"
            "#,
        )
        .unwrap();
        redact(&mut table);
        let text = toml::to_string(&table).unwrap();
        for secret in ["hunter2", "/run/secrets/a", "t0ps3cret"] {
            assert!(!text.contains(secret), "{secret} shown in:\n{text}");
        }
        assert_eq!(text.matches(REDACTED).count(), 3, "{text}");
        for kept in [
            "127.0.0.1:5280",
            "password_hash_queue = 64",
            "https://a.test",
        ] {
            assert!(text.contains(kept), "{kept} missing from:\n{text}");
        }
    }

    #[test]
    fn durations_are_written_in_the_largest_whole_unit() {
        for (secs, text) in [
            (604_800, "7d"),
            (86_400, "1d"),
            (7200, "2h"),
            (90, "90s"),
            (120, "2m"),
            (1, "1s"),
        ] {
            assert_eq!(duration_text(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn every_key_of_the_defaults_is_printed_in_their_order() {
        let config = Config::load(None).unwrap();
        let printed: toml::Table =
            toml::from_str(&effective_config_toml(&config).unwrap()).unwrap();
        let defaults: toml::Table = toml::from_str(crate::config::DEFAULT_CONFIG).unwrap();
        let printed_keys: Vec<_> = printed.keys().collect();
        let default_keys: Vec<_> = defaults.keys().collect();
        assert_eq!(printed_keys, default_keys);
        assert_eq!(printed, defaults);
    }
}
