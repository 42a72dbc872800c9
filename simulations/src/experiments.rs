//! Experiments built on the engine: the validation cases and the summary of
//! a scenario's runs.

use serde::{Deserialize, Serialize};

use crate::analytic::{
    binomial_at_least, markov_loss, no_repair_loss, poisson_ci95, wilson, MarkovInput,
};
use crate::engine::{simulate, simulate_many, RunStats};
use crate::model::{RepairPolicy, Scenario, HOURS_PER_YEAR};
use crate::scenarios::independent;

/// Result of `kith-sim availability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityReport {
    /// Shards needed.
    pub k: u32,
    /// Shards stored.
    pub n: u32,
    /// Each holder's probability of being online.
    pub uptime: f64,
    /// Samples taken.
    pub trials: u64,
    /// Base seed.
    pub seed: u64,
    /// Fraction of samples with at least k holders online.
    pub availability: f64,
    /// Lower end of the 99.99% (z = 4) Wilson interval.
    pub ci_low: f64,
    /// Upper end of the 99.99% (z = 4) Wilson interval.
    pub ci_high: f64,
    /// z used for the interval.
    pub ci_z: f64,
    /// Closed form `P(Bin(n, uptime) >= k)`.
    pub expected: f64,
    /// Standard error of `availability` under the closed form.
    pub std_error: f64,
    /// `expected` lies inside `[ci_low, ci_high]`.
    pub agrees: bool,
    /// Simulation runs used (samples per run at most 2000).
    pub runs: u32,
    /// How the number was obtained.
    pub method: String,
}

/// Samples per run in the availability experiment.
const SAMPLES_PER_RUN: u64 = 2000;

/// Simulated restore availability of one k-of-n object on independent
/// peers with the given uptime, against the closed-form binomial value.
///
/// Each run simulates `n` peers with exponential on/off periods (mean
/// offline 1 h) and samples the object at Poisson times spaced far apart
/// (mean 200 on/off cycles), so samples are independent.
pub fn availability_experiment(
    k: u32,
    n: u32,
    uptime: f64,
    trials: u64,
    seed: u64,
) -> AvailabilityReport {
    let uptime = uptime.clamp(0.0, 1.0);
    let cycle_h = (1.0 / (1.0 - uptime).max(1e-6)).min(1e6);
    let spacing = 200.0 * cycle_h;
    let runs = trials.div_ceil(SAMPLES_PER_RUN).max(1);
    let per_run = |i: u64| -> u64 {
        if i + 1 < runs {
            SAMPLES_PER_RUN
        } else {
            trials - SAMPLES_PER_RUN * (runs - 1)
        }
    };
    let make = |samples: u64| {
        let mut sc = independent(
            k,
            n,
            uptime,
            0.0,
            (samples as f64 + 10.0) * spacing * 4.0 / HOURS_PER_YEAR,
        );
        sc.sample_every_h = spacing;
        sc.max_samples = samples;
        sc
    };
    use rayon::prelude::*;
    let results: Vec<RunStats> = (0..runs)
        .into_par_iter()
        .map(|i| simulate(&make(per_run(i)), seed.wrapping_add(i)))
        .collect();
    let ok: u64 = results.iter().map(|r| r.avail_ok).sum();
    let total: u64 = results.iter().map(|r| r.avail_total).sum();
    let z = 4.0;
    let (lo, hi) = wilson(ok, total, z);
    let expected = binomial_at_least(n, k, uptime);
    let availability = if total > 0 {
        ok as f64 / total as f64
    } else {
        0.0
    };
    AvailabilityReport {
        k,
        n,
        uptime,
        trials: total,
        seed,
        availability,
        ci_low: lo,
        ci_high: hi,
        ci_z: z,
        expected,
        std_error: (expected * (1.0 - expected) / (total.max(1) as f64)).sqrt(),
        agrees: expected >= lo && expected <= hi,
        runs: runs as u32,
        method: "discrete-event simulation, independent exponential on/off peers, no failures"
            .into(),
    }
}

/// Result of the no-repair loss validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossReport {
    /// Shards needed.
    pub k: u32,
    /// Shards stored.
    pub n: u32,
    /// Annual failure rate of a holder.
    pub afr: f64,
    /// Horizon, years.
    pub years: f64,
    /// Objects simulated (one per run).
    pub trials: u64,
    /// Fraction lost by the horizon.
    pub loss: f64,
    /// Wilson interval low (z = 4).
    pub ci_low: f64,
    /// Wilson interval high (z = 4).
    pub ci_high: f64,
    /// Closed form `P(Bin(n, e^{-afr * years}) < k)`.
    pub expected: f64,
    /// `expected` inside the interval.
    pub agrees: bool,
}

/// Simulated loss without repair against the closed-form binomial.
pub fn loss_experiment(k: u32, n: u32, afr: f64, years: f64, trials: u64, seed: u64) -> LossReport {
    let sc = independent(k, n, 0.9, afr, years);
    let runs = simulate_many(&sc, trials as u32, seed);
    let lost: u64 = runs.iter().map(|r| r.losses).sum();
    let (lo, hi) = wilson(lost, trials, 4.0);
    let expected = no_repair_loss(k, n, afr, years);
    LossReport {
        k,
        n,
        afr,
        years,
        trials,
        loss: lost as f64 / trials.max(1) as f64,
        ci_low: lo,
        ci_high: hi,
        expected,
        agrees: expected >= lo && expected <= hi,
    }
}

/// Summary of many runs of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Placement policy (as JSON).
    pub placement: serde_json::Value,
    /// Repair policy (as JSON).
    pub repair: serde_json::Value,
    /// Household disasters per household-year assumed.
    pub disaster_per_year: f64,
    /// Runs.
    pub runs: u32,
    /// Years per run.
    pub years: f64,
    /// Base seed.
    pub seed: u64,
    /// Peers at start (per run).
    pub peers: u64,
    /// Objects per run.
    pub objects: u64,
    /// Mean k.
    pub k: f64,
    /// Mean n.
    pub n: f64,
    /// Storage overhead: stored bytes / protected bytes.
    pub overhead: f64,
    /// Object losses observed over all runs.
    pub losses: u64,
    /// Object-years at risk over all runs.
    pub object_years: f64,
    /// Observed losses per object-year (simulation).
    pub loss_per_object_year_sim: f64,
    /// 95% interval low of the observed rate.
    pub loss_sim_ci_low: f64,
    /// 95% interval high of the observed rate (an upper bound when 0 losses).
    pub loss_sim_ci_high: f64,
    /// Markov model inputs (measured by the simulation).
    pub markov_input: MarkovInput,
    /// Markov model annual loss probability, independent failures only.
    pub annual_loss_markov_independent: f64,
    /// Markov model annual loss probability including disasters.
    pub annual_loss_markov: f64,
    /// Fraction of samples with >= k holders online.
    pub availability: f64,
    /// Availability interval low (z = 4).
    pub availability_ci_low: f64,
    /// Availability interval high (z = 4).
    pub availability_ci_high: f64,
    /// Repair traffic, TB moved per TB protected per year.
    pub repair_tb_per_tb_year: f64,
    /// Repairs per object-year.
    pub repairs_per_object_year: f64,
    /// Mean hours from the first loss to repair done.
    pub time_to_repair_mean_h: f64,
    /// Median of the same.
    pub time_to_repair_p50_h: f64,
    /// 99th percentile of the same.
    pub time_to_repair_p99_h: f64,
    /// Mean hours from the triggering loss to repair done.
    pub repair_latency_mean_h: f64,
    /// Independent shard loss rate per shard-year.
    pub shard_loss_per_year: f64,
    /// Mean repair traffic per month over runs, TB per TB protected.
    pub monthly_repair_tb_per_tb: Vec<f64>,
    /// Events processed over all runs.
    pub events: u64,
    /// Objects that could not be placed (per run, mean).
    pub unplaced: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Summarise runs of `sc` (combining simulation and the Markov model).
pub fn summarise(sc: &Scenario, runs: &[RunStats], seed: u64) -> Summary {
    let r = runs.len().max(1) as f64;
    let sum = |f: &dyn Fn(&RunStats) -> f64| runs.iter().map(f).sum::<f64>();
    let losses: u64 = runs.iter().map(|x| x.losses).sum();
    let object_years = sum(&|x| x.object_years);
    let (clo, chi) = poisson_ci95(losses);
    let oy = object_years.max(1e-12);
    let ok: u64 = runs.iter().map(|x| x.avail_ok).sum();
    let tot: u64 = runs.iter().map(|x| x.avail_total).sum();
    let (alo, ahi) = wilson(ok, tot, 4.0);
    let protected = sum(&|x| x.protected_bytes);
    let stored = sum(&|x| x.stored_bytes);
    let repair_bytes = sum(&|x| x.repair_bytes);
    let mut ttr: Vec<f64> = runs
        .iter()
        .flat_map(|x| x.time_to_repair_h.iter().copied())
        .collect();
    ttr.sort_by(f64::total_cmp);
    let lat: Vec<f64> = runs
        .iter()
        .flat_map(|x| x.repair_latency_h.iter().copied())
        .collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let shard_years = sum(&|x| x.shard_years).max(1e-12);
    let lam = sum(&|x| x.shard_losses_independent as f64) / shard_years;
    let k = sum(&|x| x.mean_k) / r;
    let n = sum(&|x| x.mean_n) / r;
    let ki = k.round().max(1.0) as u32;
    let ni = n.round().max(1.0) as u32;
    let repair_extra = match sc.repair {
        RepairPolicy::None => None,
        RepairPolicy::Eager => Some(ni.saturating_sub(ki + 1)),
        RepairPolicy::Threshold { extra } | RepairPolicy::Lazy { extra, .. } => Some(extra),
    };
    let latency = if lat.is_empty() {
        sc.audit.declare_dead_h + sc.audit.interval_h
    } else {
        mean(&lat)
    };
    let dd = sum(&|x| x.mean_disaster_domains) / r;
    let jump = (sum(&|x| x.mean_max_per_domain) / r).ceil() as u32;
    let minp = MarkovInput {
        k: ki,
        n: ni,
        shard_loss_per_year: lam,
        repair_extra,
        repair_latency_h: latency,
        correlated_per_year: sc.correlated.household_disaster_per_year * dd,
        correlated_jump: jump,
    };
    let indep = markov_loss(&MarkovInput {
        correlated_per_year: 0.0,
        ..minp.clone()
    });
    let full = markov_loss(&minp);
    let months = runs
        .iter()
        .map(|x| x.repair_bytes_monthly.len())
        .max()
        .unwrap_or(0);
    let prot_per_run = protected / r;
    let monthly = (0..months)
        .map(|m| {
            runs.iter()
                .map(|x| x.repair_bytes_monthly.get(m).copied().unwrap_or(0.0))
                .sum::<f64>()
                / r
                / prot_per_run.max(1.0)
        })
        .collect();
    Summary {
        scenario: sc.name.clone(),
        placement: serde_json::to_value(&sc.placement).unwrap_or_default(),
        repair: serde_json::to_value(&sc.repair).unwrap_or_default(),
        disaster_per_year: sc.correlated.household_disaster_per_year,
        runs: runs.len() as u32,
        years: sc.years,
        seed,
        peers: runs.first().map(|x| x.peers).unwrap_or(0),
        objects: runs.first().map(|x| x.objects).unwrap_or(0),
        k,
        n,
        overhead: if protected > 0.0 {
            stored / protected
        } else {
            0.0
        },
        losses,
        object_years,
        loss_per_object_year_sim: losses as f64 / oy,
        loss_sim_ci_low: clo / oy,
        loss_sim_ci_high: chi / oy,
        markov_input: minp,
        annual_loss_markov_independent: indep.annual_loss,
        annual_loss_markov: full.annual_loss,
        availability: if tot > 0 { ok as f64 / tot as f64 } else { 0.0 },
        availability_ci_low: alo,
        availability_ci_high: ahi,
        repair_tb_per_tb_year: repair_bytes / protected.max(1.0) / sc.years,
        repairs_per_object_year: sum(&|x| x.repairs as f64) / oy,
        time_to_repair_mean_h: mean(&ttr),
        time_to_repair_p50_h: quantile(&ttr, 0.5),
        time_to_repair_p99_h: quantile(&ttr, 0.99),
        repair_latency_mean_h: latency,
        shard_loss_per_year: lam,
        monthly_repair_tb_per_tb: monthly,
        events: runs.iter().map(|x| x.events).sum(),
        unplaced: sum(&|x| x.unplaced as f64) / r,
    }
}

/// Run and summarise.
pub fn run_scenario(sc: &Scenario, runs: u32, seed: u64) -> Summary {
    let stats = simulate_many(sc, runs, seed);
    summarise(sc, &stats, seed)
}
