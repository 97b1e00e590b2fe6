//! `ship dev`: the local platform (crate `slipway-local`) run in the
//! foreground until Ctrl-C, with its address and credentials written where
//! the other `ship` commands find them; `ship dev env` creates environments
//! on it.

pub mod env;

use slipway_local::Platform;

use crate::context::DevState;

/// What `ship` needs to reach a running platform.
pub fn state(platform: &Platform) -> DevState {
    DevState {
        url: platform.url.clone(),
        user: platform.user.clone(),
        password: platform.password.clone(),
        slack_secret: platform.slack_secret.clone(),
        aws_endpoint: platform.endpoint().to_owned(),
        bucket: platform.bucket.clone(),
        pid: std::process::id(),
    }
}

/// `ship dev`: runs the platform until Ctrl-C (or SIGTERM).
pub async fn serve_until_stopped(port: Option<u16>) -> anyhow::Result<bool> {
    let cwd = std::env::current_dir()?;
    let platform = Platform::start(slipway_local::PlatformOptions::for_cwd(&cwd, port)).await?;
    let state_file = state(&platform).write(&cwd)?;
    println!("Slipway runs locally at {}", platform.url);
    println!("  user {}  password {}", platform.user, platform.password);
    println!(
        "  AWS emulator at {}, bucket {}",
        platform.endpoint(),
        platform.bucket
    );
    println!("  `ship` finds these in {}", state_file.display());
    println!("  create an environment: ship dev env create APP ENV --instances 3");
    println!("Ctrl-C stops everything.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping…");
    let checked = platform.stop().await;
    let _ = std::fs::remove_file(&state_file);
    if let Err(e) = checked {
        eprintln!("{e:#}");
        return Ok(false);
    }
    Ok(true)
}
