//! Policy sweeps: the k/n/repair table behind the recommended defaults.

use serde::{Deserialize, Serialize};

use crate::experiments::{run_scenario, Summary};
use crate::model::{PlacementPolicy, RepairPolicy, Scenario};

/// Parse a repair policy: `none`, `eager`, `threshold:E`, `lazy:E:HOURS`.
pub fn parse_repair(s: &str) -> Option<RepairPolicy> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["none"] => Some(RepairPolicy::None),
        ["eager"] => Some(RepairPolicy::Eager),
        ["threshold"] => Some(RepairPolicy::Threshold { extra: 1 }),
        ["threshold", e] => Some(RepairPolicy::Threshold {
            extra: e.parse().ok()?,
        }),
        ["lazy", e, h] => Some(RepairPolicy::Lazy {
            extra: e.parse().ok()?,
            delay_h: h.parse().ok()?,
        }),
        _ => None,
    }
}

/// Short label of a repair policy.
pub fn repair_label(r: &RepairPolicy) -> String {
    match r {
        RepairPolicy::None => "none".into(),
        RepairPolicy::Eager => "eager".into(),
        RepairPolicy::Threshold { extra } => format!("threshold:{extra}"),
        RepairPolicy::Lazy { extra, delay_h } => format!("lazy:{extra}:{delay_h}"),
    }
}

/// Short label of a placement policy.
pub fn placement_label(p: &PlacementPolicy) -> String {
    match p {
        PlacementPolicy::Fixed { k, n } => format!("fixed {k}-of-{n}"),
        PlacementPolicy::DomainAware { k, n } => format!("domain {k}-of-{n}"),
        PlacementPolicy::AvailabilityAware { k, max_n, target } => {
            format!("avail k={k} n<={max_n} @{target}")
        }
        PlacementPolicy::Kith {
            losses_survivable,
            max_shards,
            target_availability,
            ..
        } => format!("kith F={losses_survivable} n<={max_shards} avail>={target_availability}"),
    }
}

/// kith's rule with `F` survivable losses and a cap on n.
pub fn kith(f: u32, max_shards: u32) -> PlacementPolicy {
    let g = kith_node::policy::PolicyGoal::default();
    PlacementPolicy::Kith {
        losses_survivable: f,
        max_shards,
        target_availability: g.target_availability,
        max_overhead: g.max_overhead,
    }
}

/// The placements tried for a scenario.
pub fn placements_for(name: &str) -> Vec<PlacementPolicy> {
    match name {
        "household-bucket" => vec![
            PlacementPolicy::Fixed { k: 2, n: 5 },
            PlacementPolicy::DomainAware { k: 1, n: 2 },
            PlacementPolicy::DomainAware { k: 2, n: 4 },
            kith(1, 2),
            kith(2, 3),
            kith(2, 16),
        ],
        "household" => vec![
            PlacementPolicy::Fixed { k: 1, n: 3 },
            PlacementPolicy::Fixed { k: 2, n: 4 },
            PlacementPolicy::Fixed { k: 2, n: 5 },
            PlacementPolicy::Fixed { k: 3, n: 5 },
            PlacementPolicy::Fixed { k: 4, n: 5 },
            PlacementPolicy::AvailabilityAware {
                k: 2,
                max_n: 5,
                target: 0.999,
            },
            kith(2, 4),
            kith(1, 16),
            kith(2, 16),
            kith(3, 16),
        ],
        "three-households" => vec![
            PlacementPolicy::Fixed { k: 4, n: 8 },
            PlacementPolicy::DomainAware { k: 4, n: 8 },
            PlacementPolicy::DomainAware { k: 6, n: 9 },
            PlacementPolicy::DomainAware { k: 8, n: 12 },
            PlacementPolicy::DomainAware { k: 10, n: 15 },
            kith(2, 8),
            kith(2, 10),
            kith(2, 16),
            kith(3, 12),
        ],
        _ => vec![
            PlacementPolicy::Fixed { k: 8, n: 12 },
            PlacementPolicy::Fixed { k: 10, n: 16 },
            PlacementPolicy::AvailabilityAware {
                k: 8,
                max_n: 20,
                target: 0.999,
            },
            kith(2, 8),
            kith(2, 12),
            kith(2, 16),
            kith(6, 20),
        ],
    }
}

/// The repair policies tried for a scenario.
pub fn repairs_for(name: &str) -> Vec<RepairPolicy> {
    let mut v = vec![
        RepairPolicy::None,
        RepairPolicy::Eager,
        RepairPolicy::Threshold { extra: 1 },
        RepairPolicy::Lazy {
            extra: 1,
            delay_h: 7.0 * 24.0,
        },
    ];
    if name == "strangers" {
        v.push(RepairPolicy::Threshold { extra: 2 });
        v.push(RepairPolicy::Threshold { extra: 3 });
        v.push(RepairPolicy::Threshold { extra: 4 });
        v.push(RepairPolicy::Lazy {
            extra: 4,
            delay_h: 24.0,
        });
    }
    v
}

/// One row of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Placement label.
    pub placement: String,
    /// Repair label.
    pub repair: String,
    /// Full summary.
    pub summary: Summary,
}

/// Run every placement × repair combination on `base`.
pub fn sweep(
    base: &Scenario,
    placements: &[PlacementPolicy],
    repairs: &[RepairPolicy],
    runs: u32,
    seed: u64,
) -> Vec<SweepRow> {
    let mut rows = Vec::new();
    for p in placements {
        for r in repairs {
            let mut sc = base.clone();
            sc.placement = p.clone();
            sc.repair = r.clone();
            let summary = run_scenario(&sc, runs, seed);
            rows.push(SweepRow {
                placement: placement_label(p),
                repair: repair_label(r),
                summary,
            });
        }
    }
    rows
}

/// Render rows as a Markdown table.
pub fn markdown(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "| placement | repair | k/n | overhead | annual loss (Markov, all) | annual loss (Markov, independent only) | sim losses / obj-yr [95% CI] | availability | repair TB/TB-yr | time to repair p50/p99 h |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = &r.summary;
        s.push_str(&format!(
            "| {} | {} | {:.1}/{:.1} | {:.2}x | {:.2e} | {:.2e} | {:.2e} [{:.1e}, {:.1e}] | {:.5} | {:.3} | {:.0}/{:.0} |\n",
            r.placement,
            r.repair,
            m.k,
            m.n,
            m.overhead,
            m.annual_loss_markov,
            m.annual_loss_markov_independent,
            m.loss_per_object_year_sim,
            m.loss_sim_ci_low,
            m.loss_sim_ci_high,
            m.availability,
            m.repair_tb_per_tb_year,
            m.time_to_repair_p50_h,
            m.time_to_repair_p99_h,
        ));
    }
    s
}
