//! PNG plots (plotters, bitmap backend, embedded DejaVu font: no system
//! libraries needed) and the validation experiment that feeds one of them.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::json;

use crate::analytic::{binomial_at_least, markov_loss, markov_loss_phases, MarkovInput};
use crate::engine::simulate_many;
use crate::experiments::{availability_experiment, loss_experiment, summarise, Summary};
use crate::model::RepairPolicy;
use crate::scenarios::independent;
use crate::sweep::SweepRow;

static FONT: Once = Once::new();

fn font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Annual loss (Markov, including disasters) against storage overhead, one
/// colour per repair policy, for a sweep. Writes `DIR/loss-vs-overhead-SCENARIO.png`.
pub fn loss_vs_overhead(dir: &Path, scenario: &str, rows: &[SweepRow]) -> Result<(), String> {
    font();
    std::fs::create_dir_all(dir).map_err(e)?;
    let path = dir.join(format!("loss-vs-overhead-{scenario}.png"));
    let root = BitMapBackend::new(&path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let floor = 1e-12;
    let ymax = rows
        .iter()
        .map(|r| r.summary.annual_loss_markov.max(floor))
        .fold(1e-6, f64::max)
        * 10.0;
    let xmax = rows.iter().map(|r| r.summary.overhead).fold(2.5, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: annual loss vs overhead (hollow: without disasters)"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.9f64..xmax, (floor..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("storage overhead (stored / protected)")
        .y_desc("P(loss) per object-year (Markov)")
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let mut repairs: Vec<String> = rows.iter().map(|r| r.repair.clone()).collect();
    repairs.dedup();
    repairs.sort();
    repairs.dedup();
    for (ci, rep) in repairs.iter().enumerate() {
        let color = COLORS[ci % COLORS.len()];
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.repair == rep)
            .map(|r| (r.summary.overhead, r.summary.annual_loss_markov.max(floor)))
            .collect();
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(e)?
            .label(format!("repair: {rep}"))
            .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
        let indep: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.repair == rep)
            .map(|r| {
                (
                    r.summary.overhead,
                    r.summary.annual_loss_markov_independent.max(floor),
                )
            })
            .collect();
        chart
            .draw_series(
                indep
                    .iter()
                    .map(|&p| Circle::new(p, 7, color.stroke_width(2))),
            )
            .map_err(e)?;
    }
    // Goal lines.
    chart
        .draw_series(LineSeries::new(
            vec![(0.9, 1e-6), (xmax, 1e-6)],
            BLACK.stroke_width(1),
        ))
        .map_err(e)?
        .label("goal 1e-6/yr")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .draw_series(LineSeries::new(
            vec![(2.5, floor), (2.5, ymax)],
            RGBColor(120, 120, 120).stroke_width(1),
        ))
        .map_err(e)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Monthly repair traffic (TB per TB protected) for each summary. Writes
/// `DIR/repair-traffic.png`.
pub fn traffic(dir: &Path, sums: &[Summary]) -> Result<(), String> {
    font();
    std::fs::create_dir_all(dir).map_err(e)?;
    let path = dir.join("repair-traffic.png");
    let root = BitMapBackend::new(&path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let months = sums
        .iter()
        .map(|s| s.monthly_repair_tb_per_tb.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let ymax = sums
        .iter()
        .flat_map(|s| s.monthly_repair_tb_per_tb.iter().copied())
        .fold(1e-3, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption("repair traffic per month", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..months as f64, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("month")
        .y_desc("TB moved per TB protected")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, s) in sums.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .monthly_repair_tb_per_tb
            .iter()
            .enumerate()
            .map(|(m, &v)| (m as f64 + 0.5, v))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(e)?
            .label(format!("{} (k={:.1}, n={:.1})", s.scenario, s.k, s.n))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The validation experiment: availability and no-repair loss against the
/// binomial closed forms, and the Markov model against simulation with
/// repair at high failure rates. Optionally writes
/// `DIR/availability-validation.png` and `DIR/markov-validation.png`.
pub fn validation(seed: u64, dir: Option<&Path>) -> Result<serde_json::Value, String> {
    let mut avail = Vec::new();
    for &p in &[0.5, 0.7, 0.9] {
        for k in 1..=8u32 {
            avail.push(availability_experiment(k, 8, p, 20_000, seed));
        }
    }
    let mut loss = Vec::new();
    for &(k, n, afr) in &[(2u32, 4u32, 0.3f64), (4, 6, 0.2), (6, 9, 0.3), (1, 3, 0.5)] {
        loss.push(loss_experiment(k, n, afr, 1.0, 20_000, seed));
    }
    let markov = markov_check(seed);
    if let Some(dir) = dir {
        font();
        std::fs::create_dir_all(dir).map_err(e)?;
        let path = dir.join("availability-validation.png");
        let root = BitMapBackend::new(&path, (900, 550)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "restore availability, 8 shards on independent peers",
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..8.5, 0f64..1.02)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("k (shards needed of n = 8)")
            .y_desc("P(at least k online)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        for (i, &p) in [0.5, 0.7, 0.9].iter().enumerate() {
            let color = COLORS[i];
            let line: Vec<(f64, f64)> = (1..=8)
                .map(|k| (f64::from(k), binomial_at_least(8, k, p)))
                .collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(e)?
                .label(format!("binomial, uptime {p}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            let pts: Vec<(f64, f64)> = avail
                .iter()
                .filter(|r| (r.uptime - p).abs() < 1e-9)
                .map(|r| (f64::from(r.k), r.availability))
                .collect();
            chart
                .draw_series(pts.iter().map(|&q| Cross::new(q, 6, color.stroke_width(2))))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
        markov_plot(dir, &markov)?;
    }
    let all_agree = avail.iter().all(|r| r.agrees) && loss.iter().all(|r| r.agrees);
    Ok(json!({
        "availability": avail,
        "loss_no_repair": loss,
        "markov_vs_sim": markov,
        "binomial_all_agree": all_agree,
    }))
}

/// One point of the Markov-vs-simulation check.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MarkovPoint {
    /// Shards needed.
    pub k: u32,
    /// Shards stored.
    pub n: u32,
    /// Holder annual failure rate.
    pub afr: f64,
    /// Simulated losses per object-year.
    pub sim: f64,
    /// 95% interval low.
    pub sim_low: f64,
    /// 95% interval high.
    pub sim_high: f64,
    /// Markov prediction (annual loss) with the simulated repair latency.
    pub markov: f64,
    /// Markov loss rate per object-year (1 / MTTDL), comparable to `sim`.
    pub markov_rate: f64,
    /// Same with an exponential (1-phase) repair time.
    pub markov_rate_exponential: f64,
    /// Losses observed.
    pub losses: u64,
    /// Mean repair latency used, hours.
    pub latency_h: f64,
}

/// Simulate with eager repair at failure rates high enough to see losses,
/// and compare with the Markov model fed the measured repair latency.
pub fn markov_check(seed: u64) -> Vec<MarkovPoint> {
    let mut out = Vec::new();
    for &(k, n, afr) in &[
        (2u32, 4u32, 4.0f64),
        (2, 4, 8.0),
        (3, 5, 6.0),
        (4, 6, 8.0),
        (1, 3, 6.0),
    ] {
        let mut sc = independent(k, n, 0.95, afr, 2.0);
        // Spare peers to repair onto, replacements after failures.
        let spare = sc.households[1].clone();
        for i in 0..6u32 {
            let mut h = spare.clone();
            h.domains = vec![n + 1 + i];
            sc.households.push(h);
        }
        sc.replace_after_h = Some(0.0);
        sc.repair = RepairPolicy::Eager;
        sc.owner_local_repair = false;
        let runs = simulate_many(&sc, 400, seed);
        let s = summarise(&sc, &runs, seed);
        let minp = MarkovInput {
            correlated_per_year: 0.0,
            correlated_jump: 0,
            ..s.markov_input.clone()
        };
        let m = markov_loss(&minp);
        let m1 = markov_loss_phases(&minp, 1);
        out.push(MarkovPoint {
            k,
            n,
            afr,
            sim: s.loss_per_object_year_sim,
            sim_low: s.loss_sim_ci_low,
            sim_high: s.loss_sim_ci_high,
            markov: m.annual_loss,
            markov_rate: 1.0 / m.mttdl_years,
            markov_rate_exponential: 1.0 / m1.mttdl_years,
            losses: s.losses,
            latency_h: s.repair_latency_mean_h,
        });
    }
    out
}

fn markov_plot(dir: &Path, pts: &[MarkovPoint]) -> Result<(), String> {
    let path = dir.join("markov-validation.png");
    let root = BitMapBackend::new(&path, (700, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let lo = pts
        .iter()
        .map(|p| p.sim_low.min(p.markov_rate))
        .fold(1.0, f64::min)
        .max(1e-6)
        / 2.0;
    let hi = pts
        .iter()
        .map(|p| p.sim_high.max(p.markov_rate))
        .fold(1e-6, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Markov model vs simulation (eager repair)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("simulated loss rate per object-year")
        .y_desc("Markov loss rate (1 / MTTDL)")
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], BLACK))
        .map_err(e)?
        .label("y = x")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (i, p) in pts.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (p.sim_low.max(lo), p.markov_rate),
                    (p.sim_high, p.markov_rate),
                ],
                c.stroke_width(2),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Circle::new(
                (p.sim.max(lo), p.markov_rate),
                5,
                c.filled(),
            )))
            .map_err(e)?
            .label(format!("{}-of-{}, AFR {}", p.k, p.n, p.afr))
            .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
