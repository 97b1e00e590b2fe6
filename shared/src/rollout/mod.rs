//! The rollout engine's building blocks: batch plans and the environment
//! lock. The engine itself, written against the fleet and runner ports,
//! builds on these.

pub mod lock;
pub mod plan;

pub use plan::{PlanError, Strategy, plan};
