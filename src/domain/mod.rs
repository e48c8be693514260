//! Types that carry their own validation: once a value of one of these types
//! exists, it is known to be well formed.

mod account_name;
mod api_key;
mod host_name;
mod invite_id;
mod invite_options;
mod key_options;
mod password;
mod token;

pub use account_name::AccountName;
pub use api_key::{ApiKey, KeyId, KeySecret};
pub use host_name::HostName;
pub use invite_id::InviteId;
pub use invite_options::{InviteOptions, RawInviteOptions, MAX_NOTE_CHARS};
pub use key_options::{KeyScope, MintRate};
pub use password::Password;
pub use token::{IdentityToken, InviteLookup, InviteSecret, InviteToken, LEGACY_INVITE_ID_LIMIT};

/// Why a value was refused; the text is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
