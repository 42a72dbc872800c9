//! PNG plots (plotters).
