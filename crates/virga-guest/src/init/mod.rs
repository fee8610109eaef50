//! The stages and services of PID 1, one module each; `crate::pid1` runs them in order.

pub mod early;
pub mod hostname;
pub mod modules;
pub mod net;
pub mod network;
pub mod power_button;
pub mod report;
pub mod rng;
pub mod shutdown;
#[cfg(feature = "ssh")]
pub mod ssh;
pub mod supervisor;
pub mod system;
