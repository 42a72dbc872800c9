//! Closed forms and the Markov-chain loss model.

use serde::{Deserialize, Serialize};

pub use kith_node::policy::{binomial_at_least, prob_at_least};

use crate::model::HOURS_PER_YEAR;

/// The gamma function (Lanczos approximation, ~1e-13 relative error for
/// positive arguments).
pub fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

/// Wilson score interval for `ok` successes in `total` trials at `z`
/// standard errors. Returns `(low, high)`.
pub fn wilson(ok: u64, total: u64, z: f64) -> (f64, f64) {
    if total == 0 {
        return (0.0, 1.0);
    }
    let n = total as f64;
    let p = ok as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Approximate 95% interval for a Poisson count `x` (events), as counts.
/// Uses exact-ish bounds for small counts (x = 0 gives 3.69 upper).
pub fn poisson_ci95(x: u64) -> (f64, f64) {
    let xf = x as f64;
    if x == 0 {
        return (0.0, 3.689);
    }
    // Wilson–Hilferty approximation of the chi-square quantiles.
    let lo = xf * (1.0 - 1.0 / (9.0 * xf) - 1.96 / (3.0 * xf.sqrt())).powi(3);
    let x1 = xf + 1.0;
    let hi = x1 * (1.0 - 1.0 / (9.0 * x1) + 1.96 / (3.0 * x1.sqrt())).powi(3);
    (lo.max(0.0), hi)
}

/// Inputs of the birth–death Markov model of one object's live shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkovInput {
    /// Shards needed.
    pub k: u32,
    /// Shards stored.
    pub n: u32,
    /// Independent permanent loss rate of one shard, per year.
    pub shard_loss_per_year: f64,
    /// Repair starts when live shards <= k + `repair_extra` (`None`: no
    /// repair). Eager repair is `n - k - 1`.
    pub repair_extra: Option<u32>,
    /// Mean hours from the triggering loss to the repair being done.
    pub repair_latency_h: f64,
    /// Rate of correlated events (disasters) hitting one of this object's
    /// failure domains, per year.
    pub correlated_per_year: f64,
    /// Shards removed by one correlated event.
    pub correlated_jump: u32,
}

/// Output of the Markov model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkovOutput {
    /// Mean time to data loss from n live shards, years.
    pub mttdl_years: f64,
    /// Probability of loss in one year, `1 - exp(-1 / MTTDL)`.
    pub annual_loss: f64,
}

/// Phases of the Erlang repair clock used by [`markov_loss`]: a repair
/// takes a nearly fixed time in the simulator, not an exponential one.
pub const REPAIR_PHASES: u32 = 4;

/// Solve the continuous-time Markov chain for the expected time to loss,
/// with an Erlang repair clock of [`REPAIR_PHASES`] phases.
///
/// States: `i = k..=n` live shards (fewer than k is absorbing), and, while
/// a repair is under way, the phase of its clock. From `i`: a shard is lost
/// at rate `i * λ` (to `i - 1`, the repair clock keeps running); a
/// correlated event at rate `c` removes `jump` shards; a repair starts when
/// `i <= k + extra`, takes an Erlang time with mean `latency`, and restores
/// `n` shards.
pub fn markov_loss(inp: &MarkovInput) -> MarkovOutput {
    markov_loss_phases(inp, REPAIR_PHASES)
}

/// [`markov_loss`] with a chosen number of repair phases (1 = exponential).
pub fn markov_loss_phases(inp: &MarkovInput, phases: u32) -> MarkovOutput {
    let k = inp.k as usize;
    let n = inp.n as usize;
    let inf = MarkovOutput {
        mttdl_years: f64::INFINITY,
        annual_loss: 0.0,
    };
    if k == 0 || n < k {
        return inf;
    }
    let lam = inp.shard_loss_per_year;
    let c = inp.correlated_per_year;
    let jump = inp.correlated_jump as usize;
    let m = phases.max(1) as usize;
    let latency_y = (inp.repair_latency_h / HOURS_PER_YEAR).max(1e-9);
    let phase_rate = m as f64 / latency_y;
    let repair_at = |i: usize| match inp.repair_extra {
        Some(x) => i < n && i <= k + x as usize,
        None => false,
    };
    // Index states: (i, phase) where phase = 0 means no repair running for
    // i where repair is off, else phases 0..m of a running repair.
    let mut index = std::collections::BTreeMap::new();
    let mut states = Vec::new();
    for i in k..=n {
        if repair_at(i) {
            for ph in 0..m {
                index.insert((i, ph), states.len());
                states.push((i, ph));
            }
        } else {
            index.insert((i, 0), states.len());
            states.push((i, 0));
        }
    }
    // Where a transition to `i` with current phase `ph` lands.
    let land = |i: usize, ph: usize| -> Option<usize> {
        if i < k {
            return None;
        }
        if repair_at(i) {
            index.get(&(i, ph)).copied()
        } else {
            index.get(&(i, 0)).copied()
        }
    };
    let s = states.len();
    let mut a = vec![vec![0.0f64; s]; s];
    let b = vec![1.0f64; s];
    for (r, &(i, ph)) in states.iter().enumerate() {
        let mut q = 0.0;
        let fail = i as f64 * lam;
        if fail > 0.0 {
            q += fail;
            if let Some(t) = land(i - 1, ph) {
                a[r][t] -= fail;
            }
        }
        if c > 0.0 && jump > 0 {
            q += c;
            if i >= k + jump {
                if let Some(t) = land(i - jump, ph) {
                    a[r][t] -= c;
                }
            }
        }
        if repair_at(i) {
            q += phase_rate;
            let t = if ph + 1 == m {
                index.get(&(n, 0)).copied()
            } else {
                land(i, ph + 1)
            };
            if let Some(t) = t {
                a[r][t] -= phase_rate;
            }
        }
        a[r][r] += q;
        if q == 0.0 {
            // Nothing ever happens: infinite lifetime.
            return inf;
        }
    }
    let start = index.get(&(n, 0)).copied().unwrap_or(0);
    let t = solve(a, b);
    let mttdl = t.map(|t| t[start]).unwrap_or(f64::INFINITY);
    let annual = if mttdl.is_finite() && mttdl > 0.0 {
        -(-1.0 / mttdl).exp_m1()
    } else {
        0.0
    };
    MarkovOutput {
        mttdl_years: mttdl,
        annual_loss: annual,
    }
}

/// Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[piv][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                let (top, bottom) = a.split_at_mut(row);
                for (x, y) in bottom[0][col..n].iter_mut().zip(&top[col][col..n]) {
                    *x -= f * y;
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = b[i];
        for j in i + 1..n {
            s -= a[i][j] * x[j];
        }
        x[i] = s / a[i][i];
    }
    Some(x)
}

/// Without repair and with independent exponential lifetimes at rate `λ`
/// per year, the probability an object is lost by `years`:
/// `P(Bin(n, e^{-λ t}) < k)`.
pub fn no_repair_loss(k: u32, n: u32, lambda_per_year: f64, years: f64) -> f64 {
    let survive = (-lambda_per_year * years).exp();
    1.0 - binomial_at_least(n, k, survive)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn markov_no_repair_matches_closed_form() {
        // Without repair, MTTDL = sum_{i=k}^{n} 1/(i λ).
        let inp = MarkovInput {
            k: 3,
            n: 6,
            shard_loss_per_year: 0.1,
            repair_extra: None,
            repair_latency_h: 0.0,
            correlated_per_year: 0.0,
            correlated_jump: 0,
        };
        let out = markov_loss(&inp);
        let want: f64 = (3..=6).map(|i| 1.0 / (f64::from(i) * 0.1)).sum();
        assert!((out.mttdl_years - want).abs() < 1e-9);
    }

    #[test]
    fn markov_repair_helps() {
        let base = MarkovInput {
            k: 4,
            n: 6,
            shard_loss_per_year: 0.1,
            repair_extra: Some(1),
            repair_latency_h: 72.0,
            correlated_per_year: 0.0,
            correlated_jump: 0,
        };
        let with = markov_loss(&base);
        let without = markov_loss(&MarkovInput {
            repair_extra: None,
            ..base.clone()
        });
        assert!(with.mttdl_years > 100.0 * without.mttdl_years);
        // Correlated total loss bounds the MTTDL by 1 / c.
        let corr = markov_loss(&MarkovInput {
            correlated_per_year: 0.01,
            correlated_jump: 6,
            ..base
        });
        assert!(corr.mttdl_years < 100.0);
    }

    #[test]
    fn gamma_values() {
        assert!((gamma(1.0) - 1.0).abs() < 1e-12);
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
        assert!((gamma(1.5) - std::f64::consts::PI.sqrt() / 2.0).abs() < 1e-12);
    }

    #[test]
    fn wilson_contains_p() {
        let (lo, hi) = wilson(500, 1000, 1.96);
        assert!(lo < 0.5 && hi > 0.5);
        assert!(hi - lo < 0.07);
    }
}
