//! `slipway-agent`: the deploy program on every instance.
//!
//! Its promise: a failed deploy never hurts the running service on the
//! instance, and a crash at any moment leaves the instance serving the old
//! release or the new one, never neither (re-running the command
//! converges). See [`agent`] for the steps, [`layout`] for what lives on
//! disk, [`supervisor`] for how processes run.

pub mod agent;
pub mod command;
pub mod envfile;
pub mod health;
pub mod install;
pub mod layout;
pub mod lock;
pub mod secrets;
pub mod source;
pub mod state;
pub mod story;
pub mod supervisor;
pub mod tag;
