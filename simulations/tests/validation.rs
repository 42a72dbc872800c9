//! Validation of the simulator against closed forms, determinism across
//! thread counts, and a few properties. All seeds are fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kith_sim::analytic::{binomial_at_least, markov_loss, no_repair_loss, wilson};
use kith_sim::engine::{simulate, simulate_many};
use kith_sim::experiments::{availability_experiment, loss_experiment, run_scenario};
use kith_sim::model::RepairPolicy;
use kith_sim::scenarios;
use proptest::prelude::*;

/// No repair, independent peers: simulated restore availability agrees with
/// P(Bin(n, p) >= k) within 4 standard errors, for several (k, n, p).
#[test]
fn availability_matches_binomial() {
    let cases = [
        (1u32, 1u32, 0.5f64),
        (1, 3, 0.5),
        (2, 4, 0.7),
        (4, 6, 0.7),
        (3, 5, 0.9),
        (6, 8, 0.8),
        (8, 12, 0.6),
        (10, 16, 0.5),
        (5, 5, 0.95),
    ];
    for (i, &(k, n, p)) in cases.iter().enumerate() {
        let trials = 20_000;
        let r = availability_experiment(k, n, p, trials, 1000 + i as u64);
        let expected = binomial_at_least(n, k, p);
        assert!((r.expected - expected).abs() < 1e-12);
        assert_eq!(r.trials, trials);
        let se = (expected * (1.0 - expected) / trials as f64)
            .sqrt()
            .max(1e-9);
        assert!(
            (r.availability - expected).abs() <= 4.0 * se,
            "k={k} n={n} p={p}: simulated {} vs binomial {expected} (se {se})",
            r.availability
        );
        assert!(r.agrees, "{r:?}");
        assert!(r.ci_low <= r.availability && r.availability <= r.ci_high);
    }
}

/// No repair, independent exponential lifetimes: the fraction of objects
/// lost within a year agrees with P(Bin(n, e^{-λ}) < k) within 4 standard
/// errors.
#[test]
fn loss_without_repair_matches_binomial() {
    for (i, &(k, n, afr)) in [(2u32, 4u32, 0.3f64), (4, 6, 0.25), (1, 3, 0.6), (6, 9, 0.3)]
        .iter()
        .enumerate()
    {
        let trials = 8_000;
        let r = loss_experiment(k, n, afr, 1.0, trials, 77 + i as u64);
        let expected = no_repair_loss(k, n, afr, 1.0);
        let se = (expected * (1.0 - expected) / trials as f64).sqrt();
        assert!(
            (r.loss - expected).abs() <= 4.0 * se,
            "k={k} n={n} afr={afr}: simulated {} vs closed form {expected}",
            r.loss
        );
    }
}

/// With eager repair at failure rates high enough to observe losses, the
/// Markov model fed with the simulated repair latency agrees with the
/// simulated loss rate (it is a model, so within a factor of 1.6; it errs on
/// the conservative side).
#[test]
fn markov_model_matches_simulation_where_loss_is_observable() {
    for &(k, n, afr) in &[(2u32, 4u32, 8.0f64), (4, 6, 8.0)] {
        let mut sc = scenarios::independent(k, n, 0.95, afr, 2.0);
        let spare = sc.households[1].clone();
        for i in 0..6u32 {
            let mut h = spare.clone();
            h.domains = vec![n + 1 + i];
            sc.households.push(h);
        }
        sc.replace_after_h = Some(0.0);
        sc.repair = RepairPolicy::Eager;
        let s = run_scenario(&sc, 300, 4242);
        assert!(s.losses > 50, "too few losses to compare: {}", s.losses);
        let m = markov_loss(&s.markov_input);
        let rate = 1.0 / m.mttdl_years;
        assert!(
            rate >= s.loss_sim_ci_low / 1.6 && rate <= s.loss_sim_ci_high * 1.6,
            "k={k} n={n}: markov {rate} vs sim {} [{}, {}]",
            s.loss_per_object_year_sim,
            s.loss_sim_ci_low,
            s.loss_sim_ci_high
        );
    }
}

/// Results are identical for a seed whatever the number of threads.
#[test]
fn deterministic_across_thread_counts() {
    let mut sc = scenarios::three_households();
    sc.years = 1.0;
    sc.repair = RepairPolicy::Eager;
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| simulate_many(&sc, 6, 99));
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| simulate_many(&sc, 6, 99));
    assert_eq!(one, two);
    // And each run equals the same run done alone.
    assert_eq!(one[3], simulate(&sc, 102));
    // A different seed gives a different history.
    assert_ne!(one[0], simulate(&sc, 1_000_000));
    // The availability subcommand's experiment too.
    let a = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| availability_experiment(3, 5, 0.6, 5000, 5));
    let b = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| availability_experiment(3, 5, 0.6, 5000, 5));
    assert_eq!(a, b);
}

/// The simulator's kith placement is the node's `choose_placement`: the
/// household gets exactly what the function returns for its peers.
#[test]
fn kith_placement_is_the_node_policy() {
    use kith_node::policy::{choose_placement, PeerProfile, PolicyGoal};
    let mut sc = scenarios::household();
    sc.years = 0.01;
    let s = run_scenario(&sc, 1, 1);
    let kn_of = |ups: [f64; 5]| {
        let peers = ups.map(|u| PeerProfile {
            uptime: u,
            failure_domain: 0,
            always_on: u > 0.9,
        });
        let p = choose_placement(&peers, &PolicyGoal::default(), sc.object_bytes).unwrap();
        (f64::from(p.k), f64::from(p.n))
    };
    // Owners: 2 desktops (see 1 desktop, 3 laptops, NAS) and 3 laptops
    // (see 2 desktops, 2 laptops, NAS).
    let d = kn_of([0.95, 0.5, 0.5, 0.5, 0.97]);
    let l = kn_of([0.95, 0.95, 0.5, 0.5, 0.97]);
    let want_k = (2.0 * d.0 + 3.0 * l.0) / 5.0;
    let want_n = (2.0 * d.1 + 3.0 * l.1) / 5.0;
    assert!(
        (s.n - want_n).abs() < 1e-9,
        "sim n {} policy n {want_n}",
        s.n
    );
    assert!(
        (s.k - want_k).abs() < 1e-9,
        "sim k {} policy k {want_k}",
        s.k
    );
}

/// Repair reduces loss and costs traffic; no repair costs none.
#[test]
fn repair_helps_and_costs_traffic() {
    let mut sc = scenarios::household();
    sc.correlated.household_disaster_per_year = 0.0;
    sc.repair = RepairPolicy::None;
    let none = run_scenario(&sc, 100, 3);
    sc.repair = RepairPolicy::Eager;
    let eager = run_scenario(&sc, 100, 3);
    assert_eq!(none.repair_tb_per_tb_year, 0.0);
    assert!(eager.repair_tb_per_tb_year > 0.0);
    assert!(eager.losses <= none.losses);
    assert!(eager.annual_loss_markov < none.annual_loss_markov);
    assert!(eager.availability > none.availability);
}

/// Degenerate uptimes: never online, always online.
#[test]
fn availability_edge_uptimes() {
    let r = availability_experiment(1, 3, 0.0, 500, 1);
    assert_eq!(r.availability, 0.0);
    assert!(r.agrees);
    let r = availability_experiment(3, 3, 1.0, 500, 1);
    assert_eq!(r.availability, 1.0);
    assert!(r.agrees);
}

#[test]
fn wilson_interval_covers() {
    let (lo, hi) = wilson(0, 100, 4.0);
    assert_eq!(lo, 0.0);
    assert!(hi > 0.0 && hi < 0.2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The binomial tail is monotone in k and p and within [0, 1].
    #[test]
    fn binomial_tail_is_monotone(n in 1u32..20, k in 1u32..20, p in 0.0f64..1.0) {
        prop_assume!(k <= n);
        let a = binomial_at_least(n, k, p);
        prop_assert!((0.0..=1.0).contains(&a));
        if k < n {
            prop_assert!(binomial_at_least(n, k + 1, p) <= a + 1e-12);
        }
        prop_assert!(binomial_at_least(n, k, (p + 0.1).min(1.0)) + 1e-12 >= a);
    }

    /// Any small independent world: the simulation is a pure function of
    /// the seed, and counts are consistent.
    #[test]
    fn runs_are_pure_and_consistent(k in 1u32..4, extra in 0u32..3, afr in 0.0f64..2.0, seed in 0u64..1000) {
        let n = k + extra;
        let mut sc = scenarios::independent(k, n, 0.8, afr, 1.0);
        sc.repair = RepairPolicy::Eager;
        sc.replace_after_h = Some(24.0);
        sc.sample_every_h = 100.0;
        let a = simulate(&sc, seed);
        let b = simulate(&sc, seed);
        prop_assert_eq!(&a, &b);
        prop_assert!(a.losses <= a.objects);
        prop_assert!(a.avail_ok <= a.avail_total);
        prop_assert!(a.object_years <= a.objects as f64 * 1.0 + 1e-9);
    }
}

/// Weibull lifetimes with the same mean: without repair, the loss fraction
/// over the horizon matches the closed form with the Weibull survival
/// function in place of the exponential one.
#[test]
fn weibull_lifetimes_match_closed_form() {
    let (k, n, afr, shape, years) = (2u32, 4u32, 0.5f64, 2.0f64, 1.0f64);
    let mut sc = scenarios::independent(k, n, 0.9, afr, years);
    scenarios::with_weibull(&mut sc, shape);
    let trials = 8_000u32;
    let runs = simulate_many(&sc, trials, 5);
    let lost: u64 = runs.iter().map(|r| r.losses).sum();
    let frac = lost as f64 / f64::from(trials);
    let scale = 1.0 / afr / kith_sim::analytic::gamma(1.0 + 1.0 / shape);
    let survive = (-(years / scale).powf(shape)).exp();
    let expected = 1.0 - binomial_at_least(n, k, survive);
    let se = (expected * (1.0 - expected) / f64::from(trials)).sqrt();
    assert!(
        (frac - expected).abs() <= 4.0 * se,
        "weibull: simulated {frac} vs closed form {expected}"
    );
}
