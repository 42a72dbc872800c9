//! Configuration of a simulated world: peers, failures, objects, policies.
//!
//! All times are in hours; rates are per year unless a name says otherwise.

use serde::{Deserialize, Serialize};

/// Hours in a (Julian) year.
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// How a peer alternates between online and offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Uptime {
    /// Alternating renewal process with exponential up and down periods:
    /// stationary online probability `availability`, mean offline period
    /// `mean_down_h` hours. Desktops, NAS, buckets; also the independent
    /// model used for validation.
    Renewal {
        /// Long-run fraction of time online.
        availability: f64,
        /// Mean length of an offline period, hours.
        mean_down_h: f64,
    },
    /// Diurnal laptop: online for one block of `online_fraction * 24` hours a
    /// day starting at a per-peer phase, asleep the rest; on a random
    /// `skip_day` fraction of days it stays off.
    Diurnal {
        /// Fraction of the day the peer is awake.
        online_fraction: f64,
        /// Probability that the peer stays off for a whole day.
        skip_day: f64,
    },
}

impl Uptime {
    /// Long-run fraction of time online (ignoring correlated outages).
    pub fn mean(&self) -> f64 {
        match self {
            Self::Renewal { availability, .. } => *availability,
            Self::Diurnal {
                online_fraction,
                skip_day,
            } => online_fraction * (1.0 - skip_day),
        }
    }
}

/// Distribution of the time until a peer permanently loses its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Lifetime {
    /// Exponential with the given annual failure rate (failures per year).
    Exponential {
        /// Failures per year (1 / mean lifetime in years).
        afr: f64,
    },
    /// Weibull with the given shape and scale (years).
    Weibull {
        /// Shape (> 1: wear-out).
        shape: f64,
        /// Scale, years.
        scale_years: f64,
    },
}

/// One kind of peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// Label: "desktop", "laptop", "nas", "bucket", "stranger".
    pub label: String,
    /// Online/offline pattern.
    pub uptime: Uptime,
    /// Permanent failure (disk/device loss).
    pub lifetime: Lifetime,
    /// Departures per year (the peer leaves and its shards are gone; the
    /// departure is announced, so detected at once).
    pub departure_per_year: f64,
    /// Silent loss of a single held shard (bit rot, deleted folder), per
    /// shard-year; detected only by an audit.
    pub silent_loss_per_shard_year: f64,
    /// Upload bandwidth available for repair, bytes per second.
    pub repair_bytes_per_s: f64,
    /// Whether this peer owns data that it backs up (a bucket does not).
    pub owns_data: bool,
}

/// A household (or site): peers sharing one failure domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HouseholdSpec {
    /// Its peers.
    pub peers: Vec<PeerSpec>,
    /// Region (for region-wide outages).
    pub region: u32,
    /// Failure domain id given to the placement policy. Peers in a separate
    /// site (a cloud bucket) can be given their own domain.
    pub domains: Vec<u32>,
}

/// Correlated events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlated {
    /// Temporary outages (power, ISP) per household per year.
    pub household_outage_per_year: f64,
    /// Mean length of a household outage, hours.
    pub household_outage_mean_h: f64,
    /// Region-wide temporary outages per region per year.
    pub region_outage_per_year: f64,
    /// Mean length of a region outage, hours.
    pub region_outage_mean_h: f64,
    /// Disasters (fire, flood, burglary) that permanently destroy every
    /// peer of a household, per household per year. Peers in a household
    /// whose domain differs from the household id (e.g. a cloud bucket)
    /// survive.
    pub household_disaster_per_year: f64,
}

/// Where shards go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlacementPolicy {
    /// Fixed k-of-n on uniformly random candidates.
    Fixed {
        /// Shards needed.
        k: u32,
        /// Shards stored.
        n: u32,
    },
    /// Fixed k-of-n, at most one shard per failure domain where possible.
    DomainAware {
        /// Shards needed.
        k: u32,
        /// Shards stored.
        n: u32,
    },
    /// Total Recall style: fixed k, n grown until P(>= k online) reaches
    /// the target given the candidates' uptimes (up to `max_n`).
    AvailabilityAware {
        /// Shards needed.
        k: u32,
        /// Cap on n.
        max_n: u32,
        /// Target restore availability.
        target: f64,
    },
    /// kith's own rule: calls `kith_node::policy::choose_placement`.
    Kith {
        /// `F`, losses survivable.
        losses_survivable: u32,
        /// Cap on n.
        max_shards: u32,
        /// Target restore availability (0 = off).
        target_availability: f64,
        /// Overhead cap for availability-awareness.
        max_overhead: f64,
    },
}

/// When to repair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RepairPolicy {
    /// Never repair.
    None,
    /// Repair every detected loss at once.
    Eager,
    /// Repair (back to n) when believed-live shards <= k + `extra`.
    Threshold {
        /// Spare shards above k that trigger repair.
        extra: u32,
    },
    /// Like threshold, but wait `delay_h` hours after the threshold is hit
    /// (to let more losses accumulate and batch the work).
    Lazy {
        /// Spare shards above k that trigger repair.
        extra: u32,
        /// Delay before starting, hours.
        delay_h: f64,
    },
}

/// How losses are found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSpec {
    /// Interval between audits of one object, hours.
    pub interval_h: f64,
    /// A holder unreachable for this long is declared dead, hours.
    pub declare_dead_h: f64,
}

/// A complete world to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Households.
    pub households: Vec<HouseholdSpec>,
    /// Correlated events.
    pub correlated: Correlated,
    /// Placement of new objects.
    pub placement: PlacementPolicy,
    /// Repair.
    pub repair: RepairPolicy,
    /// Audits.
    pub audit: AuditSpec,
    /// Object groups per owning peer (each stands for a set of co-placed
    /// objects).
    pub objects_per_owner: u32,
    /// Bytes in one object group.
    pub object_bytes: u64,
    /// Candidate peers drawn at random for each placement (0 = all peers).
    pub candidates: usize,
    /// A failed or departed peer is replaced by a fresh one of the same kind
    /// after this many hours (`None`: never).
    pub replace_after_h: Option<f64>,
    /// If the owner is alive and online it repairs from its local copy
    /// (uploads only); otherwise k shards are downloaded first.
    pub owner_local_repair: bool,
    /// Simulated years.
    pub years: f64,
    /// Mean hours between availability samples.
    pub sample_every_h: f64,
    /// Objects checked per availability sample (0 = all).
    pub sample_objects: usize,
    /// Stop sampling after this many samples (0 = no limit).
    pub max_samples: u64,
}
