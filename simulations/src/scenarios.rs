//! The scenarios of `docs/DURABILITY.md`, with their assumptions in one
//! place.

use crate::model::{
    AuditSpec, Correlated, HouseholdSpec, Lifetime, PeerSpec, PlacementPolicy, RepairPolicy,
    Scenario, Uptime,
};

const MB: f64 = 1e6;

/// An always-on desktop: 95% up, 5% annual loss of its data.
pub fn desktop() -> PeerSpec {
    PeerSpec {
        label: "desktop".into(),
        uptime: Uptime::Renewal {
            availability: 0.95,
            mean_down_h: 4.0,
        },
        lifetime: Lifetime::Exponential { afr: 0.05 },
        departure_per_year: 0.0,
        silent_loss_per_shard_year: 0.005,
        repair_bytes_per_s: 5.0 * MB,
        owns_data: true,
    }
}

/// A laptop asleep half the day; 10% annual loss (theft, drops, disks).
pub fn laptop() -> PeerSpec {
    PeerSpec {
        label: "laptop".into(),
        uptime: Uptime::Diurnal {
            online_fraction: 0.5,
            skip_day: 0.0,
        },
        lifetime: Lifetime::Exponential { afr: 0.10 },
        departure_per_year: 0.0,
        silent_loss_per_shard_year: 0.005,
        repair_bytes_per_s: 5.0 * MB,
        owns_data: true,
    }
}

/// A NAS: 97% up, 3% annual loss.
pub fn nas() -> PeerSpec {
    PeerSpec {
        label: "nas".into(),
        uptime: Uptime::Renewal {
            availability: 0.97,
            mean_down_h: 6.0,
        },
        lifetime: Lifetime::Exponential { afr: 0.03 },
        departure_per_year: 0.0,
        silent_loss_per_shard_year: 0.002,
        repair_bytes_per_s: 10.0 * MB,
        owns_data: false,
    }
}

/// A cloud bucket as a member: 99.9% reachable, 1e-4 annual loss (account
/// loss), in its own failure domain.
pub fn bucket() -> PeerSpec {
    PeerSpec {
        label: "bucket".into(),
        uptime: Uptime::Renewal {
            availability: 0.999,
            mean_down_h: 1.0,
        },
        lifetime: Lifetime::Exponential { afr: 1e-4 },
        departure_per_year: 0.0,
        silent_loss_per_shard_year: 0.0,
        repair_bytes_per_s: 50.0 * MB,
        owns_data: false,
    }
}

/// A stranger with a desktop: 90% up, leaves at 20% a year.
pub fn stranger_desktop() -> PeerSpec {
    PeerSpec {
        label: "stranger-desktop".into(),
        uptime: Uptime::Renewal {
            availability: 0.9,
            mean_down_h: 8.0,
        },
        lifetime: Lifetime::Exponential { afr: 0.05 },
        departure_per_year: 0.2,
        silent_loss_per_shard_year: 0.01,
        repair_bytes_per_s: 1.0 * MB,
        owns_data: true,
    }
}

/// A stranger with a laptop: diurnal 50% (skips 10% of days), leaves at
/// 20% a year.
pub fn stranger_laptop() -> PeerSpec {
    PeerSpec {
        label: "stranger-laptop".into(),
        uptime: Uptime::Diurnal {
            online_fraction: 0.5,
            skip_day: 0.1,
        },
        lifetime: Lifetime::Exponential { afr: 0.10 },
        departure_per_year: 0.2,
        silent_loss_per_shard_year: 0.01,
        repair_bytes_per_s: 1.0 * MB,
        owns_data: true,
    }
}

/// Default correlated events: 6 household outages a year (3 h), 1 region
/// outage a year (6 h), and `disaster` household disasters per year.
pub fn correlated(disaster: f64) -> Correlated {
    Correlated {
        household_outage_per_year: 6.0,
        household_outage_mean_h: 3.0,
        region_outage_per_year: 1.0,
        region_outage_mean_h: 6.0,
        household_disaster_per_year: disaster,
    }
}

/// kith's default placement (calls `kith_node::policy::choose_placement`).
pub fn kith_default() -> PlacementPolicy {
    let g = kith_node::policy::PolicyGoal::default();
    PlacementPolicy::Kith {
        losses_survivable: g.losses_survivable,
        max_shards: g.max_shards,
        target_availability: g.target_availability,
        max_overhead: g.max_overhead,
    }
}

fn family(region: u32, domain: u32) -> HouseholdSpec {
    HouseholdSpec {
        peers: vec![desktop(), desktop(), laptop(), laptop(), laptop(), nas()],
        region,
        domains: vec![domain; 6],
    }
}

fn base(name: &str, households: Vec<HouseholdSpec>) -> Scenario {
    Scenario {
        name: name.into(),
        households,
        correlated: correlated(1e-3),
        placement: kith_default(),
        repair: RepairPolicy::Eager,
        audit: AuditSpec {
            interval_h: 24.0,
            declare_dead_h: 72.0,
        },
        objects_per_owner: 1,
        object_bytes: 200_000_000_000,
        candidates: 0,
        replace_after_h: Some(14.0 * 24.0),
        owner_local_repair: true,
        years: 5.0,
        sample_every_h: 5.0,
        sample_objects: 0,
        max_samples: 0,
    }
}

/// One household: 2 desktops, 3 laptops at 50%, 1 NAS at 97%; every device
/// but the NAS backs up 200 GB to the others.
pub fn household() -> Scenario {
    base("household", vec![family(0, 0)])
}

/// The household plus a cloud bucket member in its own failure domain.
pub fn household_bucket() -> Scenario {
    let mut h = family(0, 0);
    h.peers.push(bucket());
    h.domains.push(1);
    base("household-bucket", vec![h])
}

/// Three households (different regions) trading storage.
pub fn three_households() -> Scenario {
    base(
        "three-households",
        vec![family(0, 0), family(1, 1), family(2, 2)],
    )
}

/// `peers` strangers (40% desktops, 60% laptops), each its own household and
/// failure domain, spread over 20 regions; 50 GB each, placement among 24
/// random candidates.
pub fn strangers(peers: u32) -> Scenario {
    let households = (0..peers)
        .map(|i| HouseholdSpec {
            peers: vec![if i % 5 < 2 {
                stranger_desktop()
            } else {
                stranger_laptop()
            }],
            region: i % 20,
            domains: vec![i],
        })
        .collect();
    let mut s = base("strangers", households);
    s.object_bytes = 50_000_000_000;
    s.repair = RepairPolicy::Threshold { extra: 2 };
    s.candidates = 24;
    s.replace_after_h = Some(0.0);
    s.sample_every_h = 24.0;
    s.sample_objects = 1000;
    s
}

/// Replace every exponential lifetime by a Weibull one of the given shape
/// with the same mean (shape > 1: wear-out, < 1: infant mortality).
pub fn with_weibull(sc: &mut Scenario, shape: f64) {
    let g = crate::analytic::gamma(1.0 + 1.0 / shape);
    for h in &mut sc.households {
        for p in &mut h.peers {
            if let Lifetime::Exponential { afr } = p.lifetime {
                if afr > 0.0 {
                    p.lifetime = Lifetime::Weibull {
                        shape,
                        scale_years: 1.0 / afr / g,
                    };
                }
            }
        }
    }
}

/// Look a scenario up by name.
pub fn by_name(name: &str, strangers_peers: u32) -> Option<Scenario> {
    match name {
        "household" => Some(household()),
        "household-bucket" => Some(household_bucket()),
        "three-households" => Some(three_households()),
        "strangers" => Some(strangers(strangers_peers)),
        _ => None,
    }
}

/// Names accepted by [`by_name`].
pub const NAMES: &[&str] = &[
    "household",
    "household-bucket",
    "three-households",
    "strangers",
];

/// The validation world: one object on `n` independent peers, each online
/// with probability `uptime` (exponential on/off periods), permanent failure
/// rate `afr` per year, no correlated events, no repair. The owner is an
/// extra peer that holds nothing.
pub fn independent(k: u32, n: u32, uptime: f64, afr: f64, years: f64) -> Scenario {
    let holder = PeerSpec {
        label: "holder".into(),
        uptime: Uptime::Renewal {
            availability: uptime,
            mean_down_h: 1.0,
        },
        lifetime: Lifetime::Exponential { afr },
        departure_per_year: 0.0,
        silent_loss_per_shard_year: 0.0,
        repair_bytes_per_s: 1.0 * MB,
        owns_data: false,
    };
    let owner = PeerSpec {
        label: "owner".into(),
        owns_data: true,
        lifetime: Lifetime::Exponential { afr: 0.0 },
        ..holder.clone()
    };
    let mut households = vec![HouseholdSpec {
        peers: vec![owner],
        region: 0,
        domains: vec![0],
    }];
    households.extend((1..=n).map(|i| HouseholdSpec {
        peers: vec![holder.clone()],
        region: 0,
        domains: vec![i],
    }));
    Scenario {
        name: "independent".into(),
        households,
        correlated: Correlated {
            household_outage_per_year: 0.0,
            household_outage_mean_h: 0.0,
            region_outage_per_year: 0.0,
            region_outage_mean_h: 0.0,
            household_disaster_per_year: 0.0,
        },
        placement: PlacementPolicy::Fixed { k, n },
        repair: RepairPolicy::None,
        audit: AuditSpec {
            interval_h: 24.0,
            declare_dead_h: 72.0,
        },
        objects_per_owner: 1,
        object_bytes: 1_000_000_000,
        candidates: 0,
        replace_after_h: None,
        owner_local_repair: false,
        years,
        sample_every_h: 1e9,
        sample_objects: 0,
        max_samples: 0,
    }
}
