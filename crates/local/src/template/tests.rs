//! The control plane's template read as CloudFormation and SAM read it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const TEMPLATE: &str = include_str!("../../../../infra/template.yaml");

fn values() -> StackValues {
    StackValues {
        stack: "slipway".into(),
        bucket: "slipway-dev".into(),
        api_id: "local".into(),
        parameters: BTreeMap::from([("SlackUsers".to_owned(), "U1,U2".to_owned())]),
    }
}

#[test]
fn every_function_of_the_template_is_read_with_its_binary_timeout_and_memory() {
    let t = ControlPlaneTemplate::read(TEMPLATE, &values()).unwrap();
    let summary: Vec<(&str, &str, u64, u32)> = t
        .functions
        .iter()
        .map(|f| {
            (
                f.logical_id.as_str(),
                f.binary.as_str(),
                f.timeout.as_secs(),
                f.memory_mb,
            )
        })
        .collect();
    assert!(
        summary.contains(&("ReleaseFunction", "release", 120, 1024)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("DeployFunction", "deploy", 900, 256)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("ChatFunction", "chat", 10, 256)),
        "{summary:?}"
    );
    assert_eq!(t.functions.len(), 5);
    assert_eq!(t.function("DeployFunction").unwrap().name, "slipway-deploy");
}

#[test]
fn environment_variables_merge_the_globals_and_resolve_their_references() {
    let t = ControlPlaneTemplate::read(TEMPLATE, &values()).unwrap();
    let chat = &t.function("ChatFunction").unwrap().environment;
    assert_eq!(chat["SLIPWAY_BUCKET"], "slipway-dev");
    assert_eq!(chat["SLIPWAY_USERS_PARAM"], "/slipway/users");
    assert_eq!(chat["SLIPWAY_DEPLOY_FUNCTION"], "slipway-deploy");
    assert_eq!(chat["SLIPWAY_SLACK_USERS"], "U1,U2");
    assert_eq!(chat["SLIPWAY_SLACK_TEAMS"], "");
    let deploy = &t.function("DeployFunction").unwrap().environment;
    assert_eq!(deploy["SLIPWAY_DEPLOY_DOCUMENT"], "Slipway-Deploy");
    assert!(t.function("ChatFunction").unwrap().json_logs);
}

#[test]
fn the_workers_run_as_long_as_the_settings_assume_with_a_reconciler_and_a_failure_queue_each() {
    let t = ControlPlaneTemplate::read(TEMPLATE, &values()).unwrap();
    for id in ["DeployFunction", "CycleFunction"] {
        let f = t.function(id).unwrap();
        assert_eq!(
            f.timeout.as_secs(),
            slipway_core::env_settings::WORKER_LIMIT_SECS,
            "{id}: the settings' one-batch check assumes this limit"
        );
        assert_eq!(
            f.schedules,
            [Schedule {
                every: std::time::Duration::from_secs(60),
                input: json!({"slipway": "reconcile"}),
            }],
            "{id}"
        );
        let queue = f.on_failure.as_ref().expect("an on-failure destination");
        assert_eq!(queue.kind, "SQS");
        let name = queue.arn.rsplit(':').next().unwrap();
        assert!(
            f.environment["SLIPWAY_FAILURE_QUEUE"].ends_with(&format!("/{name}")),
            "{id} drains the queue its failures go to"
        );
    }
    assert_eq!(
        parse_rate("rate(5 minutes)"),
        Some(std::time::Duration::from_secs(300))
    );
    for bad in [
        "rate(1 minutes)",
        "rate(0 minutes)",
        "cron(0 * * * ? *)",
        "rate(2 minute)",
    ] {
        assert_eq!(parse_rate(bad), None, "{bad}");
    }
}

#[test]
fn routes_and_upload_notifications_come_from_the_events() {
    let t = ControlPlaneTemplate::read(TEMPLATE, &values()).unwrap();
    let release = t.function("ReleaseFunction").unwrap();
    assert!(release.routes.contains(&Route {
        method: "GET".into(),
        path: "/healthz".into()
    }));
    assert!(release.s3.contains(&S3Notification {
        events: vec!["s3:ObjectCreated:*".into()],
        rules: vec![("suffix".into(), ".tar.zst".into())],
    }));
    let formation = t.function("FormationFunction").unwrap();
    assert!(formation.routes.contains(&Route {
        method: "ANY".into(),
        path: "/ui/{proxy+}".into()
    }));
}

#[test]
fn policies_expand_sams_templates_with_resolved_resources() {
    let t = ControlPlaneTemplate::read(TEMPLATE, &values()).unwrap();
    let deploy = t.function("DeployFunction").unwrap();
    let names: Vec<&str> = deploy.policies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "AWSLambdaBasicExecutionRole");
    assert!(names.contains(&"S3CrudPolicy"), "{names:?}");
    let text = serde_json::to_string(&deploy.policies).unwrap();
    assert!(text.contains("arn:aws:s3:::slipway-dev/*"), "{text}");
    assert!(
        text.contains("arn:aws:lambda:us-east-1:123456789012:function:slipway-deploy"),
        "{text}"
    );
    assert!(
        !text.contains("Fn::") && !text.contains("\"Ref\""),
        "{text}"
    );
}

#[test]
fn an_unknown_reference_or_parameter_is_an_error_naming_it() {
    let broken = TEMPLATE.replace("!Ref DeployDocument\n", "!Ref NoSuchThing\n");
    let err = ControlPlaneTemplate::read(&broken, &values()).unwrap_err();
    assert!(err.to_string().contains("NoSuchThing"), "{err}");
    let mut v = values();
    v.parameters.insert("Nope".into(), "x".into());
    let err = ControlPlaneTemplate::read(TEMPLATE, &v).unwrap_err();
    assert!(err.to_string().contains("Nope"), "{err}");
}

#[test]
fn sub_resolves_references_attributes_and_literals() {
    let template = parse("Parameters:\n  App:\n    Type: String\n    Default: hello\n").unwrap();
    let mut r = Resolver::new(&template, "s", &BTreeMap::new()).unwrap();
    r.attributes
        .insert(("B".into(), "Arn".into()), Value::String("arn:b".into()));
    let v = r
        .resolve(
            &json!({"Fn::Sub": "${App}/${B.Arn}/${AWS::Region}/${!Literal}"}),
            "t",
        )
        .unwrap();
    assert_eq!(v, json!("hello/arn:b/us-east-1/${Literal}"));
    let v = r
        .resolve(
            &json!({"Fn::Sub": ["x-${Name}", {"Name": {"Ref": "App"}}]}),
            "t",
        )
        .unwrap();
    assert_eq!(v, json!("x-hello"));
}

#[test]
fn a_setting_a_function_reads_that_the_template_does_not_give_fails_naming_both() {
    for (function, line) in [
        (
            "DeployFunction",
            "          SLIPWAY_DEPLOY_DOCUMENT: !Ref DeployDocument\n",
        ),
        (
            "ChatFunction",
            "          SLIPWAY_SLACK_TEAMS: !Ref SlackTeams\n",
        ),
        ("Globals", "        RUST_LOG: info\n"),
    ] {
        let without = TEMPLATE.replacen(line, "", 1);
        assert_ne!(without, TEMPLATE, "{line}");
        let values = values();
        let err =
            crate::stack::check_settings(&ControlPlaneTemplate::read(&without, &values).unwrap())
                .unwrap_err()
                .to_string();
        let variable = line.trim().split(':').next().unwrap();
        assert!(err.contains(variable), "{err}");
        if function != "Globals" {
            assert!(err.contains(function), "{err}");
        }
    }
    crate::stack::check_settings(&ControlPlaneTemplate::read(TEMPLATE, &values()).unwrap())
        .unwrap();
}
