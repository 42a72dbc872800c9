//! Keys: the master secret, what derives from it, and password key files.

mod keyfile;
mod master;
mod paper;

pub use keyfile::{Access, KdfParams, KeyFile, KeyFileInfo};
pub use master::{KeyMaterial, MasterSecret, MasterSecretBytes, WriteKeys};
pub use paper::{format_paper_key, parse_paper_key};
