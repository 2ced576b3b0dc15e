-- Weft SQLite schema, version 2: flows.
--
-- A flow's members are ordinary rows of `executions` (with `flow_id` set) on
-- the flow's partition; the flow itself is one row here. Every member
-- transition rewrites the flow row in the same transaction, so `body`'s
-- counts always match the members.

-- One row per flow; `body` is the serde_json form of weft_core::flow::Flow
-- (nodes, edges, counts, state). `state` copies the body's state for the
-- listing index and is rewritten with the body.
CREATE TABLE flows (
    id            TEXT PRIMARY KEY,
    partition_id  INTEGER NOT NULL,
    state         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    body          TEXT NOT NULL
) STRICT;

-- Flow lists filtered by state, in id order.
CREATE INDEX flows_state ON flows (state, id);

-- Idempotency keys of live flows, in a namespace of their own (a flow key
-- and an execution key may be equal); removed with the flow.
CREATE TABLE flow_idempotency_keys (
    key     TEXT PRIMARY KEY,
    flow_id TEXT NOT NULL
) STRICT, WITHOUT ROWID;
