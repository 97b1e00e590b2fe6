//! `ship`: parses the command line and runs the command from the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHIP_LOG")
                // Warnings, and the local Lambda's cold starts with their
                // init time (`ship dev`).
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,slipway_local::lambda=info")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    ship::cli::run(ship::cli::Cli::parse()).await
}
