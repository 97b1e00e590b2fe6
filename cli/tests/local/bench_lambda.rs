//! `scripts/bench-lambda`: how long each control-plane function takes from
//! exec to its first Runtime API poll (Lambda's init phase, paid on every
//! cold start), beside a minimal `lambda_runtime` binary built the same way
//! (`benches/lambda-baseline`). Each start is a fresh sandbox of the local
//! Lambda with the function's environment from the template, pointing at
//! the emulator, so whatever a function does before it is ready (reading
//! settings, building clients, calling AWS) is in its figure. Functions
//! and baseline take turns, so a busy moment of the machine falls on both.
//! A benchmark, not a test: ignored by `cargo test`, run by the script,
//! which fails when a function's median is more than 1.5× the baseline's.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

const RUNS: usize = 21;
const GOAL: f64 = 1.5;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench-lambda runs it"]
async fn bench_lambda() {
    let baseline = PathBuf::from(std::env::var_os("SLIPWAY_LAMBDA_BASELINE").expect(
        "SLIPWAY_LAMBDA_BASELINE names the baseline binary (scripts/bench-lambda sets it)",
    ));
    let work = tempfile::tempdir().unwrap();
    let platform = platform_with(&work.path().join("fleet"), |o| o.schedules = false).await;
    let lambda = &platform.lambda;
    let names = lambda.names();
    let mut own = vec![Vec::new(); names.len()];
    let mut base = Vec::new();
    for _ in 0..RUNS {
        for (i, name) in names.iter().enumerate() {
            own[i].push(lambda.cold_start(name, None).await.unwrap());
            base.push(lambda.cold_start(name, Some(&baseline)).await.unwrap());
        }
    }
    let base = median(base);
    println!(
        "\nstart-to-ready (exec to first Runtime API poll), median of {RUNS}, functions from {}",
        slipway_local::stack::functions_dir().display()
    );
    println!("{:<28} {:>9} {:>7}", "function", "ms", "ratio");
    println!("{:<28} {:>9.2} {:>7}", "lambda-baseline", ms(base), "1.00");
    let mut over = Vec::new();
    for (name, samples) in names.iter().zip(own) {
        let m = median(samples);
        let ratio = ms(m) / ms(base);
        println!("{name:<28} {:>9.2} {ratio:>6.2}×", ms(m));
        if ratio > GOAL {
            over.push(format!("{name} {ratio:.2}×"));
        }
    }
    assert!(
        over.is_empty(),
        "over {GOAL}× the baseline's start-to-ready: {}",
        over.join(", ")
    );
}
