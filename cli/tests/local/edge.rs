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

/// A form's fields as a browser sends them.
fn urlencoded(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let pairs: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    pairs.join("&")
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_answers_everyone_but_the_allowed_address_with_its_page_until_it_is_off() {
    let work = tempfile::tempdir().unwrap();
    let platform = platform(work.path()).await;
    let env = EnvRef::parse("hello", "edge").unwrap();
    let (_, address) = serving_r1(&platform, &env, 2).await;
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

    // The web UI's form does the same, and its page says so.
    let ui = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page_url = format!("{}/ui/apps/hello/envs/edge", platform.url);
    let form = |fields: &[(&str, &str)]| {
        ui.post(format!("{page_url}/maintenance"))
            .basic_auth(&platform.user, Some(&platform.password))
            .header("origin", &platform.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(urlencoded(fields))
    };
    let page = || async {
        let answer = ui
            .get(&page_url)
            .basic_auth(&platform.user, Some(&platform.password))
            .send()
            .await
            .unwrap();
        answer.text().await.unwrap()
    };
    assert!(page().await.contains("Turn maintenance on"));
    let bad = form(&[("state", "on"), ("allow", "10.0.0.1/8")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        get_from(&address, "127.0.0.1").await.0,
        200,
        "a bad form changes nothing"
    );
    let on = form(&[
        ("state", "on"),
        ("message", "Upgrading <db>"),
        ("allow", "127.0.0.2, 10.0.0.0/8"),
    ])
    .send()
    .await
    .unwrap();
    assert_eq!(on.status().as_u16(), 303, "back to the page");
    let shown = page().await;
    assert!(shown.contains("Maintenance on."), "{shown}");
    assert!(shown.contains("Upgrading &lt;db&gt;"), "escaped: {shown}");
    assert!(shown.contains("10.0.0.0/8, 127.0.0.2/32"), "{shown}");
    assert_eq!(get_from(&address, "127.0.0.1").await.0, 503);
    assert_eq!(get_from(&address, "127.0.0.2").await.0, 200);
    let off = form(&[("state", "off")]).send().await.unwrap();
    assert_eq!(off.status().as_u16(), 303);
    assert_eq!(get_from(&address, "127.0.0.1").await.0, 200);
    assert!(page().await.contains("Turn maintenance on"));

    // And chat, for a Slack user allowed to change environments.
    let say = |user: &'static str, text: &'static str| {
        let platform = &platform;
        async move {
            let (status, answer) =
                crate::chat::slash(platform, user, text, "http://127.0.0.1:9/unused", 0).await;
            assert_eq!(status, 200, "{answer}");
            answer["text"].as_str().unwrap_or_default().to_owned()
        }
    };
    let answer = say("U2CERLKJA", "maintenance hello edge on Back soon").await;
    assert!(answer.contains("maintenance on"), "{answer}");
    let (status, page) = get_from(&address, "127.0.0.1").await;
    assert_eq!(status, 503);
    assert!(page.contains("Back soon"), "{page}");
    let answer = say("U2CERLKJA", "status hello edge").await;
    assert!(answer.contains("maintenance on: “Back soon”"), "{answer}");
    // Someone chat may not let change things is told so, and nothing moves.
    let answer = say("U0STRANGER", "maintenance hello edge off").await;
    assert!(answer.contains("may not change"), "{answer}");
    assert_eq!(get_from(&address, "127.0.0.1").await.0, 503);
    say("U2CERLKJA", "maintenance hello edge off").await;
    assert_eq!(get_from(&address, "127.0.0.1").await.0, 200);

    platform
        .stop()
        .await
        .expect("the templates allow every call the platform made");
}
