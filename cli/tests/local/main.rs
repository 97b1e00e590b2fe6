//! `ship` and the local platform end to end: the demo's story as a test,
//! the command line's errors, `ship dev` stopping everything it started,
//! environments from `ship env`, and chat. These need `slipway-agent` built
//! beside the test binary (`cargo test --workspace` builds it) and the
//! emulator installed (`scripts/test`).

mod bench_lambda;
mod bench_release;
mod bench_rollout;
mod bench_store;
mod browser;
mod chat;
mod command_line;
mod demo;
mod edge;
mod envs;
mod lambda;
mod logs;
mod production_path;
mod reliability;
mod support;
