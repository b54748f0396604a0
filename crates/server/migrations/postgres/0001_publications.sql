-- Publications for recovery (see src/sql_store.rs). Offsets are per channel, gap-free, also
-- across several server processes sharing this database.

-- One row: the database's epoch, created when the store first opens it.
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per channel that was ever published to; kept when its publications are pruned,
-- so offsets continue. `last_offset` is bumped under the row lock by every append.
CREATE TABLE channels (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    last_offset BIGINT NOT NULL
);

CREATE TABLE publications (
    channel_id BIGINT NOT NULL REFERENCES channels (id),
    seq BIGINT NOT NULL, -- the publication's offset in its channel
    epoch TEXT NOT NULL,
    ts BIGINT NOT NULL, -- milliseconds since the Unix epoch
    sender TEXT,
    event_type TEXT NOT NULL,
    event_data TEXT NOT NULL, -- JSON text, exactly as published
    PRIMARY KEY (channel_id, seq)
);

CREATE INDEX publications_ts ON publications (ts);
