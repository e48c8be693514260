//! The read pool: connections other than the writer's, opened on demand and
//! kept while idle, so reads never wait behind the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::rows::backend;
use super::writer::Health;
use super::{open_flags, BUSY_TIMEOUT};
use crate::store::StoreError;

/// Idle read connections kept open; more are opened under load and closed after.
pub(super) const MAX_IDLE_READERS: usize = 4;
/// Page cache per read connection, in KiB (SQLite's default is 2000). Reads
/// are single indexed rows; a small cache keeps many readers cheap.
pub(super) const READER_CACHE_KIB: i64 = 512;

pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) health: Arc<Health>,
}

impl Readers {
    pub(super) fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(&self.path, open_flags()).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(backend)?;
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.health.check_readable()?;
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        let result = f(&conn);
        self.give_back(conn);
        result
    }

    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}
