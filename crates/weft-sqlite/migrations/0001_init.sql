-- Weft SQLite schema, version 1.
--
-- Every execution row carries its partition; the columns next to `body`
-- (state, lane, capset, priority, ready_at_ms) are the execution's index and
-- are always rewritten together with the body in the same transaction.
-- Each index costs a page write per commit, so there are few of them.

-- Store-wide facts fixed at first initialisation (the partition count).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per execution; `body` is the serde_json form of weft_core::Execution
-- without its payload, which never changes after submit and lives in
-- `payloads`, so that a transition rewrites a small row and not the payload.
CREATE TABLE executions (
    id           TEXT PRIMARY KEY,
    partition_id INTEGER NOT NULL,
    state        TEXT NOT NULL,
    lane         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    capset       TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    ready_at_ms  INTEGER NOT NULL,
    flow_id      TEXT,
    payload_id   INTEGER NOT NULL,
    body         TEXT NOT NULL
) STRICT;

-- Payloads (JSON text), written once at submit; a rowid table so inserts
-- append.
CREATE TABLE payloads (
    id      INTEGER PRIMARY KEY,
    payload TEXT NOT NULL
) STRICT;

-- The ready index: claims read it in priority, then age, then id order.
CREATE INDEX executions_ready
    ON executions (partition_id, lane, capset, priority DESC, ready_at_ms, id)
    WHERE state = 'waiting';

-- Lists filtered by state (in id order, lane read from the index when also
-- filtered by lane) and lane depths (covering). State changes rewrite this
-- index, so it is the only one besides the ready index that does.
CREATE INDEX executions_state ON executions (state, id, lane);

-- Lists filtered by lane alone; never rewritten by a state change.
CREATE INDEX executions_lane ON executions (lane, id);

-- Lists of one flow's members.
CREATE INDEX executions_flow ON executions (flow_id, id) WHERE flow_id IS NOT NULL;

-- One row per attempt; attempts of an execution are numbered from 1.
CREATE TABLE attempts (
    execution_id  TEXT NOT NULL,
    number        INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    state         TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    error         TEXT,
    PRIMARY KEY (execution_id, number)
) STRICT, WITHOUT ROWID;

-- The due-index, keyed in firing order so that it is its own index: a
-- transition that clears or sets a timer touches one b-tree. At most one
-- timer of each kind per execution is kept by the transitions' diffs (and
-- checked by the audit), not by a key.
CREATE TABLE timers (
    partition_id INTEGER NOT NULL,
    due_ms       INTEGER NOT NULL,
    execution_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    PRIMARY KEY (partition_id, due_ms, execution_id, kind)
) STRICT, WITHOUT ROWID;

-- Idempotency keys of live executions; removed with the execution.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Live engine instances; a lapsed row is deleted by the next rebalance.
CREATE TABLE engine_instances (
    instance_id   TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Partition leases held by engine instances.
CREATE TABLE partition_owners (
    partition_id  INTEGER PRIMARY KEY,
    instance_id   TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
