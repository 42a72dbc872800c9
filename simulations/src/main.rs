//! The `kith-sim` command line.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kith-sim", about = "kith durability and scale simulator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Availability {
            k,
            n,
            uptime,
            trials,
            seed,
        } => {
            if k == 0 || k > n || !(0.0..=1.0).contains(&uptime) {
                eprintln!("need 1 <= k <= n and 0 <= uptime <= 1");
                return std::process::ExitCode::from(2);
            }
            let r = kith_sim::experiments::availability_experiment(k, n, uptime, trials, seed);
            match serde_json::to_string_pretty(&r) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
