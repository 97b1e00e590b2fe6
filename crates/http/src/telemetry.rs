//! Logging setup: JSON lines in Lambda (CloudWatch parses them), readable
//! text elsewhere; `RUST_LOG` filters, `info` by default.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        // Lambda adds its own timestamps and request ids.
        builder
            .json()
            .without_time()
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}
