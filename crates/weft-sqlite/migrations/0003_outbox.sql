-- Weft SQLite schema, version 3: the outbox.
--
-- Effects a transition could not finish within its own operation (the rest
-- of a large flow cascade or flow cancel) are appended here in the same
-- transaction, and applied and deleted by later ticks of the partition's
-- owner, oldest first. Applying and deleting share one transaction, so an
-- entry is applied exactly once whatever crashes.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    partition_id  INTEGER NOT NULL,
    flow_id       TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

-- A partition's entries, oldest first.
CREATE INDEX outbox_partition ON outbox (partition_id, seq);
