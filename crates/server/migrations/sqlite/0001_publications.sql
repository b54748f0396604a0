-- Publications for recovery (see src/sql_store.rs). Offsets are per channel, gap-free.

-- One row: the database's epoch, created when the store first opens it.
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- One row per channel that was ever published to; kept when its publications are pruned,
-- so offsets continue.
CREATE TABLE channels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    last_offset INTEGER NOT NULL
);

CREATE TABLE publications (
    channel_id INTEGER NOT NULL REFERENCES channels (id),
    seq INTEGER NOT NULL, -- the publication's offset in its channel
    epoch TEXT NOT NULL,
    ts INTEGER NOT NULL, -- milliseconds since the Unix epoch
    sender TEXT,
    event_type TEXT NOT NULL,
    event_data TEXT NOT NULL, -- JSON text, exactly as published
    PRIMARY KEY (channel_id, seq)
);

CREATE INDEX publications_ts ON publications (ts);
