//! Webhooks: signed HTTP POSTs of what happens on the node, from a durable queue.
//!
//! Events are written to the store's [`WebhookQueue`](crate::webhook_queue::WebhookQueue)
//! (a publication's in the same transaction as the publication), and a background worker
//! delivers them with retries and exponential backoff. Messaging never waits for a receiver:
//! a slow or failing endpoint only grows the queue.
//!
//! Every request carries:
//! - `X-Tidings-Event-Id`: the event id; the same event retried keeps it (idempotency key),
//! - `X-Tidings-Event`: the kind, e.g. `message.published`,
//! - `X-Tidings-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! To verify, recompute the HMAC over the timestamp, a dot and the raw body, compare in
//! constant time, and reject timestamps too far from now.

use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::auth::channel_matches;
use crate::config::{WebhookDelivery, WebhookEndpoint};
use crate::store::{Publication, WebhookOutbox};
use crate::time::now_ms;
use crate::webhook_queue::WebhookRecord;

/// Every event kind an endpoint can ask for.
pub const EVENT_KINDS: [&str; 5] = [
    "message.published",
    "user.connected",
    "user.disconnected",
    "channel.joined",
    "channel.left",
];

/// The node's webhook endpoints and the client that calls them.
pub(crate) struct Webhooks {
    endpoints: Vec<WebhookEndpoint>,
    delivery: WebhookDelivery,
    client: reqwest::Client,
}

impl Webhooks {
    /// `None` when no endpoint is configured.
    pub(crate) fn new(
        endpoints: &[WebhookEndpoint],
        delivery: &WebhookDelivery,
    ) -> Option<Arc<Webhooks>> {
        if endpoints.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(delivery.timeout)
            .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
            .build()
            .ok()?;
        Some(Arc::new(Webhooks {
            endpoints: endpoints.to_vec(),
            delivery: delivery.clone(),
            client,
        }))
    }

    /// Records for one event, one per endpoint that wants it.
    pub(crate) fn records(
        &self,
        kind: &str,
        channel: Option<&str>,
        data: Value,
    ) -> Vec<WebhookRecord> {
        let wanted: Vec<&WebhookEndpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.events.is_empty() || e.events.iter().any(|k| k == kind))
            .filter(|e| match channel {
                Some(channel) if !e.channels.is_empty() => e
                    .channels
                    .iter()
                    .any(|pattern| channel_matches(pattern, channel)),
                _ => true,
            })
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let id = format!("evt_{:032x}", rand::random::<u128>());
        let now = now_ms();
        let body = json!({"id": id, "type": kind, "created_at": now, "data": data}).to_string();
        wanted
            .into_iter()
            .map(|endpoint| WebhookRecord {
                id: id.clone(),
                endpoint: endpoint.url.clone(),
                body: body.clone(),
                attempts: 0,
                next_at: now,
            })
            .collect()
    }

    /// `message.published` records for a stored publication.
    pub(crate) fn for_publication(&self, publication: &Publication) -> Vec<WebhookRecord> {
        let event: Value = serde_json::to_value(&publication.event).unwrap_or(Value::Null);
        let data = json!({
            "channel": &*publication.channel,
            "offset": publication.offset,
            "epoch": &*publication.epoch,
            "ts": publication.ts,
            "sender": publication.sender.as_deref(),
            "event": event,
        });
        self.records("message.published", Some(&publication.channel), data)
    }

    /// Queues an event that has no publication (connects, joins), without making the caller
    /// wait for the store.
    pub(crate) fn emit(
        &self,
        queue: &Arc<dyn WebhookOutbox>,
        kind: &str,
        channel: Option<&str>,
        data: Value,
    ) {
        let records = self.records(kind, channel, data);
        if records.is_empty() {
            return;
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            if let Err(e) = queue.enqueue(records).await {
                tracing::warn!(error = %e, "cannot queue webhook event");
            }
        });
    }

    fn secret(&self, url: &str) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|e| e.url == url)
            .map(|e| e.secret.as_str())
    }

    /// Delay before attempt `attempts + 1`: exponential with jitter (half to full).
    fn backoff(&self, attempts: u32) -> Duration {
        let min = self.delivery.retry_min.as_millis() as u64;
        let max = self.delivery.retry_max.as_millis() as u64;
        let cap = min.saturating_mul(1u64 << attempts.min(30)).min(max).max(1);
        Duration::from_millis(cap / 2 + rand::random_range(0..=cap / 2))
    }

    /// Sends one record; `Ok` on any 2xx.
    async fn send(&self, record: &WebhookRecord) -> Result<(), String> {
        let secret = self
            .secret(&record.endpoint)
            .ok_or("endpoint no longer configured")?;
        let timestamp = now_ms() / 1000;
        let kind = serde_json::from_str::<Value>(&record.body)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let response = self
            .client
            .post(&record.endpoint)
            .header("content-type", "application/json")
            .header("x-tidings-event-id", &record.id)
            .header("x-tidings-event", kind)
            .header(
                "x-tidings-signature",
                signature(secret, timestamp, &record.body),
            )
            .body(record.body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status()))
        }
    }
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC accepts keys of any length; this branch cannot be taken.
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Delivers due records until the node is gone.
pub(crate) async fn run_worker(webhooks: Arc<Webhooks>, outbox: Weak<dyn WebhookOutbox>) {
    let batch = 32;
    let mut last_backlog_report = 0u64;
    loop {
        // Holding only a weak handle between rounds lets the node drop its store.
        let Some(queue) = outbox.upgrade() else {
            return;
        };
        let now = now_ms();
        let lease = now + webhooks.delivery.timeout.as_millis() as u64 + 5_000;
        let due = match queue.claim_due(now, batch, lease).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook queue");
                Vec::new()
            }
        };
        let hooks = &*webhooks;
        let sends = due.iter().map(|record| async move {
            let result = hooks.send(record).await;
            (record, result)
        });
        for (record, result) in futures_util::future::join_all(sends).await {
            metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS).increment(1);
            let outcome = match result {
                Ok(()) => queue.complete(&record.id, &record.endpoint).await,
                Err(reason) => {
                    metrics::counter!(crate::metrics::WEBHOOK_FAILURES).increment(1);
                    let attempts = record.attempts + 1;
                    if attempts >= webhooks.delivery.max_attempts {
                        tracing::error!(id = %record.id, endpoint = %record.endpoint, %reason, attempts, "webhook given up");
                        metrics::counter!(crate::metrics::WEBHOOK_ABANDONED).increment(1);
                        queue.complete(&record.id, &record.endpoint).await
                    } else {
                        tracing::debug!(id = %record.id, endpoint = %record.endpoint, %reason, attempts, "webhook failed; will retry");
                        let next = now_ms() + webhooks.backoff(record.attempts).as_millis() as u64;
                        queue
                            .reschedule(&record.id, &record.endpoint, attempts, next)
                            .await
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "cannot update the webhook queue");
            }
        }
        if now >= last_backlog_report + 5_000 {
            last_backlog_report = now;
            if let Ok(backlog) = queue.backlog().await {
                metrics::gauge!(crate::metrics::WEBHOOK_BACKLOG).set(backlog as f64);
            }
        }
        let full = due.len() == batch;
        drop(queue);
        if !full {
            tokio::time::sleep(webhooks.delivery.poll_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str, events: &[&str], channels: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint {
            url: url.into(),
            secret: "s".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            channels: channels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn records_go_to_the_endpoints_that_want_them() {
        let hooks = Webhooks::new(
            &[
                endpoint("http://all", &[], &[]),
                endpoint("http://tickets", &["message.published"], &["ticket:*"]),
            ],
            &WebhookDelivery::default(),
        )
        .unwrap_or_else(|| unreachable!());
        let both = hooks.records("message.published", Some("ticket:1"), json!({}));
        assert_eq!(both.len(), 2);
        assert_eq!(
            both.first().map(|r| &r.id),
            both.get(1).map(|r| &r.id),
            "one id per event"
        );
        assert_eq!(
            hooks
                .records("message.published", Some("lobby"), json!({}))
                .len(),
            1
        );
        assert_eq!(hooks.records("user.connected", None, json!({})).len(), 1);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value computed with: printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, "{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let delivery = WebhookDelivery {
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..WebhookDelivery::default()
        };
        let hooks = Webhooks::new(&[endpoint("http://x", &[], &[])], &delivery)
            .unwrap_or_else(|| unreachable!());
        for _ in 0..50 {
            let first = hooks.backoff(0).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let late = hooks.backoff(20).as_millis();
            assert!((500..=1000).contains(&late), "{late}");
        }
    }
}
