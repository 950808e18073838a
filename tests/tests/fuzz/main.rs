//! Fuzz targets of the daemon's inputs from outside: Gearman packets, Zuul job parameters, the
//! host config. Each is a set of bounded proptest properties plus the replay of its checked-in
//! corpus (`tests/corpus/<target>/`); see `turbo_hipster_tests::fuzz` and `docs/bad-inputs.md`.
//!
//! `TH_FUZZ_CASES=100000 cargo test -p turbo-hipster-tests --test fuzz --release` runs longer.
#![allow(clippy::unwrap_used)]

mod codec;
mod config;
mod zuul_params;
