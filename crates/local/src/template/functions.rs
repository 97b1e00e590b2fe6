//! What the local platform runs from the templates: the control plane's
//! functions (binary, timeout, memory, environment, routes, S3 events,
//! policies, on-failure destination) and an environment's instance role.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::resolve::{Resolver, scalar};
use super::{ACCOUNT, PARTITION, REGION, TemplateError, invalid, parse};

/// One route of the HTTP API: `ANY` or a method, and a path with
/// `{name}` and `{proxy+}` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
}

/// An S3 notification of a function: the events and the key filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Notification {
    pub events: Vec<String>,
    /// `(prefix|suffix, value)`.
    pub rules: Vec<(String, String)>,
}

/// A `Schedule` event: EventBridge invokes the function asynchronously
/// with `input` at a fixed rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub every: Duration,
    pub input: Value,
}

/// `rate(N minute|minutes|hour|hours|day|days)`, as EventBridge writes
/// it.
pub fn parse_rate(expression: &str) -> Option<Duration> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let unit_secs = match (n, unit) {
        (1, "minute") | (2.., "minutes") => 60,
        (1, "hour") | (2.., "hours") => 3600,
        (1, "day") | (2.., "days") => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(n * unit_secs))
}

/// Where an asynchronous invocation goes once Lambda gives up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `SQS`, `SNS`, `Lambda` or `EventBridge`.
    pub kind: String,
    pub arn: String,
}

/// One function of the control plane's template.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// The function's name in the account.
    pub name: String,
    /// The cargo binary it is built from (`BuildProperties.Binary`).
    pub binary: String,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// Its environment variables, `Globals` first, resolved.
    pub environment: BTreeMap<String, String>,
    /// `LoggingConfig.LogFormat` is JSON.
    pub json_logs: bool,
    pub routes: Vec<Route>,
    pub s3: Vec<S3Notification>,
    pub schedules: Vec<Schedule>,
    /// Its role's policies: `(name, policy document)`, SAM's policy
    /// templates expanded, its inline statements, the managed policies.
    pub policies: Vec<(String, Value)>,
    pub on_failure: Option<Destination>,
    /// `EventInvokeConfig.MaximumRetryAttempts` (Lambda's default: 2).
    pub retries: u32,
}

impl FunctionSpec {
    /// The function's ARN in the local account.
    pub fn arn(&self) -> String {
        function_arn(&self.name)
    }

    /// The role SAM makes for the function.
    pub fn role(&self) -> String {
        format!("{}Role", self.logical_id)
    }
}

pub fn function_arn(name: &str) -> String {
    format!("arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

/// The local values of the control plane stack's resources.
#[derive(Debug, Clone)]
pub struct StackValues {
    pub stack: String,
    pub bucket: String,
    pub api_id: String,
    pub parameters: BTreeMap<String, String>,
}

/// The control plane's template, read for the local platform.
#[derive(Debug, Clone)]
pub struct ControlPlaneTemplate {
    pub functions: Vec<FunctionSpec>,
    /// The template as JSON, unresolved (for other resources' properties).
    pub template: Value,
    pub resolver: Resolver,
}

impl ControlPlaneTemplate {
    pub fn read(yaml: &str, values: &StackValues) -> Result<Self, TemplateError> {
        let template = parse(yaml)?;
        let resources = template
            .get("Resources")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("the template has no Resources"))?;
        let mut resolver = Resolver::new(&template, &values.stack, &values.parameters)?;
        let arn = |service: &str, rest: String| {
            format!("arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{rest}")
        };
        // Physical names first: functions refer to each other.
        let mut names = BTreeMap::new();
        for (id, resource) in resources {
            let kind = resource
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let physical: Value = match kind {
                "AWS::S3::Bucket" => {
                    resolver.attributes.insert(
                        (id.clone(), "Arn".into()),
                        Value::String(format!("arn:{PARTITION}:s3:::{}", values.bucket)),
                    );
                    Value::String(values.bucket.clone())
                }
                "AWS::Serverless::HttpApi" => Value::String(values.api_id.clone()),
                "AWS::SQS::Queue" => {
                    let name = format!("{}-{id}", values.stack);
                    resolver.attributes.insert(
                        (id.clone(), "Arn".into()),
                        Value::String(arn("sqs", name.clone())),
                    );
                    resolver.attributes.insert(
                        (id.clone(), "QueueName".into()),
                        Value::String(name.clone()),
                    );
                    Value::String(format!(
                        "https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
                    ))
                }
                "AWS::Logs::LogGroup" => {
                    let name = format!("/aws/{}/{id}", values.stack);
                    resolver.attributes.insert(
                        (id.clone(), "Arn".into()),
                        Value::String(arn("logs", format!("log-group:{name}:*"))),
                    );
                    Value::String(name)
                }
                "AWS::IAM::ManagedPolicy" => Value::String(format!(
                    "arn:{PARTITION}:iam::{ACCOUNT}:policy/{}-{id}",
                    values.stack
                )),
                "AWS::IAM::Role" => {
                    let name = format!("{}-{id}", values.stack);
                    resolver.attributes.insert(
                        (id.clone(), "Arn".into()),
                        Value::String(format!("arn:{PARTITION}:iam::{ACCOUNT}:role/{name}")),
                    );
                    Value::String(name)
                }
                _ => continue,
            };
            resolver.refs.insert(id.clone(), physical);
        }
        // Names that depend on parameters and pseudo parameters.
        for (id, resource) in resources {
            let kind = resource
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let at = format!("Resources.{id}");
            let physical = match kind {
                "AWS::Serverless::Function" => match props.get("FunctionName") {
                    Some(name) => resolver.resolve(name, &at)?,
                    None => Value::String(format!("{}-{id}", values.stack)),
                },
                "AWS::SSM::Document" => match props.get("Name") {
                    Some(name) => resolver.resolve(name, &at)?,
                    None => Value::String(format!("{}-{id}", values.stack)),
                },
                _ => continue,
            };
            if kind == "AWS::Serverless::Function" {
                let name = scalar(&physical);
                resolver.attributes.insert(
                    (id.clone(), "Arn".into()),
                    Value::String(function_arn(&name)),
                );
                names.insert(id.clone(), name);
            }
            resolver.refs.insert(id.clone(), physical);
        }
        let resolver = resolver.with_conditions(&template)?;
        let globals = template
            .pointer("/Globals/Function")
            .cloned()
            .unwrap_or(Value::Null);
        let mut functions = Vec::new();
        for (id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            functions.push(function(&resolver, &globals, id, resource, &names[id])?);
        }
        Ok(Self {
            functions,
            template,
            resolver,
        })
    }

    pub fn function(&self, logical_id: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.logical_id == logical_id)
    }

    pub fn by_name(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// A resource's `Properties`, resolved.
    pub fn properties(&self, logical_id: &str) -> Result<Value, TemplateError> {
        let props = self
            .template
            .pointer(&format!("/Resources/{logical_id}/Properties"))
            .ok_or_else(|| invalid(format!("the template has no resource {logical_id}")))?;
        self.resolver
            .resolve(props, &format!("Resources.{logical_id}"))
    }
}

fn function(
    resolver: &Resolver,
    globals: &Value,
    id: &str,
    resource: &Value,
    name: &str,
) -> Result<FunctionSpec, TemplateError> {
    let at = format!("Resources.{id}");
    let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
    // A function's own property wins over Globals; environment variables
    // are merged, its own winning.
    let property = |key: &str| props.get(key).or_else(|| globals.get(key)).cloned();
    let binary = resource
        .pointer("/Metadata/BuildProperties/Binary")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at} names no Metadata.BuildProperties.Binary")))?
        .to_owned();
    let number = |key: &str, default: u64| -> Result<u64, TemplateError> {
        match property(key) {
            None => Ok(default),
            Some(v) => scalar(&resolver.resolve(&v, &at)?)
                .parse()
                .map_err(|_| invalid(format!("{at}.{key} is not a number"))),
        }
    };
    let mut environment = BTreeMap::new();
    for source in [globals, &props] {
        if let Some(vars) = source.pointer("/Environment/Variables") {
            let vars = resolver.resolve(vars, &format!("{at}.Environment"))?;
            for (k, v) in vars.as_object().cloned().unwrap_or_default() {
                environment.insert(k, scalar(&v));
            }
        }
    }
    let json_logs = property("LoggingConfig")
        .and_then(|c| {
            c.get("LogFormat")
                .and_then(Value::as_str)
                .map(|f| f == "JSON")
        })
        .unwrap_or(false);
    let mut routes = Vec::new();
    let mut s3 = Vec::new();
    let mut schedules = Vec::new();
    for (event, spec) in props
        .get("Events")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
    {
        let ev_at = format!("{at}.Events.{event}");
        let kind = spec.get("Type").and_then(Value::as_str).unwrap_or_default();
        let p = resolver.resolve(
            &spec.get("Properties").cloned().unwrap_or(Value::Null),
            &ev_at,
        )?;
        match kind {
            "HttpApi" => routes.push(Route {
                method: p
                    .get("Method")
                    .map(scalar)
                    .unwrap_or_else(|| "ANY".into())
                    .to_uppercase(),
                path: p
                    .get("Path")
                    .map(scalar)
                    .ok_or_else(|| invalid(format!("{ev_at} has no Path")))?,
            }),
            "S3" => s3.push(S3Notification {
                events: match p.get("Events") {
                    Some(Value::Array(items)) => items.iter().map(scalar).collect(),
                    Some(one) => vec![scalar(one)],
                    None => return Err(invalid(format!("{ev_at} has no Events"))),
                },
                rules: p
                    .pointer("/Filter/S3Key/Rules")
                    .and_then(Value::as_array)
                    .map(|rules| {
                        rules
                            .iter()
                            .map(|r| {
                                (
                                    r.get("Name").map(scalar).unwrap_or_default().to_lowercase(),
                                    r.get("Value").map(scalar).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            "Schedule" => {
                let rate = p.get("Schedule").map(scalar).unwrap_or_default();
                let every = parse_rate(&rate).ok_or_else(|| {
                    invalid(format!(
                        "{ev_at}: the local platform runs rate(…) schedules, not {rate:?}"
                    ))
                })?;
                let input = match p.get("Input") {
                    None => json!({}),
                    Some(raw) => serde_json::from_str(&scalar(raw))
                        .map_err(|_| invalid(format!("{ev_at}.Input is not JSON")))?,
                };
                schedules.push(Schedule { every, input });
            }
            other => {
                return Err(invalid(format!(
                    "{ev_at}: the local platform has no {other} events"
                )));
            }
        }
    }
    let policies = policies(resolver, &props, &at)?;
    let invoke_config = property("EventInvokeConfig")
        .map(|c| resolver.resolve(&c, &at))
        .transpose()?;
    let on_failure = invoke_config
        .as_ref()
        .and_then(|c| c.pointer("/DestinationConfig/OnFailure"))
        .map(|d| -> Result<Destination, TemplateError> {
            Ok(Destination {
                kind: d.get("Type").map(scalar).unwrap_or_default(),
                arn: d
                    .get("Destination")
                    .map(scalar)
                    .ok_or_else(|| invalid(format!("{at}'s OnFailure names no Destination")))?,
            })
        })
        .transpose()?;
    let retries = invoke_config
        .as_ref()
        .and_then(|c| c.get("MaximumRetryAttempts"))
        .map(scalar)
        .map(|r| {
            r.parse()
                .map_err(|_| invalid(format!("{at}: MaximumRetryAttempts")))
        })
        .transpose()?
        .unwrap_or(2);
    Ok(FunctionSpec {
        logical_id: id.to_owned(),
        name: name.to_owned(),
        binary,
        timeout: Duration::from_secs(number("Timeout", 3)?),
        memory_mb: number("MemorySize", 128)? as u32,
        environment,
        json_logs,
        routes,
        s3,
        schedules,
        policies,
        on_failure,
        retries,
    })
}

/// The policies SAM gives a function's role: `AWSLambdaBasicExecutionRole`
/// always, then each entry of `Policies`.
fn policies(
    resolver: &Resolver,
    props: &Value,
    at: &str,
) -> Result<Vec<(String, Value)>, TemplateError> {
    use crate::iam::sam;
    let pseudo = sam::Pseudo {
        partition: PARTITION.into(),
        region: REGION.into(),
        account: ACCOUNT.into(),
    };
    let managed = |name: &str| -> Result<(String, Value), TemplateError> {
        sam::managed_policy(name)
            .map(|doc| (name.rsplit('/').next().unwrap_or(name).to_owned(), doc))
            .ok_or_else(|| invalid(format!("{at}: no managed policy {name} is known here")))
    };
    let mut out = vec![managed("AWSLambdaBasicExecutionRole")?];
    let list = match props.get("Policies") {
        None => vec![],
        Some(Value::Array(items)) => items.clone(),
        Some(one) => vec![one.clone()],
    };
    for (i, entry) in list.iter().enumerate() {
        let entry_at = format!("{at}.Policies[{i}]");
        let entry = resolver.resolve(entry, &entry_at)?;
        match &entry {
            Value::String(name) => out.push(managed(name)?),
            Value::Object(map) if map.contains_key("Statement") => out.push((
                format!("Policies[{i}]"),
                json!({ "Version": "2012-10-17", "Statement": map["Statement"] }),
            )),
            Value::Object(map) if map.len() == 1 => {
                let (name, params) = map.iter().next().expect("one entry");
                let params = params.as_object().cloned().unwrap_or_default();
                let doc = sam::policy_template(name, &params, &pseudo)
                    .map_err(|e| invalid(format!("{entry_at}: {e}")))?;
                out.push((name.clone(), doc));
            }
            _ => return Err(invalid(format!("{entry_at} is not a policy"))),
        }
    }
    Ok(out)
}

/// The policies `infra/environment.yaml`'s `InstanceRole` gives the
/// instances of `app`/`env` (its inline policies and managed policies), as
/// the environment's stack makes it with the release bucket `bucket` and
/// the control plane's boundary `boundary_arn`.
pub fn instance_role(
    environment_yaml: &str,
    app: &str,
    env: &str,
    bucket: &str,
    boundary_arn: &str,
) -> Result<Vec<(String, Value)>, TemplateError> {
    let template = parse(environment_yaml)?;
    let parameters = BTreeMap::from([
        ("App".to_owned(), app.to_owned()),
        ("Env".to_owned(), env.to_owned()),
        ("ReleaseBucket".to_owned(), bucket.to_owned()),
        ("InstanceRoleBoundary".to_owned(), boundary_arn.to_owned()),
    ]);
    let stack = format!("{app}-{env}");
    let resolver = Resolver::new(&template, &stack, &parameters)?.with_conditions(&template)?;
    let role = template
        .pointer("/Resources/InstanceRole/Properties")
        .ok_or_else(|| invalid("infra/environment.yaml has no InstanceRole"))?;
    let role = resolver.resolve(role, "Resources.InstanceRole")?;
    let mut out = Vec::new();
    for policy in role
        .get("Policies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = policy.get("PolicyName").map(scalar).unwrap_or_default();
        let doc = policy
            .get("PolicyDocument")
            .cloned()
            .ok_or_else(|| invalid(format!("InstanceRole's policy {name} has no document")))?;
        out.push((name, doc));
    }
    for arn in role
        .get("ManagedPolicyArns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arn = scalar(arn);
        let doc = crate::iam::sam::managed_policy(&arn)
            .ok_or_else(|| invalid(format!("no managed policy {arn} is known here")))?;
        out.push((arn.rsplit('/').next().unwrap_or_default().to_owned(), doc));
    }
    Ok(out)
}
