//! The engine's settings, their defaults and their bounds.
//!
//! Every field is checked once, by [`EngineConfig::validate`], when the engine
//! starts; the loops then trust the values.

use std::time::Duration;

use weft_core::{check_name, Error, Result};

/// How long an instance's membership and partition leases last without
/// renewal: 10 s. An instance that dies loses its partitions about this long
/// after its last renewal.
pub const OWNERSHIP_LEASE_MS_DEFAULT: i64 = 10_000;
/// The shortest ownership lease accepted. Below this, renewals every third of
/// a lease would be a hot loop and a scheduling hiccup would drop ownership.
pub const OWNERSHIP_LEASE_MS_MIN: i64 = 100;
/// The longest ownership lease accepted: 1 h.
pub const OWNERSHIP_LEASE_MS_MAX: i64 = 3_600_000;
/// Most timers one `partition_tick` applies: 256.
pub const TICK_BATCH_MAX_DEFAULT: u32 = 256;
/// The largest `tick_batch_max` accepted; bigger batches hold one store
/// transaction (or one Lua call) too long.
pub const TICK_BATCH_MAX_BOUND: u32 = 10_000;
/// Most full-batch ticks of one partition per wake before the drain turns to
/// other partitions: 16.
pub const DRAIN_TICKS_MAX_DEFAULT: u32 = 16;
/// The largest `drain_ticks_max` accepted.
pub const DRAIN_TICKS_MAX_BOUND: u32 = 1_000;
/// The longest a partition goes untouched when no timer of it is known to be
/// due sooner: 5 s. It bounds the delay when a due hint is lost.
pub const IDLE_POLL_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// The shortest `idle_poll_max` accepted.
pub const IDLE_POLL_MAX_MIN: Duration = Duration::from_millis(10);
/// The longest `idle_poll_max` accepted.
pub const IDLE_POLL_MAX_MAX: Duration = Duration::from_secs(3_600);
/// How long one store call may take before the engine gives up on it: 5 s.
pub const STORE_CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// The longest instance id accepted, in bytes.
pub const INSTANCE_ID_LEN_MAX: usize = 128;

const _: () = assert!(OWNERSHIP_LEASE_MS_MIN <= OWNERSHIP_LEASE_MS_DEFAULT);
const _: () = assert!(OWNERSHIP_LEASE_MS_DEFAULT <= OWNERSHIP_LEASE_MS_MAX);
const _: () = assert!(TICK_BATCH_MAX_DEFAULT <= TICK_BATCH_MAX_BOUND);
const _: () = assert!(DRAIN_TICKS_MAX_DEFAULT <= DRAIN_TICKS_MAX_BOUND);

/// Settings of one engine instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Names this instance in the store's ownership table; unique per
    /// process. Letters, digits and `_ . : / -`, 1..=`INSTANCE_ID_LEN_MAX`
    /// bytes. Default: `engine-<pid>-<random hex>`, fresh for every config.
    pub instance_id: String,
    /// How long membership and partition leases last without renewal, in ms,
    /// `OWNERSHIP_LEASE_MS_MIN ..= OWNERSHIP_LEASE_MS_MAX`. The engine renews
    /// every third of it; a dead instance's partitions move within about
    /// one lease.
    pub ownership_lease_ms: i64,
    /// Most timers per `partition_tick`, 1 ..= `TICK_BATCH_MAX_BOUND`.
    pub tick_batch_max: u32,
    /// Most consecutive full-batch ticks of one partition per wake, 1 ..=
    /// `DRAIN_TICKS_MAX_BOUND`; a partition with more due work is resumed
    /// after the other due partitions had their turn.
    pub drain_ticks_max: u32,
    /// Longest sleep of a partition with no timer known to be due sooner,
    /// `IDLE_POLL_MAX_MIN ..= IDLE_POLL_MAX_MAX`. It is the fallback for lost
    /// (or unsupported) due hints: an idle engine makes about
    /// `owned partitions / idle_poll_max` ticks per second.
    pub idle_poll_max: Duration,
    /// Longest wait for one store call (a drain, a rebalance) before it counts
    /// as an error; greater than zero. Rebalances also stop waiting after a
    /// third of the ownership lease, so a slow store cannot keep an expired
    /// set in use.
    pub store_call_timeout: Duration,
    /// How often the flow projector audits each owned partition's flows,
    /// `IDLE_POLL_MAX_MIN ..= IDLE_POLL_MAX_MAX` (see `FlowProjector`).
    pub flow_projector_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            instance_id: instance_id_random(),
            ownership_lease_ms: OWNERSHIP_LEASE_MS_DEFAULT,
            tick_batch_max: TICK_BATCH_MAX_DEFAULT,
            drain_ticks_max: DRAIN_TICKS_MAX_DEFAULT,
            idle_poll_max: IDLE_POLL_MAX_DEFAULT,
            store_call_timeout: STORE_CALL_TIMEOUT_DEFAULT,
            flow_projector_interval: crate::scanners::FLOW_PROJECTOR_INTERVAL_DEFAULT,
        }
    }
}

/// A fresh instance id: the process id helps an operator find the process,
/// the random part keeps two engines of one process apart.
fn instance_id_random() -> String {
    format!("engine-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

impl EngineConfig {
    /// Checks every field against its bounds.
    ///
    /// # Errors
    /// `InvalidArgument`, naming the first field out of bounds.
    pub fn validate(&self) -> Result<()> {
        check_name("instance_id", &self.instance_id, INSTANCE_ID_LEN_MAX)?;
        let lease_range = OWNERSHIP_LEASE_MS_MIN..=OWNERSHIP_LEASE_MS_MAX;
        if !lease_range.contains(&self.ownership_lease_ms) {
            return Err(Error::invalid(
                "ownership_lease_ms",
                format!(
                    "must be {OWNERSHIP_LEASE_MS_MIN}..={OWNERSHIP_LEASE_MS_MAX}, got {}",
                    self.ownership_lease_ms
                ),
            ));
        }
        check_count("tick_batch_max", self.tick_batch_max, TICK_BATCH_MAX_BOUND)?;
        check_count(
            "drain_ticks_max",
            self.drain_ticks_max,
            DRAIN_TICKS_MAX_BOUND,
        )?;
        if !(IDLE_POLL_MAX_MIN..=IDLE_POLL_MAX_MAX).contains(&self.idle_poll_max) {
            return Err(Error::invalid(
                "idle_poll_max",
                format!(
                    "must be {IDLE_POLL_MAX_MIN:?}..={IDLE_POLL_MAX_MAX:?}, got {:?}",
                    self.idle_poll_max
                ),
            ));
        }
        if !(IDLE_POLL_MAX_MIN..=IDLE_POLL_MAX_MAX).contains(&self.flow_projector_interval) {
            return Err(Error::invalid(
                "flow_projector_interval",
                format!(
                    "must be {IDLE_POLL_MAX_MIN:?}..={IDLE_POLL_MAX_MAX:?}, got {:?}",
                    self.flow_projector_interval
                ),
            ));
        }
        if self.store_call_timeout.is_zero() {
            return Err(Error::invalid("store_call_timeout", "must be > 0"));
        }
        Ok(())
    }
}

fn check_count(field: &str, value: u32, bound: u32) -> Result<()> {
    if value == 0 || value > bound {
        return Err(Error::invalid(
            field,
            format!("must be 1..={bound}, got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Goal: defaults are valid and every bound is enforced with the field
    //! named. Method: mutate one field of the default config at a time.

    use super::*;

    fn field_of(config: &EngineConfig) -> String {
        match config.validate() {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_ids_differ() {
        let a = EngineConfig::default();
        a.validate().unwrap();
        assert_eq!(a.ownership_lease_ms, OWNERSHIP_LEASE_MS_DEFAULT);
        assert_eq!(a.tick_batch_max, 256);
        assert_eq!(a.idle_poll_max, Duration::from_secs(5));
        assert_ne!(a.instance_id, EngineConfig::default().instance_id);
    }

    /// A field name and the edit that breaks it.
    type Case = (&'static str, fn(&mut EngineConfig));

    #[test]
    fn each_bound_names_its_field() {
        let cases: Vec<Case> = vec![
            ("instance_id", |c| c.instance_id.clear()),
            ("instance_id", |c| c.instance_id = "has space".into()),
            ("instance_id", |c| c.instance_id = "x".repeat(129)),
            ("ownership_lease_ms", |c| c.ownership_lease_ms = 99),
            ("ownership_lease_ms", |c| c.ownership_lease_ms = 3_600_001),
            ("tick_batch_max", |c| c.tick_batch_max = 0),
            ("tick_batch_max", |c| c.tick_batch_max = 10_001),
            ("drain_ticks_max", |c| c.drain_ticks_max = 0),
            ("idle_poll_max", |c| {
                c.idle_poll_max = Duration::from_millis(9)
            }),
            ("idle_poll_max", |c| {
                c.idle_poll_max = Duration::from_secs(3_601)
            }),
            ("store_call_timeout", |c| {
                c.store_call_timeout = Duration::ZERO
            }),
            ("flow_projector_interval", |c| {
                c.flow_projector_interval = Duration::ZERO
            }),
        ];
        for (field, mutate) in cases {
            let mut config = EngineConfig::default();
            mutate(&mut config);
            assert_eq!(field_of(&config), field, "{config:?}");
        }
    }

    #[test]
    fn bounds_themselves_are_accepted() {
        let config = EngineConfig {
            instance_id: "a".repeat(INSTANCE_ID_LEN_MAX),
            ownership_lease_ms: OWNERSHIP_LEASE_MS_MIN,
            tick_batch_max: TICK_BATCH_MAX_BOUND,
            drain_ticks_max: 1,
            idle_poll_max: IDLE_POLL_MAX_MIN,
            store_call_timeout: Duration::from_millis(1),
            flow_projector_interval: IDLE_POLL_MAX_MAX,
        };
        config.validate().unwrap();
    }
}
