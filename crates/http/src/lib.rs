//! Slipway's control plane over HTTP: the API (axum routers, parsed paths
//! and bodies, errors mapped to statuses in one place), the server-rendered
//! web UI, Slack chat, Basic auth, and the glue that puts them behind
//! Lambda. Every function binary and the local platform build their
//! routers from here; see DESIGN.md.

pub mod api;
pub mod auth;
pub mod chat;
pub mod control_plane;
pub mod lambda;
pub mod telemetry;
pub mod web;
pub mod wire;
