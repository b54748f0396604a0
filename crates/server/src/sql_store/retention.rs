//! Retention on SQL: delete by count per channel and by age; channel rows stay, so offsets
//! continue.

use std::time::Duration;

use super::sql::{DELETE_BEFORE, DELETE_UP_TO, OVER_COUNT, clamp_i64, db_error};
use super::{Db, SqlStore};
use crate::store::{PruneScope, StoreError};

impl SqlStore {
    pub(super) async fn do_prune(
        &self,
        scope: &PruneScope,
        max_count: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let (filter, names) = scope_filter(scope);
        let mut deleted = 0;
        if let Some(keep) = max_count {
            let keep = clamp_i64(keep);
            // One short delete per channel over its key range, so appends wait little.
            let sql = format!("{OVER_COUNT} AND {filter}");
            let over: Vec<(i64, i64)> = on_db!(&self.reader, pool => {
                let mut query = sqlx::query_as(&sql).bind(keep);
                for name in &names {
                    query = query.bind(name);
                }
                query.fetch_all(pool).await.map_err(db_error)?
            });
            for (id, last) in over {
                deleted += on_db!(&self.writer, pool => {
                    sqlx::query(DELETE_UP_TO)
                        .bind(id)
                        .bind(last.saturating_sub(keep))
                        .execute(pool)
                        .await
                        .map_err(db_error)?
                        .rows_affected()
                });
            }
        }
        if let Some(age) = max_age {
            let cutoff = clamp_i64(crate::time::ms_ago(age));
            let sql = format!(
                "{DELETE_BEFORE} AND channel_id IN (SELECT c.id FROM channels c WHERE {filter})"
            );
            deleted += on_db!(&self.writer, pool => {
                let mut query = sqlx::query(&sql).bind(cutoff);
                for name in &names {
                    query = query.bind(name);
                }
                query.execute(pool).await.map_err(db_error)?.rows_affected()
            });
        }
        Ok(deleted)
    }
}

/// A SQL condition on `c.name` for a prune scope, with the values to bind after the query's
/// own first parameter (so they are `$2`, `$3`, ...).
fn scope_filter(scope: &PruneScope) -> (String, Vec<String>) {
    let mut conditions = vec!["1 = 1".to_owned()];
    let mut names = Vec::new();
    let mut add = |pattern: &str, negate: bool| {
        let not = if negate { "NOT " } else { "" };
        let placeholder = format!("${}", names.len() + 2);
        match pattern.strip_suffix('*') {
            // `*` alone: everything (nothing to add) or, excluded, nothing at all.
            Some("") => {
                if negate {
                    conditions.push("1 = 0".to_owned());
                }
            }
            Some(prefix) => {
                conditions.push(format!("{not}c.name LIKE {placeholder} ESCAPE '!'"));
                let escaped = prefix
                    .replace('!', "!!")
                    .replace('%', "!%")
                    .replace('_', "!_");
                names.push(format!("{escaped}%"));
            }
            None => {
                conditions.push(format!("{not}c.name = {placeholder}"));
                names.push(pattern.to_owned());
            }
        }
    };
    add(&scope.pattern, false);
    for pattern in &scope.except {
        add(pattern, true);
    }
    (conditions.join(" AND "), names)
}
