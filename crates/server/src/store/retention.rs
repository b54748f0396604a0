//! Retention: each channel class keeps its own history size and age.

use super::{PruneScope, PublicationStore, StoreError};

/// Applies every channel class's retention once; returns how many publications were deleted.
/// Classes are matched in order, so each prune excludes the patterns listed before it.
pub async fn prune_all(
    store: &dyn PublicationStore,
    config: &crate::Config,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let mut earlier = Vec::new();
    for class in &config.channels {
        if !class.ephemeral {
            let scope = PruneScope {
                pattern: class.pattern.clone(),
                except: earlier.clone(),
            };
            let size = class.history_size.unwrap_or(config.history_size);
            let ttl = class.history_ttl.unwrap_or(config.history_ttl);
            deleted += store.prune(&scope, Some(size as u64), Some(ttl)).await?;
        }
        earlier.push(class.pattern.clone());
    }
    let rest = PruneScope {
        pattern: "*".to_owned(),
        except: earlier,
    };
    deleted += store
        .prune(
            &rest,
            Some(config.history_size as u64),
            Some(config.history_ttl),
        )
        .await?;
    Ok(deleted)
}
