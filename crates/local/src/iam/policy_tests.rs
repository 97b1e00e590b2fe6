use serde_json::{Value, json};

use super::*;

fn policy(name: &str, document: Value) -> Policy {
    Policy::parse(name, &document).expect("test policy parses")
}

/// A 2012-10-17 policy of the given statements.
fn statements(name: &str, statements: Value) -> Policy {
    policy(
        name,
        json!({"Version": "2012-10-17", "Statement": statements}),
    )
}

fn allow(action: Value, resource: Value) -> Value {
    json!({"Effect": "Allow", "Action": action, "Resource": resource})
}

/// One Allow of `s:Act` on `*` under the given condition block.
fn allow_when(condition: Value) -> Policy {
    statements(
        "p",
        json!([{"Effect": "Allow", "Action": "s:Act", "Resource": "*", "Condition": condition}]),
    )
}

fn call() -> Request {
    Request::new("s:Act", "arn:aws:s:::r")
}

fn allowed(policies: &[Policy], request: &Request) -> bool {
    evaluate(policies, None, request) == Decision::Allowed
}

fn parse_error(document: Value) -> String {
    match Policy::parse("Broken", &document) {
        Ok(p) => panic!("parsed {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_explicit_deny_beats_any_allow() {
    let p = statements(
        "p",
        json!([allow(json!("*"), json!("*")), {"Sid": "NoDelete", "Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}]),
    );
    let decision = evaluate(
        &[p],
        None,
        &Request::new("s3:DeleteObject", "arn:aws:s3:::b/k"),
    );
    let by = StatementRef {
        set: PolicySet::Identity,
        policy: "p".into(),
        index: 1,
        sid: Some("NoDelete".into()),
    };
    assert_eq!(decision, Decision::ExplicitDeny { by });
}

#[test]
fn a_deny_in_the_boundary_beats_an_identity_allow() {
    let identity = [statements("id", json!(allow(json!("s3:*"), json!("*"))))];
    let boundary = [statements(
        "bound",
        json!([allow(json!("*"), json!("*")), {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"}]),
    )];
    let decision = evaluate(
        &identity,
        Some(&boundary),
        &Request::new("s3:PutObject", "arn:aws:s3:::b/k"),
    );
    assert!(
        matches!(decision, Decision::ExplicitDeny { by } if by.set == PolicySet::Boundary && by.policy == "bound")
    );
}

#[test]
fn a_boundary_limits_an_allow() {
    let identity = [statements("id", json!(allow(json!("*"), json!("*"))))];
    let boundary = [statements(
        "bound",
        json!(allow(json!("s3:GetObject"), json!("*"))),
    )];
    let get = Request::new("s3:GetObject", "arn:aws:s3:::b/k");
    assert_eq!(
        evaluate(&identity, Some(&boundary), &get),
        Decision::Allowed
    );
    let put = Request::new("s3:PutObject", "arn:aws:s3:::b/k");
    let allowed_by = StatementRef {
        set: PolicySet::Identity,
        policy: "id".into(),
        index: 0,
        sid: None,
    };
    assert_eq!(
        evaluate(&identity, Some(&boundary), &put),
        Decision::OutsideBoundary { allowed_by }
    );
}

#[test]
fn a_boundary_alone_allows_nothing() {
    let boundary = [statements("bound", json!(allow(json!("*"), json!("*"))))];
    assert_eq!(
        evaluate(&[], Some(&boundary), &call()),
        Decision::NotAllowed
    );
}

#[test]
fn a_call_no_statement_covers_is_not_allowed() {
    let p = statements(
        "p",
        json!(allow(json!("s3:GetObject"), json!("arn:aws:s3:::b/*"))),
    );
    assert_eq!(
        evaluate(
            &[p],
            None,
            &Request::new("s3:GetObject", "arn:aws:s3:::other/k")
        ),
        Decision::NotAllowed
    );
}

#[test]
fn actions_match_case_insensitively_with_star_and_question_mark() {
    let p = [statements(
        "p",
        json!(allow(
            json!(["autoscaling:Describe*", "ssm:*", "ec2:Describe?ags"]),
            json!("*")
        )),
    )];
    for action in [
        "autoscaling:DescribeAutoScalingGroups",
        "AUTOSCALING:describetags",
        "ssm:SendCommand",
        "ec2:DescribeTags",
    ] {
        assert!(allowed(&p, &Request::new(action, "x")), "{action}");
    }
    for action in [
        "autoscaling:UpdateAutoScalingGroup",
        "ssmx:Get",
        "ec2:DescribeTTags",
    ] {
        assert!(!allowed(&p, &Request::new(action, "x")), "{action}");
    }
    let everything = [statements("all", json!(allow(json!("*"), json!("*"))))];
    assert!(allowed(
        &everything,
        &Request::new("lambda:InvokeFunction", "x")
    ));
}

#[test]
fn resources_match_case_sensitively() {
    let p = [statements(
        "p",
        json!(allow(json!("s3:GetObject"), json!("arn:aws:s3:::Bucket/*"))),
    )];
    assert!(allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::Bucket/k")
    ));
    assert!(!allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::bucket/k")
    ));
}

#[test]
fn a_star_in_a_resource_spans_slashes_and_colons() {
    let p = [statements(
        "p",
        json!(allow(
            json!("s:Act"),
            json!("arn:aws:logs:*:log-group:/slipway/*")
        )),
    )];
    let stream = "arn:aws:logs:us-east-1:123456789012:log-group:/slipway/app/prod:log-stream:i-1";
    assert!(allowed(&p, &Request::new("s:Act", stream)));
    let q = [statements(
        "q",
        json!(allow(json!("s:Act"), json!("arn:aws:sqs:us-east-1:1:q?"))),
    )];
    assert!(allowed(
        &q,
        &Request::new("s:Act", "arn:aws:sqs:us-east-1:1:q1")
    ));
    assert!(!allowed(
        &q,
        &Request::new("s:Act", "arn:aws:sqs:us-east-1:1:q12")
    ));
}

#[test]
fn a_resource_list_matches_any_of_its_entries() {
    let p = [statements(
        "p",
        json!(allow(
            json!("s3:ListBucket"),
            json!(["arn:aws:s3:::b", "arn:aws:s3:::b/*"])
        )),
    )];
    assert!(allowed(
        &p,
        &Request::new("s3:ListBucket", "arn:aws:s3:::b")
    ));
    assert!(allowed(
        &p,
        &Request::new("s3:ListBucket", "arn:aws:s3:::b/k")
    ));
    assert!(!allowed(
        &p,
        &Request::new("s3:ListBucket", "arn:aws:s3:::bb")
    ));
}

#[test]
fn not_action_in_a_deny_denies_every_other_action() {
    let p = [statements(
        "p",
        json!([allow(json!("*"), json!("*")), {"Effect": "Deny", "NotAction": ["s3:Get*", "s3:List*"], "Resource": "*"}]),
    )];
    assert!(allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::b/k")
    ));
    assert!(allowed(
        &p,
        &Request::new("S3:listbucket", "arn:aws:s3:::b")
    ));
    let put = evaluate(&p, None, &Request::new("s3:PutObject", "arn:aws:s3:::b/k"));
    assert!(matches!(put, Decision::ExplicitDeny { by } if by.index == 1));
}

#[test]
fn not_resource_covers_everything_but_its_entries() {
    let p = [statements(
        "p",
        json!({"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::secret/*"}),
    )];
    assert!(allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::b/k")
    ));
    assert!(!allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::secret/k")
    ));
}

#[test]
fn arn_like_matches_each_part_of_the_arn_on_its_own() {
    let p = [allow_when(
        json!({"ArnLike": {"aws:SourceArn": "arn:aws:sqs:*:123456789012:q*"}}),
    )];
    assert!(allowed(
        &p,
        &call().with(
            "aws:SourceArn",
            ["arn:aws:sqs:us-east-1:123456789012:queue"]
        )
    ));
    assert!(!allowed(
        &p,
        &call().with(
            "aws:SourceArn",
            ["arn:aws:sqs:us-east-1:999:123456789012:q"]
        )
    ));
    assert!(!allowed(&p, &call().with("aws:SourceArn", ["not-an-arn"])));
    let equals = [allow_when(
        json!({"ArnEquals": {"iam:PolicyARN": "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"}}),
    )];
    assert!(allowed(
        &equals,
        &call().with(
            "iam:PolicyARN",
            ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]
        )
    ));
    assert!(!allowed(
        &equals,
        &call().with(
            "iam:PolicyARN",
            ["arn:aws:iam::aws:policy/AdministratorAccess"]
        )
    ));
}

#[test]
fn string_like_question_star_requires_the_tag_to_be_there() {
    let p = [allow_when(
        json!({"StringLike": {"autoscaling:ResourceTag/slipway:app": "?*"}}),
    )];
    assert_eq!(evaluate(&p, None, &call()), Decision::NotAllowed);
    assert!(!allowed(
        &p,
        &call().with("autoscaling:ResourceTag/slipway:app", [""])
    ));
    assert!(allowed(
        &p,
        &call().with("autoscaling:ResourceTag/slipway:app", ["web"])
    ));
}

#[test]
fn condition_keys_match_case_insensitively_and_values_case_sensitively() {
    let p = [allow_when(
        json!({"StringEquals": {"ssm:resourceTag/slipway:app": "web"}}),
    )];
    assert!(allowed(
        &p,
        &call().with("ssm:ResourceTag/slipway:app", ["web"])
    ));
    assert!(!allowed(
        &p,
        &call().with("ssm:ResourceTag/slipway:app", ["Web"])
    ));
}

#[test]
fn aws_arn_must_equal_the_source_instance_arn() {
    let p = [allow_when(
        json!({"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}),
    )];
    let instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-1";
    let own = call()
        .with("ec2:SourceInstanceARN", [instance])
        .with("aws:ARN", [instance]);
    assert!(allowed(&p, &own));
    let other = call().with("ec2:SourceInstanceARN", [instance]).with(
        "aws:ARN",
        ["arn:aws:ec2:us-east-1:123456789012:instance/i-2"],
    );
    assert!(!allowed(&p, &other));
    assert!(!allowed(&p, &call().with("aws:ARN", [instance])));
}

#[test]
fn for_all_values_string_equals_allows_only_the_listed_tag_keys() {
    let p = [allow_when(
        json!({"ForAllValues:StringEquals": {"aws:TagKeys": ["slipway:release", "slipway:fallback"]}}),
    )];
    assert!(allowed(
        &p,
        &call().with("aws:TagKeys", ["slipway:release"])
    ));
    assert!(allowed(
        &p,
        &call().with("aws:TagKeys", ["slipway:release", "slipway:fallback"])
    ));
    assert!(!allowed(
        &p,
        &call().with("aws:TagKeys", ["slipway:release", "slipway:app"])
    ));
    assert!(allowed(&p, &call()), "absent key");
    assert!(
        allowed(&p, &call().with("aws:TagKeys", Vec::<String>::new())),
        "empty key"
    );
}

#[test]
fn for_any_value_needs_one_listed_value_and_fails_on_an_absent_key() {
    let p = [allow_when(
        json!({"ForAnyValue:StringEquals": {"aws:TagKeys": "slipway:app"}}),
    )];
    assert!(allowed(
        &p,
        &call().with("aws:TagKeys", ["other", "slipway:app"])
    ));
    assert!(!allowed(&p, &call().with("aws:TagKeys", ["other"])));
    assert!(!allowed(&p, &call()));
}

#[test]
fn negated_operators_hold_when_the_key_is_absent() {
    for op in [
        "StringNotEquals",
        "StringNotEqualsIgnoreCase",
        "StringNotLike",
        "ArnNotEquals",
        "ArnNotLike",
        "NumericNotEquals",
    ] {
        let p = [allow_when(json!({op: {"k:Missing": "1"}}))];
        assert!(allowed(&p, &call()), "{op}");
    }
}

#[test]
fn positive_operators_fail_when_the_key_is_absent() {
    for op in [
        "StringEquals",
        "StringEqualsIgnoreCase",
        "StringLike",
        "ArnEquals",
        "ArnLike",
        "Bool",
        "NumericEquals",
        "NumericLessThan",
    ] {
        let value = if op == "Bool" { "true" } else { "1" };
        let p = [allow_when(json!({op: {"k:Missing": value}}))];
        assert!(!allowed(&p, &call()), "{op}");
    }
}

#[test]
fn if_exists_holds_when_the_key_is_absent_and_tests_it_when_present() {
    let p = [allow_when(
        json!({"StringEqualsIfExists": {"aws:RequestTag/env": "prod"}}),
    )];
    assert!(allowed(&p, &call()));
    assert!(allowed(&p, &call().with("aws:RequestTag/env", ["prod"])));
    assert!(!allowed(&p, &call().with("aws:RequestTag/env", ["dev"])));
}

#[test]
fn null_true_holds_only_when_the_key_is_absent() {
    let absent = [allow_when(json!({"Null": {"aws:TokenIssueTime": "true"}}))];
    assert!(allowed(&absent, &call()));
    assert!(!allowed(
        &absent,
        &call().with("aws:TokenIssueTime", ["2026-01-01T00:00:00Z"])
    ));
    let present = [allow_when(json!({"Null": {"aws:TokenIssueTime": false}}))];
    assert!(!allowed(&present, &call()));
    assert!(allowed(
        &present,
        &call().with("aws:TokenIssueTime", ["2026-01-01T00:00:00Z"])
    ));
}

#[test]
fn every_operator_and_key_must_hold_while_any_value_may_match() {
    let p = [allow_when(json!({
        "StringEquals": {"k:A": ["a1", "a2"], "k:B": "b"},
        "StringLike": {"k:C": "c*"}
    }))];
    let all = call()
        .with("k:A", ["a2"])
        .with("k:B", ["b"])
        .with("k:C", ["cat"]);
    assert!(allowed(&p, &all));
    assert!(!allowed(&p, &all.clone().with("k:B", ["x"])));
    assert!(!allowed(&p, &all.with("k:C", ["dog"])));
}

#[test]
fn ignore_case_operators_fold_case_and_plain_ones_do_not() {
    let p = [allow_when(
        json!({"StringEqualsIgnoreCase": {"k:Env": "Prod"}}),
    )];
    assert!(allowed(&p, &call().with("k:Env", ["PROD"])));
    let n = [allow_when(
        json!({"StringNotEqualsIgnoreCase": {"k:Env": "Prod"}}),
    )];
    assert!(!allowed(&n, &call().with("k:Env", ["prod"])));
    assert!(allowed(&n, &call().with("k:Env", ["dev"])));
}

#[test]
fn numeric_operators_compare_numbers_not_text() {
    let cases = [
        ("NumericEquals", "10", "10.0", true),
        ("NumericNotEquals", "10", "11", true),
        ("NumericLessThan", "10", "9", true),
        ("NumericLessThan", "10", "10", false),
        ("NumericLessThanEquals", "10", "10", true),
        ("NumericGreaterThan", "10", "100", true),
        ("NumericGreaterThanEquals", "10", "9", false),
        ("NumericEquals", "10", "ten", false),
    ];
    for (op, want, have, expected) in cases {
        let p = [allow_when(json!({op: {"k:N": want}}))];
        assert_eq!(
            allowed(&p, &call().with("k:N", [have])),
            expected,
            "{op} {want} {have}"
        );
    }
}

#[test]
fn bool_compares_true_and_false() {
    let p = [allow_when(json!({"Bool": {"aws:SecureTransport": "true"}}))];
    assert!(allowed(&p, &call().with("aws:SecureTransport", ["true"])));
    assert!(!allowed(&p, &call().with("aws:SecureTransport", ["false"])));
}

#[test]
fn a_plain_operator_over_a_multi_valued_key_takes_any_value_and_its_negation_none() {
    let positive = [allow_when(json!({"StringEquals": {"aws:TagKeys": "a"}}))];
    assert!(allowed(&positive, &call().with("aws:TagKeys", ["b", "a"])));
    let negated = [allow_when(json!({"StringNotEquals": {"aws:TagKeys": "a"}}))];
    assert!(!allowed(&negated, &call().with("aws:TagKeys", ["b", "a"])));
    assert!(allowed(&negated, &call().with("aws:TagKeys", ["b", "c"])));
}

#[test]
fn a_variable_fills_a_resource_from_the_request_context() {
    let p = [statements(
        "p",
        json!(allow(
            json!("s3:GetObject"),
            json!("arn:aws:s3:::home/${aws:username}/*")
        )),
    )];
    let alice =
        Request::new("s3:GetObject", "arn:aws:s3:::home/alice/k").with("aws:username", ["alice"]);
    assert!(allowed(&p, &alice));
    assert!(!allowed(&p, &alice.clone().with("aws:username", ["bob"])));
}

#[test]
fn an_absent_variable_makes_its_resource_match_nothing() {
    let p = [statements(
        "p",
        json!(allow(
            json!("s3:GetObject"),
            json!("arn:aws:s3:::home/${aws:username}*")
        )),
    )];
    assert!(!allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::home/anything")
    ));
    let deny = [statements(
        "d",
        json!([allow(json!("*"), json!("*")), {"Effect": "Deny", "Action": "*", "Resource": "arn:aws:s3:::${aws:username}"}]),
    )];
    assert!(allowed(
        &deny,
        &Request::new("s3:GetObject", "arn:aws:s3:::")
    ));
}

#[test]
fn a_variable_default_stands_in_for_an_absent_key() {
    let p = [statements(
        "p",
        json!(allow(
            json!("s3:GetObject"),
            json!("arn:aws:s3:::b/${aws:username, 'shared'}/*")
        )),
    )];
    assert!(allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::b/shared/k")
    ));
}

#[test]
fn variable_escapes_are_literal_characters() {
    let p = [statements(
        "p",
        json!(allow(
            json!("s3:GetObject"),
            json!("arn:aws:s3:::b/${*}${?}${$}")
        )),
    )];
    assert!(allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::b/*?$")
    ));
    assert!(!allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::b/xy$")
    ));
}

#[test]
fn a_substituted_value_is_never_a_wildcard() {
    let p = [allow_when(
        json!({"StringLike": {"k:Path": "${k:Prefix}/x"}}),
    )];
    assert!(!allowed(
        &p,
        &call().with("k:Prefix", ["*"]).with("k:Path", ["abc/x"])
    ));
    assert!(allowed(
        &p,
        &call().with("k:Prefix", ["*"]).with("k:Path", ["*/x"])
    ));
}

#[test]
fn a_policy_without_version_2012_takes_variables_literally() {
    let p = [policy(
        "old",
        json!({"Statement": allow(json!("s3:GetObject"), json!("arn:aws:s3:::${aws:username}"))}),
    )];
    assert_eq!(p[0].version, Version::Legacy);
    assert!(allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::${aws:username}")
    ));
    assert!(!allowed(
        &p,
        &Request::new("s3:GetObject", "arn:aws:s3:::alice").with("aws:username", ["alice"])
    ));
}

#[test]
fn a_single_statement_object_is_a_policy_of_one_statement() {
    let p = policy(
        "one",
        json!({"Version": "2012-10-17", "Statement": allow(json!("s3:*"), json!("*"))}),
    );
    assert_eq!(p.statements.len(), 1);
    assert_eq!(p.statements[0].actions, Targets::Only(vec!["s3:*".into()]));
}

#[test]
fn an_unknown_operator_is_a_parse_error_naming_the_policy() {
    let message = parse_error(
        json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringSorta": {"k": "v"}}}}),
    );
    assert!(
        message.contains("Broken") && message.contains("StringSorta"),
        "{message}"
    );
}

#[test]
fn malformed_statements_are_refused_saying_what_is_wrong() {
    let cases = [
        (
            json!({"Effect": "Allow", "Action": "*", "NotAction": "s3:*", "Resource": "*"}),
            "both Action and NotAction",
        ),
        (
            json!({"Effect": "Allow", "Action": "*"}),
            "neither Resource nor NotResource",
        ),
        (
            json!({"Effect": "Permit", "Action": "*", "Resource": "*"}),
            "Effect",
        ),
        (json!({"Action": "*", "Resource": "*"}), "Effect"),
        (
            json!({"Effect": "Allow", "Action": [], "Resource": "*"}),
            "Action must be",
        ),
        (
            json!({"Effect": "Allow", "Action": [1], "Resource": "*"}),
            "Action must be",
        ),
        (
            json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
            "Principal",
        ),
        (
            json!({"Effect": "Allow", "Actions": "*", "Resource": "*"}),
            "unknown element Actions",
        ),
        (
            json!({"Sid": "N", "Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"NumericLessThan": {"k": "x"}}}),
            "(Sid N): NumericLessThan k: x is not a number",
        ),
        (
            json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"NullIfExists": {"k": "true"}}}),
            "NullIfExists",
        ),
        (
            json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"k": {}}}}),
            "StringEquals k",
        ),
    ];
    for (statement, expected) in cases {
        let message = parse_error(json!({"Version": "2012-10-17", "Statement": [statement]}));
        assert!(
            message.starts_with("policy Broken, Statement[0]"),
            "{message}"
        );
        assert!(message.contains(expected), "{message} lacks {expected}");
    }
}

#[test]
fn malformed_documents_are_refused() {
    assert!(parse_error(json!([])).contains("not a JSON object"));
    assert!(parse_error(json!({"Version": "2012-10-17"})).contains("no Statement"));
    assert!(
        parse_error(json!({"Version": "2012-10-17", "Statement": []})).contains("no Statement")
    );
    assert!(parse_error(json!({"Version": "2020-01-01", "Statement": []})).contains("Version"));
    assert!(
        parse_error(json!({"Statement": [], "Principal": "*"}))
            .contains("unknown top-level element Principal")
    );
}

#[test]
fn matching_allows_lists_every_action_pattern_that_covers_the_call() {
    let p = [
        statements(
            "a",
            json!([
                allow(
                    json!(["s3:GetObject", "s3:Get*", "s3:PutObject"]),
                    json!("*")
                ),
                allow(json!("s3:*"), json!("arn:aws:s3:::other"))
            ]),
        ),
        statements(
            "b",
            json!({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}),
        ),
    ];
    let found = matching_allows(&p, &Request::new("s3:GetObject", "arn:aws:s3:::b/k"));
    let at = |policy, statement, action| GrantRef {
        policy,
        statement,
        action,
    };
    assert_eq!(found, vec![at(0, 0, 0), at(0, 0, 1), at(1, 0, 0)]);
    assert!(matching_allows(&p, &Request::new("iam:PassRole", "x")).is_empty());
}

#[test]
fn grants_describe_each_action_on_its_resources() {
    let p = [
        statements(
            "S3CrudPolicy",
            json!(allow(
                json!(["s3:GetObject", "s3:PutObjectAcl"]),
                json!(["arn:aws:s3:::b", "arn:aws:s3:::b/*"])
            )),
        ),
        statements(
            "Other",
            json!([{"Effect": "Deny", "Action": "*", "Resource": "*"}, {"Effect": "Allow", "NotAction": ["iam:*", "sts:*"], "Resource": "*", "Condition": {"StringLike": {"aws:ResourceTag/app": "?*"}}}]),
        ),
    ];
    let all: Vec<String> = grants(&p).into_iter().map(|g| g.description).collect();
    assert_eq!(
        all,
        [
            "S3CrudPolicy: s3:GetObject on arn:aws:s3:::b, arn:aws:s3:::b/*",
            "S3CrudPolicy: s3:PutObjectAcl on arn:aws:s3:::b, arn:aws:s3:::b/*",
            "Other: every action but iam:*, sts:* on * when StringLike aws:ResourceTag/app ?*",
        ]
    );
    assert_eq!(
        GrantRef {
            policy: 0,
            statement: 0,
            action: 9
        }
        .describe(&p),
        None
    );
}

#[test]
fn decisions_read_as_sentences_naming_policy_and_statement() {
    let by = StatementRef {
        set: PolicySet::Boundary,
        policy: "Bound".into(),
        index: 2,
        sid: Some("NoIam".into()),
    };
    assert_eq!(
        Decision::ExplicitDeny { by }.to_string(),
        "explicitly denied by permissions boundary Bound Statement[2] (Sid NoIam)"
    );
    let allowed_by = StatementRef {
        set: PolicySet::Identity,
        policy: "Fn".into(),
        index: 0,
        sid: None,
    };
    assert_eq!(
        Decision::OutsideBoundary { allowed_by }.to_string(),
        "allowed by identity policy Fn Statement[0], but no statement of the permissions boundary allows it"
    );
}
