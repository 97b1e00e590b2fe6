//! What the templates give each principal besides their inline statements:
//! the AWS SAM policy templates a function's `Policies` name, expanded as SAM
//! and then CloudFormation expand them, and the AWS managed policies a role
//! is attached (`AWSLambdaBasicExecutionRole`, which SAM gives every function
//! role, and the instance role's `CloudWatchAgentServerPolicy`).
//!
//! With these, [`super::policy`] can evaluate a principal's calls against
//! everything it really holds, not only what its template spells out.

use serde_json::{Map, Value, json};

/// What a policy template cannot be expanded for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamError {
    #[error("{name} is not a SAM policy template this emulator knows")]
    UnknownTemplate { name: String },
    #[error("SAM policy template {template} needs a value for {parameters}")]
    MissingParameters {
        template: String,
        parameters: String,
    },
    #[error(
        "SAM policy template {template}: parameter {parameter} must be a string (resolve it first)"
    )]
    NotAString { template: String, parameter: String },
    #[error("SAM policy template {template}: nothing gives a value to {name}")]
    Unresolved { template: String, name: String },
    #[error("SAM policy template {template}: malformed Fn::Sub")]
    BadSub { template: String },
}

/// The pseudo parameters `${AWS::Partition}`, `${AWS::Region}` and
/// `${AWS::AccountId}` resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pseudo {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl Default for Pseudo {
    /// The local platform's: `aws`, `us-east-1`, `123456789012`.
    fn default() -> Pseudo {
        Pseudo {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
        }
    }
}

impl Pseudo {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "AWS::Partition" => Some(&self.partition),
            "AWS::Region" => Some(&self.region),
            "AWS::AccountId" => Some(&self.account),
            _ => None,
        }
    }
}

/// Expands SAM policy template `name` with its (already resolved, string)
/// parameters into the policy document SAM puts in the function's role,
/// every `Ref` and `Fn::Sub` resolved. Like SAM, parameters the template
/// does not declare are ignored, and the document has no `Version`.
pub fn policy_template(
    name: &str,
    params: &Map<String, Value>,
    pseudo: &Pseudo,
) -> Result<Value, SamError> {
    let (declared, definition) =
        definition(name).ok_or_else(|| SamError::UnknownTemplate { name: name.into() })?;
    let missing: Vec<&str> = declared
        .iter()
        .copied()
        .filter(|p| !params.contains_key(*p))
        .collect();
    if !missing.is_empty() {
        return Err(SamError::MissingParameters {
            template: name.into(),
            parameters: missing.join(", "),
        });
    }
    let mut values = Map::new();
    for parameter in declared {
        match params.get(*parameter) {
            Some(Value::String(s)) => {
                values.insert((*parameter).to_owned(), Value::String(s.clone()))
            }
            _ => {
                return Err(SamError::NotAString {
                    template: name.into(),
                    parameter: (*parameter).into(),
                });
            }
        };
    }
    Expander {
        template: name,
        params: &values,
        pseudo,
    }
    .expand(&definition)
}

/// The names of the templates [`policy_template`] knows.
pub const TEMPLATES: [&str; 9] = [
    "S3CrudPolicy",
    "S3ReadPolicy",
    "S3WritePolicy",
    "SSMParameterReadPolicy",
    "SSMParameterWithSlashPrefixReadPolicy",
    "LambdaInvokePolicy",
    "SQSSendMessagePolicy",
    "SQSPollerPolicy",
    "CloudWatchPutMetricPolicy",
];

/// A template's declared parameters and its definition, copied exactly
/// (actions, resources, `Fn::Sub` strings) from SAM's
/// `samtranslator/policy_templates_data/policy_templates.json`, as of
/// <https://github.com/aws/serverless-application-model/blob/51b69948efa593bc8bfdbfe8efe9093e6336e4af/samtranslator/policy_templates_data/policy_templates.json>
/// (the file's last change, 2024-11-03; unchanged at `7000d0a3b0e5`, 2026-05-29).
fn definition(name: &str) -> Option<(&'static [&'static str], Value)> {
    Some(match name {
        "S3CrudPolicy" => (
            &["BucketName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectAcl", "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration", "s3:DeleteObject"],
                    "Resource": [
                        {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${bucketName}", {"bucketName": {"Ref": "BucketName"}}]},
                        {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${bucketName}/*", {"bucketName": {"Ref": "BucketName"}}]}
                    ]
                }
            ]}),
        ),
        "S3ReadPolicy" => (
            &["BucketName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObjectVersion", "s3:GetLifecycleConfiguration"],
                    "Resource": [
                        {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${bucketName}", {"bucketName": {"Ref": "BucketName"}}]},
                        {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${bucketName}/*", {"bucketName": {"Ref": "BucketName"}}]}
                    ]
                }
            ]}),
        ),
        "S3WritePolicy" => (
            &["BucketName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:PutObjectAcl", "s3:PutLifecycleConfiguration"],
                    "Resource": [
                        {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${bucketName}", {"bucketName": {"Ref": "BucketName"}}]},
                        {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${bucketName}/*", {"bucketName": {"Ref": "BucketName"}}]}
                    ]
                }
            ]}),
        ),
        "SSMParameterReadPolicy" => (
            &["ParameterName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["ssm:DescribeParameters"],
                    "Resource": "*"
                },
                {
                    "Effect": "Allow",
                    "Action": ["ssm:GetParameters", "ssm:GetParameter", "ssm:GetParametersByPath"],
                    "Resource": {"Fn::Sub": ["arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${parameterName}", {"parameterName": {"Ref": "ParameterName"}}]}
                }
            ]}),
        ),
        "SSMParameterWithSlashPrefixReadPolicy" => (
            &["ParameterName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["ssm:DescribeParameters"],
                    "Resource": "*"
                },
                {
                    "Effect": "Allow",
                    "Action": ["ssm:GetParameters", "ssm:GetParameter", "ssm:GetParametersByPath"],
                    "Resource": {"Fn::Sub": ["arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${parameterName}", {"parameterName": {"Ref": "ParameterName"}}]}
                }
            ]}),
        ),
        "LambdaInvokePolicy" => (
            &["FunctionName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["lambda:InvokeFunction"],
                    "Resource": {"Fn::Sub": ["arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${functionName}*", {"functionName": {"Ref": "FunctionName"}}]}
                }
            ]}),
        ),
        "SQSSendMessagePolicy" => (
            &["QueueName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["sqs:SendMessage*"],
                    "Resource": {"Fn::Sub": ["arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${queueName}", {"queueName": {"Ref": "QueueName"}}]}
                }
            ]}),
        ),
        "SQSPollerPolicy" => (
            &["QueueName"],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["sqs:ChangeMessageVisibility", "sqs:ChangeMessageVisibilityBatch", "sqs:DeleteMessage", "sqs:DeleteMessageBatch", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"],
                    "Resource": {"Fn::Sub": ["arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${queueName}", {"queueName": {"Ref": "QueueName"}}]}
                }
            ]}),
        ),
        "CloudWatchPutMetricPolicy" => (
            &[],
            json!({"Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["cloudwatch:PutMetricData"],
                    "Resource": "*"
                }
            ]}),
        ),
        _ => return None,
    })
}

/// SAM's `Ref` resolution, then CloudFormation's `Fn::Sub`.
struct Expander<'a> {
    template: &'a str,
    params: &'a Map<String, Value>,
    pseudo: &'a Pseudo,
}

impl Expander<'_> {
    fn expand(&self, node: &Value) -> Result<Value, SamError> {
        match node {
            Value::Array(list) => list
                .iter()
                .map(|v| self.expand(v))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(object) => self.expand_object(object),
            other => Ok(other.clone()),
        }
    }

    fn expand_object(&self, object: &Map<String, Value>) -> Result<Value, SamError> {
        if object.len() == 1 {
            if let Some(Value::String(name)) = object.get("Ref") {
                return self.reference(name).map(Value::String);
            }
            if let Some(sub) = object.get("Fn::Sub") {
                return self.sub(sub).map(Value::String);
            }
        }
        let mut out = Map::new();
        for (key, value) in object {
            out.insert(key.clone(), self.expand(value)?);
        }
        Ok(Value::Object(out))
    }

    fn reference(&self, name: &str) -> Result<String, SamError> {
        let value = self
            .params
            .get(name)
            .and_then(Value::as_str)
            .or_else(|| self.pseudo.get(name));
        value
            .map(str::to_owned)
            .ok_or_else(|| self.unresolved(name))
    }

    /// `Fn::Sub: text` or `Fn::Sub: [text, {name: value}]`.
    fn sub(&self, sub: &Value) -> Result<String, SamError> {
        let bad = || SamError::BadSub {
            template: self.template.into(),
        };
        let (text, names) = match sub {
            Value::String(text) => (text.as_str(), Map::new()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(text), Value::Object(names)] => (text.as_str(), names.clone()),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        let mut vars = Map::new();
        for (name, value) in &names {
            match self.expand(value)? {
                Value::String(s) => vars.insert(name.clone(), Value::String(s)),
                _ => return Err(bad()),
            };
        }
        self.substitute(text, &vars)
    }

    fn substitute(&self, text: &str, vars: &Map<String, Value>) -> Result<String, SamError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| SamError::BadSub {
                template: self.template.into(),
            })?;
            let name = &after[..end];
            match name.strip_prefix('!') {
                Some(literal) => out.push_str(&format!("${{{literal}}}")),
                None => out.push_str(&self.variable(name, vars)?),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn variable(&self, name: &str, vars: &Map<String, Value>) -> Result<String, SamError> {
        let value = vars
            .get(name)
            .and_then(Value::as_str)
            .or_else(|| self.pseudo.get(name));
        value
            .map(str::to_owned)
            .ok_or_else(|| self.unresolved(name))
    }

    fn unresolved(&self, name: &str) -> SamError {
        SamError::Unresolved {
            template: self.template.into(),
            name: name.into(),
        }
    }
}

/// The ARN SAM attaches to every function role it makes.
pub const LAMBDA_BASIC_EXECUTION_ROLE_ARN: &str =
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
/// The managed policy the instance role is attached.
pub const CLOUDWATCH_AGENT_SERVER_POLICY_ARN: &str =
    "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy";

/// An AWS managed policy's current document, by name or by its real ARN
/// (`arn:<partition>:iam::aws:policy/<path><name>`, the path included:
/// `service-role/` for `AWSLambdaBasicExecutionRole`); `None` for a policy
/// this emulator does not carry or an ARN whose path is wrong.
pub fn managed_policy(arn_or_name: &str) -> Option<Value> {
    let (path, name) = match arn_or_name.strip_prefix("arn:") {
        Some(rest) => {
            let (_partition, rest) = rest.split_once(':').filter(|(p, _)| !p.is_empty())?;
            let path_and_name = rest.strip_prefix("iam::aws:policy/")?;
            path_and_name
                .rsplit_once('/')
                .map_or(("", path_and_name), |(p, n)| (p, n))
        }
        None => return managed_document(arn_or_name).map(|(_, document)| document),
    };
    let (real_path, document) = managed_document(name)?;
    (path == real_path).then_some(document)
}

/// A managed policy's path (between `policy/` and its name) and document.
fn managed_document(name: &str) -> Option<(&'static str, Value)> {
    match name {
        // Version v1, unchanged since 2015-04-09.
        "AWSLambdaBasicExecutionRole" => Some((
            "service-role",
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": "*"
                }]
            }),
        )),
        // Version v3, the default since 2024-02-06: as IAM's GetPolicyVersion
        // returns it (moto 5.2's snapshot of the AWS managed policies, and
        // published copies of the document agree); its reference page is
        // https://docs.aws.amazon.com/aws-managed-policy/latest/reference/CloudWatchAgentServerPolicy.html
        "CloudWatchAgentServerPolicy" => Some((
            "",
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "CWACloudWatchServerPermissions",
                        "Effect": "Allow",
                        "Action": [
                            "cloudwatch:PutMetricData", "ec2:DescribeVolumes", "ec2:DescribeTags",
                            "logs:PutLogEvents", "logs:PutRetentionPolicy", "logs:DescribeLogStreams",
                            "logs:DescribeLogGroups", "logs:CreateLogStream", "logs:CreateLogGroup",
                            "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                            "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"
                        ],
                        "Resource": "*"
                    },
                    {
                        "Sid": "CWASSMServerPermissions",
                        "Effect": "Allow",
                        "Action": ["ssm:GetParameter"],
                        "Resource": "arn:aws:ssm:*:*:parameter/AmazonCloudWatch-*"
                    }
                ]
            }),
        )),
        _ => None,
    }
}

#[cfg(test)]
#[path = "sam_tests.rs"]
mod tests;
