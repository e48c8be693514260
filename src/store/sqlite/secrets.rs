//! SQL for the secrets every server on one database shares: the key that
//! signs registration forms.

use rusqlite::{Connection, OptionalExtension};

use super::rows::backend;
use crate::crypto::FormKey;
use crate::store::StoreError;

/// The stored form key, if one is (a stored value of the wrong length counts
/// as none, and the insert below then reports it).
pub(super) fn stored_form_key(conn: &Connection) -> Result<Option<FormKey>, StoreError> {
    let stored = conn
        .query_row(
            "SELECT form_key FROM server_secrets WHERE id = 1",
            [],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()
        .map_err(backend)?;
    Ok(stored
        .and_then(|k| <[u8; FormKey::LEN]>::try_from(k.as_slice()).ok())
        .map(FormKey::from_bytes))
}

/// Stores `candidate` unless a key is stored already, and returns the key
/// stored: the first of several servers starting at once wins.
pub(super) fn insert_form_key(
    conn: &Connection,
    candidate: &[u8; FormKey::LEN],
) -> Result<FormKey, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO server_secrets (id, form_key) VALUES (1, ?1)",
        [candidate.as_slice()],
    )
    .map_err(backend)?;
    let stored: Vec<u8> = conn
        .query_row(
            "SELECT form_key FROM server_secrets WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    <[u8; FormKey::LEN]>::try_from(stored.as_slice())
        .map(FormKey::from_bytes)
        .map_err(|_| StoreError::permanent("the stored form key has the wrong length"))
}
