//! The environment's edge on the production path: maintenance mode is
//! listener rules the cycle function puts on the load balancer, and the
//! local load balancer answers by them, so the page, the team's way round
//! it and its removal are all seen through the load balancer's address.

use slipway_core::names::EnvRef;

use crate::support::*;

/// A GET through the load balancer from `source` (any loopback address
/// reaches it): the status and body.
async fn get_from(address: &str, source: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = client.get(address).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_answers_everyone_but_the_allowed_address_with_its_page_until_it_is_off() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "edge").unwrap();
    booted_environment(&platform, &env, 2).await;
    ship_ok(&platform, &env, &["release", "--allow-dirty"]);
    ship_ok(&platform, &env, &["deploy"]);
    let formation = platform.fleet.aws.formation(&env).await.unwrap();
    let address = format!("http://{}/", formation.load_balancers[0].dns_name);
    assert_eq!(get_from(&address, "127.0.0.1").await.0, 200);

    let on = ship_ok(
        &platform,
        &env,
        &[
            "maintenance",
            "on",
            "--message",
            "Back at <5>",
            "--allow",
            "127.0.0.2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&on.stdout).contains("everyone but 127.0.0.2/32"),
        "{on:?}"
    );
    let (status, page) = get_from(&address, "127.0.0.1").await;
    assert_eq!(status, 503, "{page}");
    assert!(
        page.contains("Back at &lt;5&gt;"),
        "the message, escaped: {page}"
    );
    let (status, body) = get_from(&address, "127.0.0.2").await;
    assert_eq!(status, 200, "the allowed address reaches the app: {body}");
    assert!(body.contains("release r1"), "{body}");
    let ps = ship_ok(&platform, &env, &["ps"]);
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains("maintenance on: the load balancer answers 503 \"Back at <5>\" to everyone but 127.0.0.2/32"),
        "{ps:?}"
    );

    // Hostile input is refused with a clear error and changes nothing,
    // from the command line and from the API alike.
    for args in [
        &["maintenance", "on", "--allow", "127.0.0.2/8"][..],
        &["maintenance", "on", "--allow", "127.0.0.2; rm -rf /"][..],
    ] {
        let out = ship_in(&platform, &env, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("not an address or CIDR block"),
            "{}",
            stderr(&out)
        );
    }
    let long = "x".repeat(1100);
    let out = ship_in(&platform, &env, &["maintenance", "on", "--message", &long]);
    assert!(stderr(&out).contains("too long"), "{}", stderr(&out));
    let api = reqwest::Client::new()
        .put(format!("{}/apps/hello/envs/edge/maintenance", platform.url))
        .basic_auth(&platform.user, Some(&platform.password))
        .header("content-type", "application/json")
        .body(r#"{"message":"x","allow":["0.0.0.0/0","not a block"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 400);
    let refusal = api.text().await.unwrap();
    assert!(
        refusal.contains("is not an address or CIDR block"),
        "{refusal}"
    );
    assert_eq!(get_from(&address, "127.0.0.1").await.0, 503, "still on");
    assert_eq!(get_from(&address, "127.0.0.2").await.0, 200);

    ship_ok(&platform, &env, &["maintenance", "off"]);
    let (status, body) = get_from(&address, "127.0.0.1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("release r1"), "{body}");
    let ps = ship_ok(&platform, &env, &["ps"]);
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("maintenance"),
        "{ps:?}"
    );

    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
