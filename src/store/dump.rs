//! A whole store as plain data, for `invite-server copy-db`: every row of
//! every table, as stored, in types no backend owns, so that any backend can
//! write what any other read ([`super::Store::export`] and
//! [`super::Store::import_into_empty`]).
//!
//! # Tables, and which rows refer to which
//!
//! Nothing is renumbered: row ids are copied as they are, because the rows
//! below refer to each other by them, and because the public form of an
//! invite id (in every link handed out) is derived from its row id under the
//! form key. Only `sessions.account_id` is a declared foreign key; the other
//! references are plain columns, kept when the row they name is purged.
//!
//! | table                    | key                     | refers to                                        |
//! |--------------------------|-------------------------|--------------------------------------------------|
//! | `server_secrets`         | `id` = 1 (one row)      | nothing: the form key, which signs forms and     |
//! |                          |                         | derives public invite ids; without it every     |
//! |                          |                         | link and open form breaks                       |
//! | `api_keys`               | `id` (text, drawn)      | nothing                                          |
//! | `accounts`               | `id` (integer, next)    | `invite_id` -> `invites.id`                      |
//! | `invites`                | `id` (integer, drawn:   | `source` = `api/token/<api_keys.id>` or          |
//! |                          | time and random bits)   | `account/<accounts.id>` or `cli`;                |
//! |                          |                         | `reset_account_id`, `used_by` -> `accounts.id`   |
//! | `invite_uses`            | none (insertion order)  | `invite_id` -> `invites.id`,                     |
//! |                          |                         | `account_id` -> `accounts.id` (NULL once deleted)|
//! | `sessions`               | `token_digest`          | `account_id` -> `accounts.id` (FK, cascade)      |
//! | `audit_log`              | `id` (integer, next)    | nothing (`subject` is text)                      |
//! | `webhook_outbox`         | `id` (integer, next)    | `invite_row` -> `invites.id`                     |
//! | `provision_reservations` | `id` (integer, next)    | `invite_id` -> `invites.id`                      |
//!
//! An importer writes the tables in [`Table::ALL`]'s order (accounts before
//! sessions, for the foreign key). Ids marked "next" come from the backend's
//! generator (SQLite's rowid, a PostgreSQL sequence): after an import it must
//! continue above the largest imported id (SQLite's rowid does so by itself;
//! a sequence needs `setval`). Invite ids are drawn, never generated, and a
//! drawn id that is taken is drawn again, so they need nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::crypto::SecretDigest;

/// Every row of a store, read in one consistent transaction.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The schema version the rows were read at; an import refuses a target
    /// at another version, since the rows would not mean the same there.
    pub schema_version: i64,
    /// `server_secrets`: the form key, if one was made yet.
    pub form_key: Option<StoredFormKey>,
    /// `api_keys`, oldest first.
    pub api_keys: Vec<ApiKeyRow>,
    /// `accounts`, by id.
    pub accounts: Vec<AccountRow>,
    /// `invites`, by id.
    pub invites: Vec<InviteRow>,
    /// `invite_uses`, in the order they were written.
    pub invite_uses: Vec<InviteUseRow>,
    /// `sessions`.
    pub sessions: Vec<SessionRow>,
    /// `audit_log`, by id.
    pub audit_log: Vec<AuditRow>,
    /// `webhook_outbox`, by id.
    pub webhook_outbox: Vec<OutboxRow>,
    /// `provision_reservations`, by id.
    pub provision_reservations: Vec<ReservationRow>,
}

impl Dump {
    /// How many rows of each table the dump holds.
    pub fn counts(&self) -> TableCounts {
        let n = |len: usize| len as u64;
        TableCounts(BTreeMap::from([
            (Table::ServerSecrets, u64::from(self.form_key.is_some())),
            (Table::ApiKeys, n(self.api_keys.len())),
            (Table::Accounts, n(self.accounts.len())),
            (Table::Invites, n(self.invites.len())),
            (Table::InviteUses, n(self.invite_uses.len())),
            (Table::Sessions, n(self.sessions.len())),
            (Table::AuditLog, n(self.audit_log.len())),
            (Table::WebhookOutbox, n(self.webhook_outbox.len())),
            (
                Table::ProvisionReservations,
                n(self.provision_reservations.len()),
            ),
        ]))
    }
}

impl std::fmt::Debug for Dump {
    // The rows hold password hashes and the form key: show only their counts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dump")
            .field("schema_version", &self.schema_version)
            .field("counts", &self.counts())
            .finish()
    }
}

/// The form key's bytes as stored. Its `Debug` hides them: it is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredFormKey(pub [u8; crate::crypto::FormKey::LEN]);

impl std::fmt::Debug for StoredFormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredFormKey(..)")
    }
}

/// A row of `api_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// The key's public id.
    pub id: String,
    /// The host it mints for.
    pub host: String,
    /// Its label.
    pub name: Option<String>,
    /// SHA-256 of its secret.
    pub secret_digest: SecretDigest,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// `mint` or `admin`.
    pub scope: String,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Mints allowed per period, if limited.
    pub rate_limit: Option<i64>,
    /// The period of `rate_limit`, in seconds.
    pub rate_period_secs: Option<i64>,
    /// When it last minted, to within a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// How many of its invites purging removed.
    pub invites_purged: i64,
}

/// A row of `accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Row id (sessions, invites and uses refer to it).
    pub id: i64,
    /// Its host.
    pub host: String,
    /// Its name.
    pub name: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// `key <id>`, `account <name>` or `cli`.
    pub invited_by: String,
    /// The invite it registered with.
    pub invite_id: Option<i64>,
    /// When an operator disabled it.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A row of `invites`, with the columns older schemas left (`token_format`,
/// `used_at`, `used_by`), which still say how its token is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    /// Row id; its public form is derived from it under the form key.
    pub id: i64,
    /// SHA-256 of the token (format 1) or of its secret half (format 2).
    pub token_digest: SecretDigest,
    /// 1 or 2 (see the SQLite migrations).
    pub token_format: i64,
    /// Its host.
    pub host: String,
    /// `api/token/<id>`, `account/<id>` or `cli`.
    pub source: String,
    /// The inviter's name.
    pub issuer_name: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// `account` or `reset`.
    pub kind: String,
    /// Uses allowed.
    pub uses_allowed: i64,
    /// Uses spent.
    pub uses_spent: i64,
    /// The operator's note.
    pub note: Option<String>,
    /// The only name that may register with it.
    pub fixed_name: Option<String>,
    /// For a reset invite, the account it resets.
    pub reset_account_id: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it ended (last use or revocation), for purging.
    pub ended_at: Option<DateTime<Utc>>,
    /// When its last use was spent.
    pub used_at: Option<DateTime<Utc>>,
    /// The account that spent its last use.
    pub used_by: Option<i64>,
}

/// A row of `invite_uses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteUseRow {
    /// The invite.
    pub invite_id: i64,
    /// The account, while it exists.
    pub account_id: Option<i64>,
    /// The account's name, kept after it is deleted.
    pub name: String,
    /// When it registered.
    pub used_at: DateTime<Utc>,
}

/// A row of `sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the identity token.
    pub token_digest: SecretDigest,
    /// The account it signs in.
    pub account_id: i64,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When its token was last seen.
    pub last_used_at: DateTime<Utc>,
}

/// A row of `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Row id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The host.
    pub host: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub subject: String,
    /// More.
    pub detail: Option<String>,
}

/// A row of `webhook_outbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// The `webhook-id`.
    pub event_id: String,
    /// The host.
    pub host: String,
    /// The target URL.
    pub url: String,
    /// The event kind.
    pub event: String,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// The invite it is about.
    pub invite_row: Option<i64>,
    /// That invite's source.
    pub source: Option<String>,
    /// The account it is about.
    pub account: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// The last attempt's status.
    pub last_status: Option<String>,
    /// When it is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A worker's lease on it.
    pub claimed_until: Option<DateTime<Utc>>,
    /// When a receiver took it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was given up on.
    pub failed_at: Option<DateTime<Utc>>,
}

/// A row of `provision_reservations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    /// Row id.
    pub id: i64,
    /// The host.
    pub host: String,
    /// The name held.
    pub name: String,
    /// The invite whose use is held.
    pub invite_id: Option<i64>,
    /// When it was taken.
    pub reserved_at: DateTime<Utc>,
    /// When it stops holding anything.
    pub lease_until: DateTime<Utc>,
}

/// The tables of a store, in the order an import writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `server_secrets`
    ServerSecrets,
    /// `api_keys`
    ApiKeys,
    /// `accounts`
    Accounts,
    /// `invites`
    Invites,
    /// `invite_uses`
    InviteUses,
    /// `sessions`
    Sessions,
    /// `audit_log`
    AuditLog,
    /// `webhook_outbox`
    WebhookOutbox,
    /// `provision_reservations`
    ProvisionReservations,
}

impl Table {
    /// Every table, in import order.
    pub const ALL: [Table; 9] = [
        Table::ServerSecrets,
        Table::ApiKeys,
        Table::Accounts,
        Table::Invites,
        Table::InviteUses,
        Table::Sessions,
        Table::AuditLog,
        Table::WebhookOutbox,
        Table::ProvisionReservations,
    ];

    /// The table's name in both backends' schemas.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerSecrets => "server_secrets",
            Self::ApiKeys => "api_keys",
            Self::Accounts => "accounts",
            Self::Invites => "invites",
            Self::InviteUses => "invite_uses",
            Self::Sessions => "sessions",
            Self::AuditLog => "audit_log",
            Self::WebhookOutbox => "webhook_outbox",
            Self::ProvisionReservations => "provision_reservations",
        }
    }
}

/// How many rows each table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounts(pub BTreeMap<Table, u64>);

impl TableCounts {
    /// The rows of `table` (0 when not counted).
    pub fn get(&self, table: Table) -> u64 {
        self.0.get(&table).copied().unwrap_or(0)
    }

    /// The first table holding any row, with its count: what makes a store
    /// not empty.
    pub fn first_nonempty(&self) -> Option<(Table, u64)> {
        Table::ALL
            .into_iter()
            .map(|t| (t, self.get(t)))
            .find(|&(_, n)| n > 0)
    }
}

/// Why [`super::Store::import_into_empty`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The target holds rows already; a copy never merges.
    #[error("the target is not empty: {} holds {rows} row(s); copy-db copies only into an empty database", table.as_str())]
    NotEmpty {
        /// The first table found holding rows.
        table: Table,
        /// How many.
        rows: u64,
    },
    /// The target's schema is at another version than the dump's.
    #[error("the source has schema version {source_version} and the target {target_version}; bring both to the same version first (open each once with this invite-server, or run `invite-server migrate`)")]
    SchemaMismatch {
        /// The dump's version.
        source_version: i64,
        /// The target's.
        target_version: i64,
    },
    /// The target failed while writing; its transaction was rolled back.
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_counts_the_form_key_as_one_row_and_prints_no_rows() {
        let dump = Dump {
            schema_version: 6,
            form_key: Some(StoredFormKey([7; 32])),
            ..Dump::default()
        };
        assert_eq!(dump.counts().get(Table::ServerSecrets), 1);
        assert_eq!(
            dump.counts().first_nonempty(),
            Some((Table::ServerSecrets, 1))
        );
        assert_eq!(Dump::default().counts().first_nonempty(), None);
        let shown = format!("{dump:?}");
        assert!(!shown.contains("7, 7"), "{shown}");
    }
}
