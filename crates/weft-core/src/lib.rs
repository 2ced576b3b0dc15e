//! Weft's core: ids and partition math, the data model, the execution state
//! machine as pure functions, and the `Store` trait every backend implements.
//! No I/O happens here.
//!
//! ```
//! use weft_core::{machine, ExecutionId, MachineConfig, PartitionId, State, SubmitParams};
//!
//! let config = MachineConfig::default();
//! let id = ExecutionId::mint(PartitionId(0), 1_000);
//! let params = SubmitParams::new("email.send", serde_json::json!({"to": "a@example.com"}));
//! let created = machine::submit(id, &params, 1_000, &config).unwrap();
//! assert_eq!(created.execution.unwrap().state, State::Waiting);
//! ```

#![warn(missing_docs)]

mod board;
mod clock;
mod counting;
mod error;
pub mod flow;
mod ids;
pub mod machine;
mod model;
mod store;
pub mod token;
pub mod waitpoint;

pub use board::{claim_waiting, ReadyBoard, BOARD_LANES_MAX, SWEEP_INTERVAL};
pub use clock::{Clock, ManualClock, SystemClock};
pub use counting::CountingStore;
pub use error::{Error, Result};
pub use ids::{
    fnv1a64, partition_for_key, AttemptNumber, ExecutionId, FlowId, LeaseEpoch, LeaseId,
    PartitionCount, PartitionId, PARTITION_COUNT_DEFAULT, PARTITION_COUNT_MAX,
};
pub use machine::{
    AttemptChange, Command, IndexKey, LeaseRef, MachineConfig, Outcome, Timer, TimerKind,
    Transition, CANCEL_REASON_LEN_MAX, RETENTION_MS_DEFAULT,
};
pub use model::*;
pub use store::{
    check_batch, claim_across, claim_detached, page_cut, release_claimed, AuditReport,
    CancelParams, ClaimParams, CompleteParams, DueHint, FailParams, FlowCreated, FlowListParams,
    FlowPage, HeartbeatParams, HeartbeatReply, LaneDepth, ListParams, Page, PartitionOwner,
    RebalanceParams, ReconcileReport, ReleaseParams, SignalParams, Store, StoreEvent, Submitted,
    SuspendParams, TickReport, BATCH_MAX, CLAIM_LANES_MAX, LIST_LIMIT_MAX,
};
