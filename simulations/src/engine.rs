//! The discrete-event simulator.
//!
//! A binary-heap event queue drives a virtual clock in hours. Peers' online
//! state is evaluated lazily (advanced only when someone looks), so there are
//! no per-tick or per-toggle events: the events are permanent failures,
//! departures, joins, correlated outages and disasters, silent shard losses,
//! loss detections (audits), repair starts and completions, and availability
//! samples. One seeded ChaCha RNG per run makes a run a pure function of
//! `(scenario, seed)`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use kith_node::policy::{choose_placement, prob_at_least, PeerProfile, PolicyGoal};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{Lifetime, PlacementPolicy, RepairPolicy, Scenario, Uptime, HOURS_PER_YEAR};

/// Hours between retries of a repair that could not reach enough sources.
const RETRY_H: f64 = 2.0;
/// Hours in a month (for the traffic series).
const MONTH_H: f64 = HOURS_PER_YEAR / 12.0;

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Seed of the run.
    pub seed: u64,
    /// Object groups placed.
    pub objects: u64,
    /// Object-years at risk (each object until its loss or the horizon).
    pub object_years: f64,
    /// Objects permanently lost.
    pub losses: u64,
    /// Times of the losses, hours.
    pub loss_times_h: Vec<f64>,
    /// Shard-years of live shards.
    pub shard_years: f64,
    /// Shards lost to independent causes (failures, departures, silent).
    pub shard_losses_independent: u64,
    /// Shards lost to household disasters.
    pub shard_losses_disaster: u64,
    /// Household disasters that happened.
    pub disasters: u64,
    /// Peers that failed or departed.
    pub peer_losses: u64,
    /// Peers that joined (replacements).
    pub joins: u64,
    /// Repairs completed.
    pub repairs: u64,
    /// Bytes moved by repairs.
    pub repair_bytes: f64,
    /// Repair bytes per simulated month.
    pub repair_bytes_monthly: Vec<f64>,
    /// Per completed repair: hours from the first loss it fixed to done.
    pub time_to_repair_h: Vec<f64>,
    /// Per completed repair: hours from the loss that triggered it to done.
    pub repair_latency_h: Vec<f64>,
    /// Availability samples where >= k holders were online.
    pub avail_ok: u64,
    /// Availability samples taken.
    pub avail_total: u64,
    /// Bytes protected (object bytes summed over objects).
    pub protected_bytes: f64,
    /// Bytes stored (shards summed) at placement time.
    pub stored_bytes: f64,
    /// Mean k over objects.
    pub mean_k: f64,
    /// Mean n over objects.
    pub mean_n: f64,
    /// Mean over objects of the largest number of shards in one failure
    /// domain (placement time).
    pub mean_max_per_domain: f64,
    /// Mean over objects of the number of distinct household failure
    /// domains (those disasters hit) holding its shards.
    pub mean_disaster_domains: f64,
    /// Objects whose placement failed (not enough peers).
    pub unplaced: u64,
    /// Events processed.
    pub events: u64,
    /// Peers at the start.
    pub peers: u64,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    PeerLoss {
        peer: u32,
        depart: bool,
    },
    Join {
        household: u32,
        spec: u32,
        replaces: u32,
    },
    Detect {
        obj: u32,
        shard: u32,
    },
    RepairStart {
        obj: u32,
        gen: u32,
    },
    RepairDone {
        obj: u32,
        gen: u32,
    },
    HouseholdOutage,
    RegionOutage,
    Disaster,
    SilentLoss,
    Sample,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone)]
struct Peer {
    spec: u32,
    household: u32,
    domain: u32,
    alive: bool,
    online: bool,
    next_toggle: f64,
    phase: f64,
    busy_until: f64,
    holdings: Vec<u32>,
    owned: Vec<u32>,
    id_salt: u64,
}

#[derive(Debug, Clone, Copy)]
struct Shard {
    id: u32,
    peer: u32,
    alive: bool,
    detected: bool,
    lost_at: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RepairState {
    Idle,
    Scheduled,
    Running,
}

#[derive(Debug, Clone)]
struct Object {
    owner: u32,
    k: u32,
    shards: Vec<Shard>,
    next_shard_id: u32,
    live: u32,
    lost: bool,
    state: RepairState,
    gen: u32,
    audit_phase: f64,
    replacing: Vec<u32>,
    targets: Vec<u32>,
    domain_aware: bool,
    /// A repair episode is open (triggered, not all detected losses fixed).
    episode: bool,
    /// Loss time of the shard whose detection triggered the episode.
    trigger_loss_at: f64,
}

#[derive(Debug, Clone)]
struct HouseholdState {
    peers: Vec<u32>,
    down_until: f64,
    region: u32,
    domain: u32,
}

struct Sim<'a> {
    sc: &'a Scenario,
    specs: Vec<crate::model::PeerSpec>,
    rng: ChaCha8Rng,
    seed: u64,
    now: f64,
    horizon: f64,
    seq: u64,
    heap: BinaryHeap<Item>,
    peers: Vec<Peer>,
    households: Vec<HouseholdState>,
    regions: Vec<f64>,
    objects: Vec<Object>,
    live_shards: u64,
    last_t: f64,
    object_bytes: f64,
    stats: RunStats,
}

fn exp_sample(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    if mean <= 0.0 || !mean.is_finite() {
        return f64::INFINITY;
    }
    let u: f64 = rng.gen::<f64>();
    -mean * (1.0 - u).ln()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario, seed: u64) -> Self {
        let mut specs = Vec::new();
        for h in &sc.households {
            for p in &h.peers {
                if !specs.contains(p) {
                    specs.push(p.clone());
                }
            }
        }
        let nregions = sc
            .households
            .iter()
            .map(|h| h.region + 1)
            .max()
            .unwrap_or(1) as usize;
        Self {
            sc,
            specs,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            now: 0.0,
            horizon: sc.years * HOURS_PER_YEAR,
            seq: 0,
            heap: BinaryHeap::new(),
            peers: Vec::new(),
            households: Vec::new(),
            regions: vec![0.0; nregions],
            objects: Vec::new(),
            live_shards: 0,
            last_t: 0.0,
            object_bytes: sc.object_bytes as f64,
            stats: RunStats {
                seed,
                ..RunStats::default()
            },
        }
    }

    fn push(&mut self, t: f64, ev: Ev) {
        if t <= self.horizon {
            self.seq += 1;
            self.heap.push(Item {
                t,
                seq: self.seq,
                ev,
            });
        }
    }

    fn spec_index(&self, p: &crate::model::PeerSpec) -> u32 {
        self.specs.iter().position(|s| s == p).unwrap_or(0) as u32
    }

    fn lifetime_h(&mut self, spec: u32) -> f64 {
        let s = &self.specs[spec as usize];
        match s.lifetime {
            Lifetime::Exponential { afr } => exp_sample(&mut self.rng, HOURS_PER_YEAR / afr),
            Lifetime::Weibull { shape, scale_years } => {
                let u: f64 = self.rng.gen::<f64>();
                scale_years * HOURS_PER_YEAR * (-(1.0 - u).ln()).powf(1.0 / shape)
            }
        }
    }

    fn add_peer(&mut self, household: u32, spec: u32, domain: u32) -> u32 {
        let id = self.peers.len() as u32;
        let s = self.specs[spec as usize].clone();
        let (online, next_toggle, phase) = match s.uptime {
            Uptime::Renewal {
                availability,
                mean_down_h,
            } => {
                let on = self.rng.gen_bool(availability.clamp(0.0, 1.0));
                let mean = if on {
                    mean_down_h * availability / (1.0 - availability).max(1e-12)
                } else {
                    mean_down_h
                };
                (on, self.now + exp_sample(&mut self.rng, mean), 0.0)
            }
            Uptime::Diurnal { .. } => (false, 0.0, self.rng.gen::<f64>() * 24.0),
        };
        self.peers.push(Peer {
            spec,
            household,
            domain,
            alive: true,
            online,
            next_toggle,
            phase,
            busy_until: 0.0,
            holdings: Vec::new(),
            owned: Vec::new(),
            id_salt: splitmix(self.seed ^ (u64::from(id) << 20)),
        });
        self.households[household as usize].peers.push(id);
        let life = self.now + self.lifetime_h(spec);
        let depart = self.now + exp_sample(&mut self.rng, HOURS_PER_YEAR / s.departure_per_year);
        if depart < life {
            self.push(
                depart,
                Ev::PeerLoss {
                    peer: id,
                    depart: true,
                },
            );
        } else {
            self.push(
                life,
                Ev::PeerLoss {
                    peer: id,
                    depart: false,
                },
            );
        }
        id
    }

    /// Is the peer's own process online at `now` (ignoring outages)?
    fn process_online(&mut self, p: u32) -> bool {
        let now = self.now;
        let spec = self.peers[p as usize].spec as usize;
        match self.specs[spec].uptime {
            Uptime::Renewal {
                availability,
                mean_down_h,
            } => {
                if availability <= 0.0 {
                    return false;
                }
                if availability >= 1.0 {
                    return true;
                }
                let up_mean = mean_down_h * availability / (1.0 - availability);
                let peer = &mut self.peers[p as usize];
                if now - peer.next_toggle > 20.0 * (up_mean + mean_down_h) {
                    // Long unobserved: the state is stationary and residual
                    // times are exponential (memoryless), so resample.
                    peer.online = self.rng.gen_bool(availability.clamp(0.0, 1.0));
                    let m = if peer.online { up_mean } else { mean_down_h };
                    peer.next_toggle = now + exp_sample(&mut self.rng, m);
                }
                while peer.next_toggle <= now {
                    peer.online = !peer.online;
                    let m = if peer.online { up_mean } else { mean_down_h };
                    peer.next_toggle += exp_sample(&mut self.rng, m);
                }
                peer.online
            }
            Uptime::Diurnal {
                online_fraction,
                skip_day,
            } => {
                let peer = &self.peers[p as usize];
                let x = now - peer.phase + 24.0;
                let day = (x / 24.0).floor();
                let in_day = x - day * 24.0;
                if in_day >= online_fraction * 24.0 {
                    return false;
                }
                let h = splitmix(peer.id_salt ^ (day as u64));
                (h >> 11) as f64 / (1u64 << 53) as f64 >= skip_day
            }
        }
    }

    fn online(&mut self, p: u32) -> bool {
        let peer = &self.peers[p as usize];
        if !peer.alive {
            return false;
        }
        let hh = &self.households[peer.household as usize];
        if hh.down_until > self.now || self.regions[hh.region as usize] > self.now {
            return false;
        }
        self.process_online(p)
    }

    fn profile(&self, p: u32) -> PeerProfile {
        let peer = &self.peers[p as usize];
        let spec = &self.specs[peer.spec as usize];
        PeerProfile {
            uptime: spec.uptime.mean(),
            failure_domain: peer.domain,
            always_on: matches!(spec.uptime, Uptime::Renewal { .. }),
        }
    }

    /// Alive candidate peers for a placement, excluding `exclude`.
    fn candidates(&mut self, owner: u32, exclude: &[u32]) -> Vec<u32> {
        let want = self.sc.candidates;
        let ok =
            |s: &Self, p: u32| s.peers[p as usize].alive && p != owner && !exclude.contains(&p);
        if want == 0 || want >= self.peers.len() / 2 {
            let mut v: Vec<u32> = (0..self.peers.len() as u32)
                .filter(|&p| ok(self, p))
                .collect();
            v.shuffle(&mut self.rng);
            if want > 0 {
                v.truncate(want);
            }
            return v;
        }
        let mut v = Vec::with_capacity(want);
        let mut tries = 0;
        while v.len() < want && tries < want * 50 {
            tries += 1;
            let p = self.rng.gen_range(0..self.peers.len()) as u32;
            if ok(self, p) && !v.contains(&p) {
                v.push(p);
            }
        }
        v
    }

    fn place(&mut self, owner: u32) {
        let cands = self.candidates(owner, &[]);
        let profiles: Vec<PeerProfile> = cands.iter().map(|&p| self.profile(p)).collect();
        let (k, chosen, domain_aware): (u32, Vec<u32>, bool) = match self.sc.placement.clone() {
            PlacementPolicy::Fixed { k, n } => {
                let n = (n as usize).min(cands.len());
                let k = k.min(n as u32);
                (k, cands[..n].to_vec(), false)
            }
            PlacementPolicy::DomainAware { k, n } => {
                let goal = PolicyGoal {
                    losses_survivable: n.saturating_sub(k),
                    max_shards: n,
                    target_availability: 0.0,
                    replicate_below: 0,
                    max_overhead: f64::MAX,
                    min_uptime: 0.0,
                    domain_losses_survivable: 0,
                    extra_losses_after_domains: 0,
                };
                match choose_placement(&profiles, &goal, self.sc.object_bytes) {
                    Ok(pl) => (pl.k, pl.peers.iter().map(|&i| cands[i]).collect(), true),
                    Err(_) => (0, Vec::new(), true),
                }
            }
            PlacementPolicy::AvailabilityAware { k, max_n, target } => {
                let mut n = (k as usize + 1).min(cands.len());
                loop {
                    let ups: Vec<f64> = profiles[..n].iter().map(|p| p.uptime).collect();
                    if n >= cands.len()
                        || n >= max_n as usize
                        || prob_at_least(&ups, k as usize) >= target
                    {
                        break;
                    }
                    n += 1;
                }
                (k.min(n as u32), cands[..n].to_vec(), false)
            }
            PlacementPolicy::Kith {
                losses_survivable,
                max_shards,
                target_availability,
                max_overhead,
            } => {
                let goal = PolicyGoal {
                    losses_survivable,
                    max_shards,
                    target_availability,
                    max_overhead,
                    ..PolicyGoal::default()
                };
                match choose_placement(&profiles, &goal, self.sc.object_bytes) {
                    Ok(pl) => (pl.k, pl.peers.iter().map(|&i| cands[i]).collect(), true),
                    Err(_) => (0, Vec::new(), true),
                }
            }
        };
        if k == 0 || chosen.is_empty() {
            self.stats.unplaced += 1;
            return;
        }
        let id = self.objects.len() as u32;
        let shards: Vec<Shard> = chosen
            .iter()
            .enumerate()
            .map(|(i, &p)| Shard {
                id: i as u32,
                peer: p,
                alive: true,
                detected: false,
                lost_at: 0.0,
            })
            .collect();
        for &p in &chosen {
            self.peers[p as usize].holdings.push(id);
        }
        let mut per_domain: Vec<u32> = chosen
            .iter()
            .map(|&p| self.peers[p as usize].domain)
            .collect();
        per_domain.sort_unstable();
        let mut max_run = 0u32;
        let mut run = 0u32;
        for (i, d) in per_domain.iter().enumerate() {
            run = if i > 0 && per_domain[i - 1] == *d {
                run + 1
            } else {
                1
            };
            max_run = max_run.max(run);
        }
        let mut hh: Vec<u32> = chosen
            .iter()
            .filter(|&&p| {
                let peer = &self.peers[p as usize];
                peer.domain == self.households[peer.household as usize].domain
            })
            .map(|&p| self.peers[p as usize].household)
            .collect();
        hh.sort_unstable();
        hh.dedup();
        self.stats.mean_disaster_domains += hh.len() as f64;
        let n = chosen.len() as u32;
        self.stats.mean_max_per_domain += f64::from(max_run);
        self.stats.mean_k += f64::from(k);
        self.stats.mean_n += f64::from(n);
        self.stats.stored_bytes += self.object_bytes * f64::from(n) / f64::from(k);
        self.stats.protected_bytes += self.object_bytes;
        self.live_shards += u64::from(n);
        let audit_phase = self.rng.gen::<f64>() * self.sc.audit.interval_h;
        self.objects.push(Object {
            owner,
            k,
            shards,
            next_shard_id: n,
            live: n,
            lost: false,
            state: RepairState::Idle,
            gen: 0,
            audit_phase,
            replacing: Vec::new(),
            targets: Vec::new(),
            domain_aware,
            episode: false,
            trigger_loss_at: 0.0,
        });
        self.peers[owner as usize].owned.push(id);
    }

    fn next_audit(&self, obj: u32, t: f64) -> f64 {
        let iv = self.sc.audit.interval_h.max(1e-9);
        let ph = self.objects[obj as usize].audit_phase;
        let m = ((t - ph) / iv).ceil().max(0.0);
        ph + m * iv
    }

    /// Kill one shard. `delay`: None = announced (detected now), Some(x) =
    /// found by the first audit at or after `now + x`.
    fn kill_shard(&mut self, obj: u32, idx: usize, declare: Option<f64>, disaster: bool) {
        let now = self.now;
        let o = &mut self.objects[obj as usize];
        let sh = &mut o.shards[idx];
        if !sh.alive {
            return;
        }
        sh.alive = false;
        sh.lost_at = now;
        let sid = sh.id;
        o.live -= 1;
        self.live_shards -= 1;
        if disaster {
            self.stats.shard_losses_disaster += 1;
        } else {
            self.stats.shard_losses_independent += 1;
        }
        if !o.lost && o.live < o.k {
            o.lost = true;
            self.stats.losses += 1;
            self.stats.loss_times_h.push(now);
            self.stats.object_years += now / HOURS_PER_YEAR;
            return;
        }
        if o.lost {
            return;
        }
        let when = match declare {
            None => now,
            Some(x) => self.next_audit(obj, now + x),
        };
        self.push(when, Ev::Detect { obj, shard: sid });
    }

    fn peer_loss(&mut self, p: u32, depart: bool, disaster: bool) {
        if !self.peers[p as usize].alive {
            return;
        }
        self.peers[p as usize].alive = false;
        self.stats.peer_losses += 1;
        let declare = if depart {
            None
        } else {
            Some(self.sc.audit.declare_dead_h)
        };
        let holdings = std::mem::take(&mut self.peers[p as usize].holdings);
        for &obj in &holdings {
            if let Some(idx) = self.objects[obj as usize]
                .shards
                .iter()
                .position(|s| s.peer == p && s.alive)
            {
                self.kill_shard(obj, idx, declare, disaster);
            }
        }
        if let Some(after) = self.sc.replace_after_h {
            let peer = &self.peers[p as usize];
            let (household, spec) = (peer.household, peer.spec);
            self.push(
                self.now + after,
                Ev::Join {
                    household,
                    spec,
                    replaces: p,
                },
            );
        }
    }

    fn evaluate(&mut self, obj: u32) {
        let o = &self.objects[obj as usize];
        if o.lost || o.state != RepairState::Idle {
            return;
        }
        let detected = o.shards.iter().filter(|s| s.detected).count() as u32;
        if detected == 0 {
            return;
        }
        let believed = o.shards.len() as u32 - detected;
        let (trigger, delay) = match self.sc.repair {
            RepairPolicy::None => (false, 0.0),
            RepairPolicy::Eager => (true, 0.0),
            RepairPolicy::Threshold { extra } => (believed <= o.k + extra, 0.0),
            RepairPolicy::Lazy { extra, delay_h } => (believed <= o.k + extra, delay_h),
        };
        let open = o.episode;
        if !trigger && !open {
            return;
        }
        if !open {
            let last = o
                .shards
                .iter()
                .filter(|s| s.detected)
                .map(|s| s.lost_at)
                .fold(f64::NEG_INFINITY, f64::max);
            let o = &mut self.objects[obj as usize];
            o.episode = true;
            o.trigger_loss_at = last;
        }
        let delay = if open { 0.0 } else { delay };
        if delay > 0.0 {
            let o = &mut self.objects[obj as usize];
            o.state = RepairState::Scheduled;
            o.gen += 1;
            let gen = o.gen;
            self.push(self.now + delay, Ev::RepairStart { obj, gen });
        } else {
            self.start_repair(obj);
        }
    }

    fn select_targets(&mut self, obj: u32, count: usize) -> Vec<u32> {
        let o = &self.objects[obj as usize];
        let owner = o.owner;
        // A peer whose shard was found lost (silently) may take a new one.
        let exclude: Vec<u32> = o
            .shards
            .iter()
            .filter(|s| !s.detected)
            .map(|s| s.peer)
            .collect();
        let domain_aware = o.domain_aware;
        let cands = self.candidates(owner, &exclude);
        let mut cands: Vec<u32> = cands.into_iter().filter(|&p| self.online(p)).collect();
        if domain_aware {
            let o = &self.objects[obj as usize];
            let live_domains: Vec<u32> = o
                .shards
                .iter()
                .filter(|s| s.alive && !s.detected)
                .map(|s| self.peers[s.peer as usize].domain)
                .collect();
            let key = |p: u32| {
                let d = self.peers[p as usize].domain;
                let c = live_domains.iter().filter(|&&x| x == d).count();
                let up = self.specs[self.peers[p as usize].spec as usize]
                    .uptime
                    .mean();
                (c, -up)
            };
            cands.sort_by(|&a, &b| {
                let (ca, ua) = key(a);
                let (cb, ub) = key(b);
                ca.cmp(&cb).then(ua.total_cmp(&ub))
            });
        }
        cands.truncate(count);
        cands
    }

    fn start_repair(&mut self, obj: u32) {
        let now = self.now;
        let (owner, k) = {
            let o = &self.objects[obj as usize];
            (o.owner, o.k)
        };
        let owner_local = self.sc.owner_local_repair && self.online(owner);
        let holders: Vec<u32> = self.objects[obj as usize]
            .shards
            .iter()
            .filter(|s| s.alive && !s.detected)
            .map(|s| s.peer)
            .collect();
        let mut online_holders: Vec<u32> = Vec::new();
        for p in holders {
            if self.online(p) {
                online_holders.push(p);
            }
        }
        if !owner_local && (online_holders.len() as u32) < k {
            let o = &mut self.objects[obj as usize];
            o.state = RepairState::Scheduled;
            o.gen += 1;
            let gen = o.gen;
            self.push(now + RETRY_H, Ev::RepairStart { obj, gen });
            return;
        }
        let replacing: Vec<u32> = self.objects[obj as usize]
            .shards
            .iter()
            .filter(|s| s.detected)
            .map(|s| s.id)
            .collect();
        let targets = self.select_targets(obj, replacing.len());
        if targets.is_empty() {
            // No online peer to take a shard now: try again later.
            let o = &mut self.objects[obj as usize];
            o.state = RepairState::Scheduled;
            o.gen += 1;
            let gen = o.gen;
            self.push(now + RETRY_H, Ev::RepairStart { obj, gen });
            return;
        }
        let shard_bytes = self.object_bytes / f64::from(k);
        let mut ready = now;
        let mut bytes = 0.0;
        if !owner_local {
            online_holders.sort_by(|&a, &b| {
                self.peers[a as usize]
                    .busy_until
                    .total_cmp(&self.peers[b as usize].busy_until)
            });
            for &p in online_holders.iter().take(k as usize) {
                let bw =
                    self.specs[self.peers[p as usize].spec as usize].repair_bytes_per_s * 3600.0;
                let peer = &mut self.peers[p as usize];
                let end = peer.busy_until.max(now) + shard_bytes / bw;
                peer.busy_until = end;
                ready = ready.max(end);
                bytes += shard_bytes;
            }
        }
        // Upload of the rebuilt shards by the owner (or, without it, by the
        // first source acting as repairer).
        let uploader = if owner_local || online_holders.is_empty() {
            owner
        } else {
            online_holders[0]
        };
        let bw =
            self.specs[self.peers[uploader as usize].spec as usize].repair_bytes_per_s * 3600.0;
        let up = &mut self.peers[uploader as usize];
        let mut end = up.busy_until.max(ready);
        for _ in &targets {
            end += shard_bytes / bw;
            bytes += shard_bytes;
        }
        up.busy_until = end;
        self.stats.repair_bytes += bytes;
        let month = (now / MONTH_H) as usize;
        if self.stats.repair_bytes_monthly.len() <= month {
            self.stats.repair_bytes_monthly.resize(month + 1, 0.0);
        }
        self.stats.repair_bytes_monthly[month] += bytes;
        let o = &mut self.objects[obj as usize];
        o.replacing = replacing;
        o.replacing.truncate(targets.len());
        o.targets = targets;
        o.state = RepairState::Running;
        o.gen += 1;
        let gen = o.gen;
        self.push(end, Ev::RepairDone { obj, gen });
    }

    fn finish_repair(&mut self, obj: u32) {
        let now = self.now;
        let o = &mut self.objects[obj as usize];
        let replacing = std::mem::take(&mut o.replacing);
        let targets = std::mem::take(&mut o.targets);
        let mut first_loss = f64::INFINITY;
        o.shards.retain(|s| {
            if replacing.contains(&s.id) {
                first_loss = first_loss.min(s.lost_at);
                false
            } else {
                true
            }
        });
        let mut dead_targets = Vec::new();
        for &p in &targets {
            let id = o.next_shard_id;
            o.next_shard_id += 1;
            let alive = self.peers[p as usize].alive;
            o.shards.push(Shard {
                id,
                peer: p,
                alive,
                detected: !alive,
                lost_at: now,
            });
            if alive {
                o.live += 1;
                self.live_shards += 1;
                dead_targets.push(None);
            } else {
                dead_targets.push(Some(p));
            }
        }
        o.state = RepairState::Idle;
        if !o.shards.iter().any(|s| s.detected) {
            o.episode = false;
            if o.trigger_loss_at.is_finite() {
                self.stats.repair_latency_h.push(now - o.trigger_loss_at);
            }
        }
        for (i, &p) in targets.iter().enumerate() {
            if dead_targets[i].is_none() {
                self.peers[p as usize].holdings.push(obj);
            }
        }
        self.stats.repairs += 1;
        if first_loss.is_finite() {
            self.stats.time_to_repair_h.push(now - first_loss);
        }
        self.evaluate(obj);
    }

    fn sample(&mut self) {
        let nobj = self.objects.len();
        if nobj == 0 {
            return;
        }
        let m = if self.sc.sample_objects == 0 {
            nobj
        } else {
            self.sc.sample_objects.min(nobj)
        };
        for i in 0..m {
            let obj = if m == nobj {
                i
            } else {
                self.rng.gen_range(0..nobj)
            };
            let k = self.objects[obj].k;
            let mut up = 0u32;
            let n = self.objects[obj].shards.len();
            for j in 0..n {
                let s = self.objects[obj].shards[j];
                if s.alive && self.online(s.peer) {
                    up += 1;
                    if up >= k {
                        break;
                    }
                }
            }
            self.stats.avail_total += 1;
            if up >= k && !self.objects[obj].lost {
                self.stats.avail_ok += 1;
            }
        }
    }

    fn run(mut self) -> RunStats {
        let sc = self.sc;
        // Build the world.
        for (hi, h) in sc.households.iter().enumerate() {
            self.households.push(HouseholdState {
                peers: Vec::new(),
                down_until: 0.0,
                region: h.region,
                domain: h.domains.first().copied().unwrap_or(hi as u32),
            });
            for (pi, p) in h.peers.iter().enumerate() {
                let spec = self.spec_index(p);
                let domain = h.domains.get(pi).copied().unwrap_or(hi as u32);
                self.add_peer(hi as u32, spec, domain);
            }
        }
        self.stats.peers = self.peers.len() as u64;
        let owners: Vec<u32> = (0..self.peers.len() as u32)
            .filter(|&p| self.specs[self.peers[p as usize].spec as usize].owns_data)
            .collect();
        for &o in &owners {
            for _ in 0..sc.objects_per_owner {
                self.place(o);
            }
        }
        let nobj = self.objects.len() as f64;
        self.stats.objects = self.objects.len() as u64;
        if nobj > 0.0 {
            self.stats.mean_k /= nobj;
            self.stats.mean_n /= nobj;
            self.stats.mean_max_per_domain /= nobj;
            self.stats.mean_disaster_domains /= nobj;
        }
        // Correlated and global processes.
        let nh = self.households.len() as f64;
        let c = &sc.correlated;
        let t = exp_sample(
            &mut self.rng,
            HOURS_PER_YEAR / (c.household_outage_per_year * nh),
        );
        self.push(t, Ev::HouseholdOutage);
        let nr = self.regions.len() as f64;
        let t = exp_sample(
            &mut self.rng,
            HOURS_PER_YEAR / (c.region_outage_per_year * nr),
        );
        self.push(t, Ev::RegionOutage);
        let t = exp_sample(
            &mut self.rng,
            HOURS_PER_YEAR / (c.household_disaster_per_year * nh),
        );
        self.push(t, Ev::Disaster);
        self.schedule_silent();
        let t = exp_sample(&mut self.rng, sc.sample_every_h);
        self.push(t, Ev::Sample);

        while let Some(item) = self.heap.pop() {
            self.stats.events += 1;
            self.stats.shard_years +=
                self.live_shards as f64 * (item.t - self.last_t) / HOURS_PER_YEAR;
            self.last_t = item.t;
            self.now = item.t;
            match item.ev {
                Ev::PeerLoss { peer, depart } => self.peer_loss(peer, depart, false),
                Ev::Join {
                    household,
                    spec,
                    replaces,
                } => {
                    let domain = self.peers[replaces as usize].domain;
                    let id = self.add_peer(household, spec, domain);
                    self.stats.joins += 1;
                    let owned = std::mem::take(&mut self.peers[replaces as usize].owned);
                    for &o in &owned {
                        self.objects[o as usize].owner = id;
                    }
                    self.peers[id as usize].owned = owned;
                }
                Ev::Detect { obj, shard } => {
                    let o = &mut self.objects[obj as usize];
                    if let Some(s) = o.shards.iter_mut().find(|s| s.id == shard) {
                        if !s.detected {
                            s.detected = true;
                            self.evaluate(obj);
                        }
                    }
                }
                Ev::RepairStart { obj, gen } => {
                    let o = &mut self.objects[obj as usize];
                    if o.gen == gen && o.state == RepairState::Scheduled && !o.lost {
                        o.state = RepairState::Idle;
                        self.start_repair(obj);
                    }
                }
                Ev::RepairDone { obj, gen } => {
                    let o = &self.objects[obj as usize];
                    if o.gen == gen && o.state == RepairState::Running && !o.lost {
                        self.finish_repair(obj);
                    }
                }
                Ev::HouseholdOutage => {
                    let h = self.rng.gen_range(0..self.households.len());
                    let d = exp_sample(&mut self.rng, c.household_outage_mean_h);
                    let hh = &mut self.households[h];
                    hh.down_until = hh.down_until.max(self.now + d);
                    let t = self.now
                        + exp_sample(
                            &mut self.rng,
                            HOURS_PER_YEAR / (c.household_outage_per_year * nh),
                        );
                    self.push(t, Ev::HouseholdOutage);
                }
                Ev::RegionOutage => {
                    let r = self.rng.gen_range(0..self.regions.len());
                    let d = exp_sample(&mut self.rng, c.region_outage_mean_h);
                    self.regions[r] = self.regions[r].max(self.now + d);
                    let t = self.now
                        + exp_sample(
                            &mut self.rng,
                            HOURS_PER_YEAR / (c.region_outage_per_year * nr),
                        );
                    self.push(t, Ev::RegionOutage);
                }
                Ev::Disaster => {
                    self.stats.disasters += 1;
                    let h = self.rng.gen_range(0..self.households.len());
                    let dom = self.households[h].domain;
                    let members = self.households[h].peers.clone();
                    for p in members {
                        if self.peers[p as usize].domain == dom {
                            self.peer_loss(p, false, true);
                        }
                    }
                    let t = self.now
                        + exp_sample(
                            &mut self.rng,
                            HOURS_PER_YEAR / (c.household_disaster_per_year * nh),
                        );
                    self.push(t, Ev::Disaster);
                }
                Ev::SilentLoss => {
                    self.silent_loss();
                    self.schedule_silent();
                }
                Ev::Sample => {
                    self.sample();
                    if sc.max_samples > 0 && self.stats.avail_total >= sc.max_samples {
                        continue;
                    }
                    let t = self.now + exp_sample(&mut self.rng, sc.sample_every_h);
                    self.push(t, Ev::Sample);
                }
            }
        }
        // Exposure of objects not lost.
        let horizon_y = self.horizon / HOURS_PER_YEAR;
        let survivors = self.objects.iter().filter(|o| !o.lost).count() as f64;
        self.stats.object_years += survivors * horizon_y;
        self.stats.shard_years +=
            self.live_shards as f64 * (self.horizon - self.last_t) / HOURS_PER_YEAR;
        self.stats
    }

    /// Silent losses: one Poisson process over all shards at the largest
    /// per-shard rate, thinned per shard to its holder's rate.
    fn max_silent_rate(&self) -> f64 {
        self.specs
            .iter()
            .map(|s| s.silent_loss_per_shard_year)
            .fold(0.0, f64::max)
    }

    fn schedule_silent(&mut self) {
        let rate = self.max_silent_rate() * self.live_shards as f64;
        if rate > 0.0 {
            let t = self.now + exp_sample(&mut self.rng, HOURS_PER_YEAR / rate);
            self.push(t, Ev::SilentLoss);
        }
    }

    fn silent_loss(&mut self) {
        if self.objects.is_empty() {
            return;
        }
        let max = self.max_silent_rate();
        // Pick a uniformly random live shard by rejection over objects.
        for _ in 0..64 {
            let obj = self.rng.gen_range(0..self.objects.len());
            let o = &self.objects[obj];
            if o.lost || o.shards.is_empty() {
                continue;
            }
            let n = o.shards.len();
            if self.rng.gen_range(0..16usize.max(n)) >= n {
                continue;
            }
            let idx = self.rng.gen_range(0..n);
            let s = self.objects[obj].shards[idx];
            if !s.alive {
                return;
            }
            let rate =
                self.specs[self.peers[s.peer as usize].spec as usize].silent_loss_per_shard_year;
            if self.rng.gen::<f64>() * max < rate {
                self.kill_shard(obj as u32, idx, Some(0.0), false);
            }
            return;
        }
    }
}

/// Run one simulation of `scenario` with `seed`.
pub fn simulate(scenario: &Scenario, seed: u64) -> RunStats {
    Sim::new(scenario, seed).run()
}

/// Run `runs` simulations with seeds `seed, seed + 1, ...` in parallel (rayon).
/// The result is in run order and does not depend on the thread count.
pub fn simulate_many(scenario: &Scenario, runs: u32, seed: u64) -> Vec<RunStats> {
    use rayon::prelude::*;
    (0..u64::from(runs))
        .into_par_iter()
        .map(|i| simulate(scenario, seed.wrapping_add(i)))
        .collect()
}
