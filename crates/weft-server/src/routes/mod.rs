//! Route handlers, one module per area of the contract.

pub(crate) mod executions;
pub(crate) mod flows;
pub(crate) mod ops;
pub(crate) mod signals;
pub(crate) mod workers;
