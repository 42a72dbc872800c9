//! Rendering: human text, JSON, sizes, times and progress bars.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::args::Global;
use crate::error::CliError;

/// Writes `value` as pretty JSON on stdout.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| CliError::Output(e.into()))?;
    writeln!(out)?;
    Ok(())
}

/// `1.5 GiB` and friends.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        // `unit` stays below UNITS.len() by the loop condition.
        let name = UNITS.get(unit).copied().unwrap_or("PiB");
        format!("{v:.2} {name}")
    }
}

/// A local time for people.
pub(crate) fn local_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
    .unwrap_or_else(|| ns.to_string())
}

/// An RFC 3339 time for machines.
pub(crate) fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| t.with_timezone(&chrono::Local).to_rfc3339())
    .unwrap_or_else(|| ns.to_string())
}

/// Whether messages on stderr may be coloured: on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub(crate) fn colour_stderr() -> bool {
    let refused = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !refused && std::io::stderr().is_terminal()
}

/// Whether to draw progress: on a terminal, not quiet, not JSON.
pub(crate) fn show_progress(global: &Global) -> bool {
    !global.quiet && !global.json && std::io::stderr().is_terminal()
}

/// A byte progress bar on stderr, hidden when progress is off.
pub(crate) fn byte_bar(global: &Global) -> ProgressBar {
    if !show_progress(global) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
