//! What exists in a database this process alone writes (SQLite): the channels with a row and
//! the users with an inbox row. A connect of a new user then needs no read to learn that its
//! personal channel is empty and that it has no inbox position: on SQLite each read costs
//! two thread switches, which was a third of a connect's CPU.
//!
//! Loaded when the store opens, extended by this process's commits. Not used on PostgreSQL,
//! which other nodes write too.

use std::sync::Arc;

use dashmap::DashSet;

use super::Db;
use super::sql::db_error;
use crate::store::StoreError;

/// Names known to have rows.
#[derive(Debug, Default)]
pub(super) struct Known {
    channels: DashSet<Box<str>>,
    inbox_users: DashSet<Box<str>>,
}

impl Known {
    /// Reads every channel name and inbox user.
    pub(super) async fn load(db: &Db) -> Result<Arc<Known>, StoreError> {
        let known = Known::default();
        let (channels, users): (Vec<(String,)>, Vec<(String,)>) = on_db!(db, pool => {
            let channels = sqlx::query_as("SELECT name FROM channels")
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            let users = sqlx::query_as("SELECT DISTINCT user_id FROM inbox_acks")
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            (channels, users)
        });
        for (name,) in channels {
            known.channels.insert(name.into_boxed_str());
        }
        for (user,) in users {
            known.inbox_users.insert(user.into_boxed_str());
        }
        Ok(Arc::new(known))
    }

    pub(super) fn has_channel(&self, name: &str) -> bool {
        self.channels.contains(name)
    }

    pub(super) fn add_channel(&self, name: &str) {
        if !self.channels.contains(name) {
            self.channels.insert(Box::from(name));
        }
    }

    pub(super) fn has_inbox(&self, user: &str) -> bool {
        self.inbox_users.contains(user)
    }

    pub(super) fn add_inbox(&self, user: &str) {
        if !self.inbox_users.contains(user) {
            self.inbox_users.insert(Box::from(user));
        }
    }
}
