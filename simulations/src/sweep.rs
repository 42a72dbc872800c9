//! Policy sweeps: the k/n/repair table.
