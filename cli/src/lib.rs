//! `ship`, Slipway's command line, as a library: the HTTP client of the
//! control plane, the commands, and the local platform (`ship dev`) with
//! the demo built on it. The binary only parses arguments and calls in;
//! the end-to-end tests drive the same code.

pub mod cli;
pub mod client;
pub mod commands;
pub mod context;
pub mod demo;
pub mod dev;
pub mod output;
