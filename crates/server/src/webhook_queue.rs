//! The durable queue behind webhooks: records waiting to be delivered, claimed by a worker
//! with a lease, completed or rescheduled. Stores implement [`WebhookQueue`]; durable ones
//! write a publication's records in the same transaction as the publication.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::store::StoreError;

/// One webhook delivery waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// The event id (also the idempotency key receivers see); unique per endpoint.
    pub id: String,
    /// The endpoint URL it goes to.
    pub endpoint: String,
    /// The JSON body, exactly as it will be sent.
    pub body: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it may be (re)tried, milliseconds since the Unix epoch.
    pub next_at: u64,
}

/// A store of pending webhook deliveries.
#[async_trait]
pub trait WebhookQueue: Send + Sync {
    /// Adds records.
    async fn enqueue(&self, records: Vec<WebhookRecord>) -> Result<(), StoreError>;

    /// Takes up to `limit` records due at `now`, leasing each until `lease_until` so that no
    /// other worker (on any node) takes it meanwhile.
    async fn claim_due(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<WebhookRecord>, StoreError>;

    /// Removes a delivered (or abandoned) record.
    async fn complete(&self, id: &str, endpoint: &str) -> Result<(), StoreError>;

    /// Records a failed attempt and when to try again.
    async fn reschedule(
        &self,
        id: &str,
        endpoint: &str,
        attempts: u32,
        next_at: u64,
    ) -> Result<(), StoreError>;

    /// How many records wait.
    async fn backlog(&self) -> Result<u64, StoreError>;
}

/// A webhook queue in memory (for the in-memory store: lost on restart, like its history).
#[derive(Debug, Default)]
pub struct MemoryWebhookQueue {
    records: Mutex<HashMap<(String, String), WebhookRecord>>,
}

impl MemoryWebhookQueue {
    /// Adds records at once (the memory store's atomic append).
    pub(crate) fn insert(&self, records: Vec<WebhookRecord>) {
        let mut all = self.lock();
        for record in records {
            all.insert((record.id.clone(), record.endpoint.clone()), record);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), WebhookRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl WebhookQueue for MemoryWebhookQueue {
    async fn enqueue(&self, records: Vec<WebhookRecord>) -> Result<(), StoreError> {
        self.insert(records);
        Ok(())
    }

    async fn claim_due(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        let mut all = self.lock();
        let mut due: Vec<&mut WebhookRecord> =
            all.values_mut().filter(|r| r.next_at <= now).collect();
        due.sort_by_key(|r| r.next_at);
        let claimed = due
            .into_iter()
            .take(limit)
            .map(|record| {
                let taken = record.clone();
                record.next_at = lease_until;
                taken
            })
            .collect();
        Ok(claimed)
    }

    async fn complete(&self, id: &str, endpoint: &str) -> Result<(), StoreError> {
        self.lock().remove(&(id.to_owned(), endpoint.to_owned()));
        Ok(())
    }

    async fn reschedule(
        &self,
        id: &str,
        endpoint: &str,
        attempts: u32,
        next_at: u64,
    ) -> Result<(), StoreError> {
        if let Some(record) = self.lock().get_mut(&(id.to_owned(), endpoint.to_owned())) {
            record.attempts = attempts;
            record.next_at = next_at;
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        Ok(self.lock().len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, next_at: u64) -> WebhookRecord {
        WebhookRecord {
            id: id.into(),
            endpoint: "http://x".into(),
            body: "{}".into(),
            attempts: 0,
            next_at,
        }
    }

    #[tokio::test]
    async fn claims_lease_and_reschedule() -> Result<(), StoreError> {
        let queue = MemoryWebhookQueue::default();
        queue
            .enqueue(vec![record("a", 10), record("b", 20), record("c", 99)])
            .await?;
        let claimed = queue.claim_due(50, 10, 1000).await?;
        assert_eq!(
            claimed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        // Leased: not claimable again before the lease ends.
        assert!(queue.claim_due(60, 10, 1000).await?.is_empty());
        queue.complete("a", "http://x").await?;
        queue.reschedule("b", "http://x", 1, 70).await?;
        assert_eq!(queue.backlog().await?, 2);
        let again = queue.claim_due(80, 10, 2000).await?;
        assert_eq!(
            again
                .iter()
                .map(|r| (r.id.as_str(), r.attempts))
                .collect::<Vec<_>>(),
            vec![("b", 1)]
        );
        Ok(())
    }
}
