//! The control plane's wiring: cross-site refusal, what is served without
//! users, and the settings every function's code names.

use super::*;

async fn post(uri: &str, origin: Option<&str>) -> (u16, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let app = axum::Router::new()
        .route("/{*rest}", axum::routing::post(|| async { "done" }))
        .layer(axum::middleware::from_fn(refuse_cross_site));
    let mut req = axum::http::Request::post(uri).header("host", "ui.example");
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let res = app
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_cross_site_post_is_refused_before_the_handler_on_any_route() {
    let (status, body) = post("/apps/a/envs/b/deploys", Some("http://evil.example")).await;
    assert_eq!(status, 403);
    assert!(body.contains("\"code\":\"forbidden\""), "{body}");
    let (status, body) = post("/ui/apps/a/envs/b/deploys", Some("http://evil.example")).await;
    assert_eq!(status, 403);
    assert!(body.contains("<html"), "the UI answers in HTML: {body}");
    // curl and ship send no Origin; a same-origin page does.
    assert_eq!(post("/apps/a/envs/b/deploys", None).await.1, "done");
    assert_eq!(
        post("/apps/a/envs/b/deploys", Some("https://ui.example"))
            .await
            .1,
        "done"
    );
}

/// Settings the code reads that the template need not give: limits
/// with defaults, the inline secrets of runs outside Lambda, and the
/// local platform's two seams.
const NOT_FROM_THE_TEMPLATE: [&str; 7] = [
    "SLIPWAY_MAX_ARCHIVE_BYTES",
    "SLIPWAY_MAX_EXPANDED_BYTES",
    "SLIPWAY_MAX_ARCHIVE_ENTRIES",
    "SLIPWAY_USERS",
    "SLIPWAY_SLACK_SECRET",
    LOCAL_LOOPBACK_HOOKS_VAR,
    LOCAL_POLL_MS_VAR,
];

fn names_in(dir: &std::path::Path, found: &mut std::collections::BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            names_in(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("\"SLIPWAY_").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && piece[name.len()..].starts_with('"') {
                    found.insert(format!("SLIPWAY_{name}"));
                }
            }
        }
    }
}

#[test]
fn every_setting_the_functions_code_names_is_checked_against_the_template() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut named = std::collections::BTreeSet::new();
    for dir in [
        "crates/core/src",
        "crates/control/src",
        "crates/http/src",
        "functions",
    ] {
        names_in(&root.join(dir), &mut named);
    }
    let declared: std::collections::BTreeSet<&str> = Function::ALL
        .iter()
        .flat_map(|f| f.settings().iter().copied())
        .chain(NOT_FROM_THE_TEMPLATE)
        .collect();
    let undeclared: Vec<&String> = named
        .iter()
        .filter(|n| !declared.contains(n.as_str()))
        .collect();
    assert!(
        undeclared.is_empty(),
        "named in the functions' code but in no Function::settings(): {undeclared:?}"
    );
    let template = std::fs::read_to_string(root.join("infra/template.yaml")).unwrap();
    for seam in [LOCAL_LOOPBACK_HOOKS_VAR, LOCAL_POLL_MS_VAR] {
        assert!(!template.contains(seam), "the template never sets {seam}");
    }
}

#[tokio::test]
async fn without_users_no_authenticated_route_is_served() {
    use tower::ServiceExt;
    let secret = Router::new().route("/secret", get(|| async { "secret" }));
    let open = Router::new().route("/open", get(|| async { "open" }));
    let app = serve(secret, open, None);
    let status = |uri: &'static str| {
        let app = app.clone();
        async move {
            app.oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    assert_eq!(status("/secret").await, 404);
    assert_eq!(status("/open").await, 200);
    assert_eq!(status("/healthz").await, 200);
}
