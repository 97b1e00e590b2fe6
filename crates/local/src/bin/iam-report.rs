//! The test suite's IAM report (`scripts/test` runs it after the tests):
//! every call the end-to-end tests' functions and instances made, left by
//! each platform in `SLIPWAY_IAM_RECORD_DIR`, evaluated against the
//! templates' policies. Fails naming each call no policy allows; lists the
//! grants no test used.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: iam-report DIR (the SLIPWAY_IAM_RECORD_DIR the tests ran with)");
        return ExitCode::from(2);
    };
    let report = match slipway_local::iam::check::report_dir(std::path::Path::new(&dir)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("iam-report: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "IAM: {} calls of the functions and instances checked",
        report.calls
    );
    if report.calls == 0 {
        eprintln!("iam-report: no calls were recorded; did the end-to-end tests run?");
        return ExitCode::FAILURE;
    }
    for (role, unused) in &report.unused {
        if unused.is_empty() {
            continue;
        }
        println!("granted to {role} and used by no test:");
        for grant in unused {
            println!("  {grant}");
        }
    }
    match slipway_local::iam::check::refused(&report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
