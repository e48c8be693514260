//! Managing what was minted: listing, showing, revoking and purging invites,
//! for the `invites` commands (and the admin API, which shares the JSON).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::config::{Config, HostConfig};
use crate::crypto::InviteIds;
use crate::domain::{Invalid, InviteId};
use crate::store::{InviteDetails, InviteStatus, Purged, StatusFilter, Store, StoreError};

/// How many invites one store read returns while a listing pages through.
pub const PAGE: u32 = 500;

/// Parses `pending`, `used`, `expired`, `revoked` or `all`.
pub fn parse_status(s: &str) -> Result<StatusFilter, Invalid> {
    Ok(match s {
        "pending" => StatusFilter::Only(InviteStatus::Pending),
        "used" => StatusFilter::Only(InviteStatus::Used),
        "expired" => StatusFilter::Only(InviteStatus::Expired),
        "revoked" => StatusFilter::Only(InviteStatus::Revoked),
        "all" => StatusFilter::All,
        other => {
            return Err(Invalid::new(format!(
                "unknown status `{}`: use pending, used, expired, revoked or all",
                other.escape_default()
            )))
        }
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An invite as `invites list --json` and the admin API show it.
pub fn invite_json(d: &InviteDetails, ids: &InviteIds, now: DateTime<Utc>) -> Value {
    let i = &d.invite;
    json!({
        "invite_id": ids.public(i.id).as_str(),
        "host": i.host.as_str(),
        "status": i.status_at(now).as_str(),
        "kind": i.kind.as_str(),
        "source": i.source,
        "note": i.note,
        "name": i.fixed_name,
        "uses_allowed": i.uses_allowed,
        "uses_spent": i.uses_spent,
        "created_at": rfc3339(i.created_at),
        "expires_at": rfc3339(i.expires_at),
        "revoked_at": i.revoked_at.map(rfc3339),
        "accounts": d.uses.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
    })
}

/// [`invite_json`] plus when each account registered, for `invites show`.
pub fn invite_details_json(d: &InviteDetails, ids: &InviteIds, now: DateTime<Utc>) -> Value {
    let mut v = invite_json(d, ids, now);
    v["registrations"] = d
        .uses
        .iter()
        .map(|u| json!({ "name": u.name, "registered_at": rfc3339(u.used_at) }))
        .collect();
    v
}

/// One tab-separated line: id, status, uses spent/allowed, created, expires,
/// source, note (tabs and line breaks in the note cannot occur: it is one line).
pub fn invite_line(d: &InviteDetails, ids: &InviteIds, now: DateTime<Utc>) -> String {
    let i = &d.invite;
    format!(
        "{}\t{}\t{}/{}\t{}\t{}\t{}\t{}",
        ids.public(i.id),
        i.status_at(now).as_str(),
        i.uses_spent,
        i.uses_allowed,
        i.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        i.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        i.source,
        i.note.as_deref().unwrap_or(""),
    )
}

/// Every invite of `host` of `status`, newest first, read page by page.
pub async fn list_all(
    store: &dyn Store,
    host: &HostConfig,
    status: StatusFilter,
    now: DateTime<Utc>,
) -> Result<Vec<InviteDetails>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_invites(&host.name, status, after, PAGE, now)
            .await?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|d| d.invite.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// The invite `id` names on `host`; `NotFound` for another host's.
pub async fn find(
    store: &dyn Store,
    ids: &InviteIds,
    host: &HostConfig,
    id: &InviteId,
) -> Result<InviteDetails, StoreError> {
    store.invite_details(&host.name, ids.row_id(id)).await
}

/// Revokes the invite `id` names on `host`, as `actor`.
pub async fn revoke(
    store: &dyn Store,
    ids: &InviteIds,
    host: &HostConfig,
    id: &InviteId,
    actor: &str,
) -> Result<(), StoreError> {
    store
        .revoke_invite(&host.name, ids.row_id(id), actor.to_owned(), Utc::now())
        .await?;
    crate::metrics::invite_revoked();
    Ok(())
}

/// `now - d`, or the earliest time when that is out of range.
fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Deletes `host`'s invites that ended more than `older_than` ago and its
/// sessions past the idle expiry, as `actor`.
pub async fn purge(
    store: &dyn Store,
    config: &Config,
    host: &HostConfig,
    older_than: Duration,
    actor: &str,
) -> Result<Purged, StoreError> {
    let now = Utc::now();
    store
        .purge(
            &host.name,
            ago(now, older_than),
            ago(now, config.session_idle_expiry),
            actor.to_owned(),
            now,
        )
        .await
}

/// The server's own housekeeping: purges every host with the configured
/// `retention`. A failure is logged and the next round tries again.
pub async fn purge_every_host(store: &dyn Store, config: &Config) {
    for host in config.hosts.values() {
        match purge(store, config, host, config.retention, "server").await {
            Ok(p) => tracing::info!(
                host = %host.name,
                invites = p.invites,
                sessions = p.sessions,
                "purged ended invites and idle sessions"
            ),
            Err(error) => tracing::warn!(host = %host.name, %error, "purging failed"),
        }
    }
}
