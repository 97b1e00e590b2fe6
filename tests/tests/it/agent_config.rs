//! The CloudWatch agent settings the base image installs and user data
//! renders (`infra/base-image/cloudwatch-agent.json`) against what the
//! control plane reads: the log group and stream log search queries, the
//! namespace, names and dimensions the formation's metrics query, the
//! StatsD listener apps are told about. The agent's own config translator
//! is not installable here (it ships in Amazon's RPM/DEB, not a package
//! registry), so this is the check; README says how to run the translator
//! on an instance.

use serde_json::Value;
use slipway_core::names::EnvRef;

const TEMPLATE: &str = include_str!("../../../infra/base-image/cloudwatch-agent.json");
const RSYSLOG: &str = include_str!("../../../infra/base-image/rsyslog-slipway.conf");

/// What user data does: `sed -e s/@APP@/…/g -e s/@ENV@/…/g`.
fn rendered(env: &EnvRef) -> Value {
    let text = TEMPLATE
        .replace("@APP@", env.app.as_str())
        .replace("@ENV@", env.env.as_str());
    assert!(!text.contains('@'), "every placeholder is filled");
    serde_json::from_str(&text).expect("the rendered settings are JSON")
}

#[test]
fn logs_go_to_the_group_and_stream_log_search_reads() {
    let env = EnvRef::parse("hello", "production").unwrap();
    let config = rendered(&env);
    let files = config["logs"]["logs_collected"]["files"]["collect_list"]
        .as_array()
        .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0]["log_group_name"],
        slipway_control::logs::group_name(&env)
    );
    assert_eq!(files[0]["log_stream_name"], "{instance_id}");
    assert_eq!(files[0]["file_path"], "/var/log/slipway/journal.log");
    // A timestamp format would also become the multi-line start pattern and
    // glue lines without timestamps together.
    assert!(files[0].get("timestamp_format").is_none());
    assert!(RSYSLOG.contains("/var/log/slipway/journal.log"));
}

#[test]
fn metrics_carry_the_names_and_dimensions_the_formation_queries() {
    let env = EnvRef::parse("hello", "production").unwrap();
    let metrics = &rendered(&env)["metrics"];
    assert_eq!(metrics["namespace"], slipway_core::metric_names::NAMESPACE);
    assert_eq!(
        metrics["append_dimensions"]["InstanceId"],
        "${aws:InstanceId}"
    );
    assert_eq!(
        metrics["aggregation_dimensions"],
        serde_json::json!([
            ["InstanceId", "slipway:app", "slipway:env"],
            [
                "InstanceId",
                "slipway:app",
                "slipway:env",
                slipway_core::metric_names::PROCESS_DIMENSION
            ]
        ]),
        "the aggregated series have exactly the dimensions the formation asks for, \
         per instance and per process (the agent's procstat settings, written on \
         each deploy, add slipway:process)"
    );
    let collected = &metrics["metrics_collected"];
    for (plugin, name) in [
        ("cpu", slipway_core::metric_names::CPU),
        ("mem", slipway_core::metric_names::MEMORY),
    ] {
        let renamed: Vec<&str> = collected[plugin]["measurement"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["rename"].as_str())
            .collect();
        assert_eq!(renamed, [name], "{plugin}");
        assert_eq!(
            collected[plugin]["append_dimensions"]["slipway:app"],
            "hello"
        );
        assert_eq!(
            collected[plugin]["append_dimensions"]["slipway:env"],
            "production"
        );
    }
    for plugin in ["diskio", "net"] {
        assert!(!collected[plugin].is_null(), "{plugin} is collected");
    }
    assert_eq!(collected["statsd"]["service_address"], "127.0.0.1:8125");
}
