//! The admin API's use cases over the invite and account services: a page
//! of a host's invites with its cursor, minting (plain or reset) with an
//! admin key, and a host's accounts, each in the shape the CLI prints.

use chrono::{DateTime, Utc};

use super::accounts::{self, AccountView};
use super::keys::VerifiedKey;
use super::{mint_invite, MintedInvite, Minter};
use crate::config::HostConfig;
use crate::crypto::InviteIds;
use crate::domain::{AccountName, InviteId, InviteOptions};
use crate::store::{InviteDetails, StatusFilter, Store, StoreError};

/// One page of a listing and the cursor of the next, if there is one.
#[derive(Debug)]
pub struct Page {
    /// The invites of this page, newest first.
    pub invites: Vec<InviteDetails>,
    /// The public id of the last invite when more follow: passed back as
    /// `after`, it resumes right behind it, so pages neither repeat nor skip.
    pub next: Option<InviteId>,
}

/// At most `limit` of `host`'s invites of `status` at `now`, newest first,
/// starting behind the invite `after` names (a cursor from an earlier page).
pub async fn page(
    store: &dyn Store,
    ids: &InviteIds,
    host: &HostConfig,
    status: StatusFilter,
    after: Option<&InviteId>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Page, StoreError> {
    let after = after.map(|id| ids.row_id(id));
    // One more than asked tells whether another page follows.
    let mut invites = store
        .list_invites(&host.name, status, after, limit.saturating_add(1), now)
        .await?;
    let more = invites.len() > limit as usize;
    invites.truncate(limit as usize);
    let next = invites
        .last()
        .filter(|_| more)
        .map(|d| ids.public(d.invite.id));
    Ok(Page { invites, next })
}

/// What an admin key asks to mint.
#[derive(Debug)]
pub enum Mint {
    /// An invite to register with, with these options.
    Invite(InviteOptions),
    /// A password-reset invite for the existing account `name`.
    Reset {
        /// The account.
        name: AccountName,
        /// How long it stays valid (already within the host's maximum).
        ttl: std::time::Duration,
    },
}

/// Mints what `what` asks for with `key` on `host`, recorded as from the key
/// and, for a reset, audited as `key <id>`. Returns the invite and its
/// stored record, as listings show it. `NotFound` for a reset of an account
/// that does not exist, or when the key was deleted meanwhile.
pub async fn mint(
    store: &dyn Store,
    host: &HostConfig,
    key: &VerifiedKey,
    what: &Mint,
) -> Result<(MintedInvite, InviteDetails), StoreError> {
    let minted = match what {
        Mint::Invite(options) => {
            mint_invite(store, host, Minter::Key(&key.record), options).await?
        }
        Mint::Reset { name, ttl } => {
            let source = Minter::Key(&key.record).source();
            accounts::mint_reset(store, host, name, *ttl, source, &key.actor()).await?
        }
    };
    let details = store.invite_details(&host.name, minted.row_id).await?;
    Ok((minted, details))
}

/// `host`'s accounts, oldest first, as `accounts list --json` shows them.
pub async fn accounts(
    store: &dyn Store,
    ids: &InviteIds,
    host: &HostConfig,
) -> Result<Vec<AccountView>, StoreError> {
    let all = store.list_accounts(&host.name).await?;
    Ok(all.iter().map(|a| AccountView::of(a, ids)).collect())
}
