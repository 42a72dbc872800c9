//! The `kith-sim` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use kith_sim::experiments::{availability_experiment, loss_experiment, run_scenario};
use kith_sim::model::PlacementPolicy;
use kith_sim::scenarios;
use kith_sim::sweep::{markdown, parse_repair, placements_for, repairs_for, sweep};

#[derive(Parser)]
#[command(
    name = "kith-sim",
    about = "kith durability and scale simulator",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct PolicyArgs {
    /// Placement: kith (calls kith-node's choose_placement), fixed, domain,
    /// avail (Total Recall style). Default: the scenario's (kith).
    #[arg(long)]
    policy: Option<String>,
    /// k for fixed/domain/avail placements.
    #[arg(long)]
    k: Option<u32>,
    /// n for fixed/domain placements, cap on n for avail.
    #[arg(long)]
    n: Option<u32>,
    /// F (losses survivable) for the kith placement.
    #[arg(long)]
    f: Option<u32>,
    /// Cap on n for the kith placement (default: the policy's default).
    #[arg(long)]
    max_shards: Option<u32>,
    /// Target availability for kith/avail placements.
    #[arg(long)]
    target: Option<f64>,
    /// Repair: none, eager, threshold:E, lazy:E:HOURS.
    #[arg(long)]
    repair: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Restore availability of one k-of-n object on independent peers,
    /// simulated, against the closed-form binomial value (JSON).
    Availability {
        /// Shards needed.
        #[arg(long)]
        k: u32,
        /// Shards stored.
        #[arg(long)]
        n: u32,
        /// Probability that a peer is online.
        #[arg(long)]
        uptime: f64,
        /// Samples.
        #[arg(long, default_value_t = 100_000)]
        trials: u64,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Probability of loss without repair on independent peers, simulated,
    /// against the closed-form binomial value (JSON).
    Loss {
        /// Shards needed.
        #[arg(long)]
        k: u32,
        /// Shards stored.
        #[arg(long)]
        n: u32,
        /// Annual failure rate of a holder.
        #[arg(long)]
        afr: f64,
        /// Horizon in years.
        #[arg(long, default_value_t = 1.0)]
        years: f64,
        /// Objects simulated.
        #[arg(long, default_value_t = 20_000)]
        trials: u64,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run one scenario and print its summary.
    Run {
        /// household, household-bucket, three-households, strangers.
        #[arg(long, default_value = "household")]
        scenario: String,
        /// Simulated years per run.
        #[arg(long, default_value_t = 5.0)]
        years: f64,
        /// Runs.
        #[arg(long, default_value_t = 200)]
        runs: u32,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Peers in the strangers scenario.
        #[arg(long, default_value_t = 10_000)]
        peers: u32,
        /// Household disasters per household-year.
        #[arg(long)]
        disaster: Option<f64>,
        /// Weibull lifetimes of this shape (same mean) instead of exponential.
        #[arg(long)]
        weibull: Option<f64>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print the summary as JSON (default: a Markdown row and JSON).
        #[arg(long)]
        json: bool,
        /// Write plots of this run into DIR.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Sweep placements × repair policies for a scenario (the k/n table).
    Sweep {
        /// Scenario name.
        #[arg(long, default_value = "household")]
        scenario: String,
        /// Simulated years per run.
        #[arg(long, default_value_t = 5.0)]
        years: f64,
        /// Runs per cell.
        #[arg(long, default_value_t = 100)]
        runs: u32,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Peers in the strangers scenario.
        #[arg(long, default_value_t = 2_000)]
        peers: u32,
        /// Household disasters per household-year.
        #[arg(long)]
        disaster: Option<f64>,
        /// Weibull lifetimes of this shape (same mean) instead of exponential.
        #[arg(long)]
        weibull: Option<f64>,
        /// Write the rows as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write plots into DIR.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Run every scenario with its recommended default policy; print a
    /// Markdown table and JSON, and plot repair traffic over time.
    Defaults {
        /// Runs per scenario (the strangers scenario uses a tenth, min 2).
        #[arg(long, default_value_t = 200)]
        runs: u32,
        /// Simulated years.
        #[arg(long, default_value_t = 5.0)]
        years: f64,
        /// Peers in the strangers scenario.
        #[arg(long, default_value_t = 5_000)]
        peers: u32,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write plots into DIR.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Scale benchmark: one run of the strangers scenario.
    Scale {
        /// Peers.
        #[arg(long, default_value_t = 100_000)]
        peers: u32,
        /// Simulated years.
        #[arg(long, default_value_t = 5.0)]
        years: f64,
        /// Runs (in parallel with rayon).
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Validation: availability and no-repair loss vs closed forms, and the
    /// Markov model vs simulation at high failure rates (JSON).
    Validate {
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write plots into DIR.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn apply_policy(sc: &mut kith_sim::model::Scenario, a: &PolicyArgs) -> Result<(), String> {
    let goal = kith_node::policy::PolicyGoal::default();
    if let Some(p) = &a.policy {
        sc.placement = match p.as_str() {
            "kith" => PlacementPolicy::Kith {
                losses_survivable: a.f.unwrap_or(goal.losses_survivable),
                max_shards: a.max_shards.unwrap_or(goal.max_shards),
                target_availability: a.target.unwrap_or(goal.target_availability),
                max_overhead: goal.max_overhead,
            },
            "fixed" | "domain" => {
                let (k, n) = (a.k.ok_or("--k needed")?, a.n.ok_or("--n needed")?);
                if p == "fixed" {
                    PlacementPolicy::Fixed { k, n }
                } else {
                    PlacementPolicy::DomainAware { k, n }
                }
            }
            "avail" => PlacementPolicy::AvailabilityAware {
                k: a.k.ok_or("--k needed")?,
                max_n: a.n.unwrap_or(16),
                target: a.target.unwrap_or(0.999),
            },
            other => return Err(format!("unknown policy {other}")),
        };
    }
    if let Some(r) = &a.repair {
        sc.repair = parse_repair(r).ok_or_else(|| format!("bad --repair {r}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Availability {
            k,
            n,
            uptime,
            trials,
            seed,
        } => {
            if k == 0 || k > n || !(0.0..=1.0).contains(&uptime) || trials == 0 {
                eprintln!("need 1 <= k <= n, 0 <= uptime <= 1, trials >= 1");
                return ExitCode::from(2);
            }
            print_json(&availability_experiment(k, n, uptime, trials, seed))
        }
        Cmd::Loss {
            k,
            n,
            afr,
            years,
            trials,
            seed,
        } => {
            if k == 0 || k > n || afr < 0.0 || trials == 0 {
                eprintln!("need 1 <= k <= n, afr >= 0, trials >= 1");
                return ExitCode::from(2);
            }
            print_json(&loss_experiment(k, n, afr, years, trials, seed))
        }
        Cmd::Run {
            scenario,
            years,
            runs,
            seed,
            peers,
            disaster,
            weibull,
            policy,
            json,
            plot,
        } => {
            let Some(mut sc) = scenarios::by_name(&scenario, peers) else {
                eprintln!("unknown scenario {scenario}; one of {:?}", scenarios::NAMES);
                return ExitCode::from(2);
            };
            sc.years = years;
            if let Some(d) = disaster {
                sc.correlated.household_disaster_per_year = d;
            }
            if let Some(shape) = weibull {
                if shape <= 0.0 {
                    eprintln!("--weibull needs a positive shape");
                    return ExitCode::from(2);
                }
                scenarios::with_weibull(&mut sc, shape);
            }
            if let Err(e) = apply_policy(&mut sc, &policy) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            let t0 = Instant::now();
            let s = run_scenario(&sc, runs, seed);
            eprintln!("{} runs in {:.1} s", runs, t0.elapsed().as_secs_f64());
            if let Some(dir) = plot {
                if let Err(e) = kith_sim::plot::traffic(&dir, std::slice::from_ref(&s)) {
                    eprintln!("plot: {e}");
                }
            }
            if !json {
                let row = kith_sim::sweep::SweepRow {
                    placement: kith_sim::sweep::placement_label(&sc.placement),
                    repair: kith_sim::sweep::repair_label(&sc.repair),
                    summary: s.clone(),
                };
                eprintln!("{}", markdown(&[row]));
            }
            print_json(&s)
        }
        Cmd::Sweep {
            scenario,
            years,
            runs,
            seed,
            peers,
            disaster,
            weibull,
            out,
            plot,
        } => {
            let Some(mut sc) = scenarios::by_name(&scenario, peers) else {
                eprintln!("unknown scenario {scenario}; one of {:?}", scenarios::NAMES);
                return ExitCode::from(2);
            };
            sc.years = years;
            if let Some(d) = disaster {
                sc.correlated.household_disaster_per_year = d;
            }
            if let Some(shape) = weibull {
                if shape <= 0.0 {
                    eprintln!("--weibull needs a positive shape");
                    return ExitCode::from(2);
                }
                scenarios::with_weibull(&mut sc, shape);
            }
            let t0 = Instant::now();
            let rows = sweep(
                &sc,
                &placements_for(&scenario),
                &repairs_for(&scenario),
                runs,
                seed,
            );
            eprintln!("sweep in {:.1} s", t0.elapsed().as_secs_f64());
            println!("{}", markdown(&rows));
            if let Some(path) = out {
                match serde_json::to_string_pretty(&rows) {
                    Ok(s) => {
                        if let Err(e) = std::fs::write(&path, s) {
                            eprintln!("write {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if let Some(dir) = plot {
                if let Err(e) = kith_sim::plot::loss_vs_overhead(&dir, &scenario, &rows) {
                    eprintln!("plot: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Cmd::Defaults {
            runs,
            years,
            peers,
            seed,
            plot,
        } => {
            let mut sums = Vec::new();
            let mut rows = Vec::new();
            for name in scenarios::NAMES {
                let Some(mut sc) = scenarios::by_name(name, peers) else {
                    continue;
                };
                sc.years = years;
                let r = if *name == "strangers" {
                    (runs / 10).max(2)
                } else {
                    runs
                };
                let s = run_scenario(&sc, r, seed);
                rows.push(kith_sim::sweep::SweepRow {
                    placement: format!(
                        "{}: {}",
                        name,
                        kith_sim::sweep::placement_label(&sc.placement)
                    ),
                    repair: kith_sim::sweep::repair_label(&sc.repair),
                    summary: s.clone(),
                });
                sums.push(s);
            }
            eprintln!("{}", markdown(&rows));
            if let Some(dir) = plot {
                if let Err(e) = kith_sim::plot::traffic(&dir, &sums) {
                    eprintln!("plot: {e}");
                    return ExitCode::FAILURE;
                }
            }
            print_json(&rows)
        }
        Cmd::Scale {
            peers,
            years,
            runs,
            seed,
        } => {
            let mut sc = scenarios::strangers(peers);
            sc.years = years;
            let t0 = Instant::now();
            let s = run_scenario(&sc, runs, seed);
            let wall = t0.elapsed().as_secs_f64();
            let out = serde_json::json!({
                "peers": peers,
                "years": years,
                "runs": runs,
                "threads": rayon::current_num_threads(),
                "wall_seconds": wall,
                "events": s.events,
                "events_per_second": s.events as f64 / wall.max(1e-9),
                "summary": s,
            });
            print_json(&out)
        }
        Cmd::Validate { seed, plot } => {
            let out = kith_sim::plot::validation(seed, plot.as_deref());
            match out {
                Ok(v) => print_json(&v),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
