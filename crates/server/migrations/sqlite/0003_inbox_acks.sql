-- The offline inbox (see src/sql_store/inbox.rs): per user and device, the last offset of the
-- personal channel `user:{id}` the device acknowledged.
CREATE TABLE inbox_acks (
    user_id TEXT NOT NULL,
    device TEXT NOT NULL,
    epoch TEXT NOT NULL,
    acked INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, -- ms since the Unix epoch
    PRIMARY KEY (user_id, device)
);
