//! Fuzz targets of what the plugin reads from outside the daemon: dataset configs and the
//! migration tool's output. Each is a set of bounded proptest properties plus the replay of its
//! checked-in corpus (`tests/corpus/<target>/`); see `turbo_hipster_tests::fuzz` and
//! `docs/bad-inputs.md`.
//!
//! `TH_FUZZ_CASES=100000 cargo test -p gate_real_db_upgrade --test fuzz --release` runs longer.
#![allow(clippy::unwrap_used)]

mod dataset;
mod logparse;
