use super::*;
use crate::iam::policy::{Decision, Policy, Request, evaluate};

fn params(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

fn expand(name: &str, pairs: &[(&str, &str)]) -> Value {
    policy_template(name, &params(pairs), &Pseudo::default()).expect("template expands")
}

#[test]
fn s3_crud_policy_for_bucket_b_grants_object_crud_on_the_bucket_and_its_keys() {
    let document = expand("S3CrudPolicy", &[("BucketName", "b")]);
    let statement = &document["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Action"][0], "s3:GetObject");
    assert_eq!(statement["Action"].as_array().map(Vec::len), Some(9));
    assert_eq!(
        statement["Resource"],
        json!(["arn:aws:s3:::b", "arn:aws:s3:::b/*"])
    );
}

#[test]
fn s3_read_policy_reads_but_does_not_write() {
    let document = expand("S3ReadPolicy", &[("BucketName", "b")]);
    let policy = [Policy::parse("S3ReadPolicy", &document).expect("parses")];
    assert_eq!(
        evaluate(
            &policy,
            None,
            &Request::new("s3:GetObject", "arn:aws:s3:::b/k")
        ),
        Decision::Allowed
    );
    assert_eq!(
        evaluate(
            &policy,
            None,
            &Request::new("s3:PutObject", "arn:aws:s3:::b/k")
        ),
        Decision::NotAllowed
    );
}

#[test]
fn ssm_parameter_read_policy_names_the_parameter_under_parameter_slash() {
    let document = expand(
        "SSMParameterReadPolicy",
        &[("ParameterName", "slipway/users")],
    );
    assert_eq!(
        document["Statement"][0]["Action"],
        json!(["ssm:DescribeParameters"])
    );
    assert_eq!(document["Statement"][0]["Resource"], "*");
    assert_eq!(
        document["Statement"][1]["Resource"],
        "arn:aws:ssm:us-east-1:123456789012:parameter/slipway/users"
    );
}

#[test]
fn lambda_invoke_policy_covers_the_function_its_versions_and_aliases() {
    let document = expand("LambdaInvokePolicy", &[("FunctionName", "slipway-deploy")]);
    let resource = "arn:aws:lambda:us-east-1:123456789012:function:slipway-deploy*";
    assert_eq!(document["Statement"][0]["Resource"], resource);
    let policy = [Policy::parse("LambdaInvokePolicy", &document).expect("parses")];
    let alias = Request::new(
        "lambda:InvokeFunction",
        "arn:aws:lambda:us-east-1:123456789012:function:slipway-deploy:live",
    );
    assert_eq!(evaluate(&policy, None, &alias), Decision::Allowed);
}

#[test]
fn sqs_send_message_policy_sends_to_the_queue_only() {
    let document = expand("SQSSendMessagePolicy", &[("QueueName", "q")]);
    assert_eq!(
        document["Statement"][0]["Action"],
        json!(["sqs:SendMessage*"])
    );
    assert_eq!(
        document["Statement"][0]["Resource"],
        "arn:aws:sqs:us-east-1:123456789012:q"
    );
}

#[test]
fn the_pseudo_parameters_come_from_the_given_partition_region_and_account() {
    let pseudo = Pseudo {
        partition: "aws-cn".into(),
        region: "cn-north-1".into(),
        account: "1".into(),
    };
    let document = policy_template("SQSPollerPolicy", &params(&[("QueueName", "q")]), &pseudo)
        .expect("expands");
    assert_eq!(
        document["Statement"][0]["Resource"],
        "arn:aws-cn:sqs:cn-north-1:1:q"
    );
}

#[test]
fn every_known_template_expands_to_a_policy_that_parses() {
    let all = params(&[
        ("BucketName", "b"),
        ("ParameterName", "p"),
        ("FunctionName", "f"),
        ("QueueName", "q"),
    ]);
    for name in TEMPLATES {
        let document = policy_template(name, &all, &Pseudo::default()).expect("expands");
        assert!(!document.to_string().contains("${"), "{name}: {document}");
        Policy::parse(name, &document).expect("parses");
    }
}

#[test]
fn an_unknown_template_is_an_error_naming_it() {
    let error = policy_template("S3FullAccessPolicy", &Map::new(), &Pseudo::default());
    assert_eq!(
        error,
        Err(SamError::UnknownTemplate {
            name: "S3FullAccessPolicy".into()
        })
    );
    assert!(error.is_err_and(|e| e.to_string().contains("S3FullAccessPolicy")));
}

#[test]
fn a_missing_parameter_is_an_error_naming_it() {
    let error = policy_template(
        "S3CrudPolicy",
        &params(&[("Bucket", "b")]),
        &Pseudo::default(),
    );
    let expected = SamError::MissingParameters {
        template: "S3CrudPolicy".into(),
        parameters: "BucketName".into(),
    };
    assert_eq!(error, Err(expected));
}

#[test]
fn a_parameter_that_is_not_yet_a_string_is_refused() {
    let mut unresolved = Map::new();
    unresolved.insert("BucketName".into(), json!({"Ref": "ReleaseBucket"}));
    let error = policy_template("S3CrudPolicy", &unresolved, &Pseudo::default());
    let expected = SamError::NotAString {
        template: "S3CrudPolicy".into(),
        parameter: "BucketName".into(),
    };
    assert_eq!(error, Err(expected));
}

#[test]
fn sub_keeps_bang_escapes_literal_and_names_what_it_cannot_resolve() {
    let values = Map::new();
    let expander = Expander {
        template: "T",
        params: &values,
        pseudo: &Pseudo::default(),
    };
    assert_eq!(
        expander.sub(&json!("${!Literal}:${AWS::Region}")),
        Ok("${Literal}:us-east-1".into())
    );
    let unresolved = SamError::Unresolved {
        template: "T".into(),
        name: "nope".into(),
    };
    assert_eq!(expander.sub(&json!("x${nope}")), Err(unresolved));
    assert_eq!(
        expander.sub(&json!(["${a}", {"a": 1}])),
        Err(SamError::BadSub {
            template: "T".into()
        })
    );
}

#[test]
fn managed_policies_are_found_by_name_or_by_their_real_arn() {
    let basic = managed_policy("AWSLambdaBasicExecutionRole").expect("known");
    assert_eq!(
        managed_policy(LAMBDA_BASIC_EXECUTION_ROLE_ARN),
        Some(basic.clone())
    );
    assert_eq!(
        basic["Statement"][0]["Action"],
        json!([
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents"
        ])
    );
    assert!(managed_policy(CLOUDWATCH_AGENT_SERVER_POLICY_ARN).is_some());
    assert!(managed_policy("arn:aws-us-gov:iam::aws:policy/CloudWatchAgentServerPolicy").is_some());
    assert_eq!(
        managed_policy("arn:aws:iam::aws:policy/AWSLambdaBasicExecutionRole"),
        None,
        "wrong path"
    );
    assert_eq!(
        managed_policy("arn:aws:iam::123456789012:policy/CloudWatchAgentServerPolicy"),
        None
    );
    assert_eq!(managed_policy("AdministratorAccess"), None);
}

#[test]
fn the_cloudwatch_agent_policy_reads_only_amazoncloudwatch_parameters() {
    let document = managed_policy("CloudWatchAgentServerPolicy").expect("known");
    let policy = [Policy::parse("CloudWatchAgentServerPolicy", &document).expect("parses")];
    let own = "arn:aws:ssm:us-east-1:123456789012:parameter/AmazonCloudWatch-linux";
    assert_eq!(
        evaluate(&policy, None, &Request::new("ssm:GetParameter", own)),
        Decision::Allowed
    );
    let other = "arn:aws:ssm:us-east-1:123456789012:parameter/slipway/users";
    assert_eq!(
        evaluate(&policy, None, &Request::new("ssm:GetParameter", other)),
        Decision::NotAllowed
    );
    let metrics = Request::new("cloudwatch:PutMetricData", "*");
    assert_eq!(evaluate(&policy, None, &metrics), Decision::Allowed);
}
