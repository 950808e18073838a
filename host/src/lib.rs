//! turbo-hipster: a Gearman worker for Zuul that loads its job runners as plugins.
//!
//! The binary (`main.rs`) is a thin CLI over these modules.
#![forbid(unsafe_code)]

pub mod gearman;
