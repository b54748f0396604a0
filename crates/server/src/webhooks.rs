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

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::channel_matches;
use crate::config::{WebhookDelivery, WebhookEndpoint};
use crate::store::{Publication, WebhookOutbox};

#[cfg(feature = "webhooks")]
mod delivery;
use crate::time::now_ms;
use crate::webhook_queue::WebhookRecord;
#[cfg(feature = "webhooks")]
pub use delivery::signature;
#[cfg(feature = "webhooks")]
pub(crate) use delivery::spawn_worker;

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
    #[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
    delivery: WebhookDelivery,
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
        Some(Arc::new(Webhooks {
            endpoints: endpoints.to_vec(),
            delivery: delivery.clone(),
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
}
