//! The server's own secrets: the form key every node shares.

use deadpool_postgres::GenericClient;

use super::rows::{backend, corrupt, get};
use crate::crypto::FormKey;
use crate::store::StoreError;

/// Stores `candidate` unless a key is stored already, and returns the
/// stored key: nodes starting at once on a new database all insert, the
/// first commit wins (ON CONFLICT leaves it), and each reads back that one.
pub(super) async fn form_key(
    db: &impl GenericClient,
    candidate: [u8; FormKey::LEN],
) -> Result<FormKey, StoreError> {
    let read = db
        .prepare_cached("SELECT form_key FROM server_secrets WHERE id = 1")
        .await
        .map_err(backend)?;
    // Almost always there already: read it without writing, so read-only
    // commands work against a read-only role or replica.
    if let Some(row) = db.query_opt(&read, &[]).await.map_err(backend)? {
        return key_of(&row);
    }
    let st = db
        .prepare_cached(
            "INSERT INTO server_secrets (id, form_key) VALUES (1, $1)
             ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(backend)?;
    db.execute(&st, &[&candidate.as_slice()])
        .await
        .map_err(backend)?;
    key_of(&db.query_one(&read, &[]).await.map_err(backend)?)
}

fn key_of(row: &tokio_postgres::Row) -> Result<FormKey, StoreError> {
    <[u8; FormKey::LEN]>::try_from(get::<&[u8]>(row, 0)?)
        .map(FormKey::from_bytes)
        .map_err(|_| corrupt("the stored form key has the wrong length"))
}
