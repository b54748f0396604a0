//! Delivering webhook records: signed POSTs with retries, by one worker per node (the
//! `webhooks` cargo feature: reqwest, HMAC-SHA256).

use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::Webhooks;
use crate::store::WebhookOutbox;
use crate::time::now_ms;
use crate::webhook_queue::WebhookRecord;

impl Webhooks {
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
}

/// Starts the delivery worker; fails when the HTTP client cannot be built (no TLS roots).
pub(crate) fn spawn_worker(
    runtime: &tokio::runtime::Handle,
    webhooks: Arc<Webhooks>,
    outbox: Weak<dyn WebhookOutbox>,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(webhooks.delivery.timeout)
        .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
        // A receiver's redirect is not followed: the signed body goes where it was configured.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    runtime.spawn(run_worker(client, webhooks, outbox));
    Ok(())
}

/// Sends one record; `Ok` on any 2xx.
async fn send(
    client: &reqwest::Client,
    hooks: &Webhooks,
    record: &WebhookRecord,
) -> Result<(), String> {
    let secret = hooks
        .secret(&record.endpoint)
        .ok_or("endpoint no longer configured")?;
    let timestamp = now_ms() / 1000;
    let kind = serde_json::from_str::<Value>(&record.body)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let response = client
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
async fn run_worker(
    client: reqwest::Client,
    webhooks: Arc<Webhooks>,
    outbox: Weak<dyn WebhookOutbox>,
) {
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
        let (hooks, client) = (&*webhooks, &client);
        let sends = due.iter().map(|record| async move {
            let result = send(client, hooks, record).await;
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
    use crate::config::WebhookDelivery;

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
        let hooks =
            Webhooks::new(&[endpoint("http://x")], &delivery).unwrap_or_else(|| unreachable!());
        for _ in 0..50 {
            let first = hooks.backoff(0).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let late = hooks.backoff(20).as_millis();
            assert!((500..=1000).contains(&late), "{late}");
        }
    }

    fn endpoint(url: &str) -> crate::config::WebhookEndpoint {
        crate::config::WebhookEndpoint {
            url: url.into(),
            secret: "s".into(),
            events: Vec::new(),
            channels: Vec::new(),
        }
    }
}
