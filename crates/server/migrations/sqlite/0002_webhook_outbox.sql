-- Webhook deliveries waiting to be sent (see src/webhooks.rs). Written in the same
-- transaction as the publication they describe; deleted once delivered.
CREATE TABLE webhook_outbox (
    id TEXT NOT NULL,        -- event id, the receiver's idempotency key
    endpoint TEXT NOT NULL,  -- URL
    body TEXT NOT NULL,      -- JSON, exactly as sent
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL, -- ms since the Unix epoch: due time, or end of a worker's lease
    PRIMARY KEY (id, endpoint)
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at);
