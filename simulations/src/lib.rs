//! `kith-sim`: a discrete-event simulator of kith's durability and scale.
//!
//! It models households and strangers (diurnal laptops, always-on desktops
//! and NAS, a cloud bucket as a member), permanent failures (exponential or
//! Weibull lifetimes), correlated outages and disasters, joins and
//! departures, k-of-n placement policies (fixed, failure-domain-aware,
//! availability-aware, and kith's own [`kith_node::policy::choose_placement`])
//! and repair policies (threshold, lazy, eager) with per-peer bandwidth
//! limits and audits that find silent loss after a delay.
//!
//! Runs are deterministic for a seed (one ChaCha RNG per run, seed = base +
//! run index) and run in parallel with rayon. Rare-loss probabilities come
//! from a Markov model fed with simulated rates ([`analytic::markov_loss`]),
//! validated against the simulation where loss is frequent.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
// The simulator indexes its own vectors of simulated peers by ids it hands
// out itself; it decodes nothing from a repository, a disk or a peer.
#![allow(clippy::indexing_slicing)]

pub mod analytic;
pub mod engine;
pub mod experiments;
pub mod model;
pub mod plot;
pub mod scenarios;
pub mod sweep;
