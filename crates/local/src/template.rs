//! The templates as CloudFormation reads them, for the local platform to
//! run what they describe rather than a copy: `infra/template.yaml`'s
//! functions (binary, timeout, memory, environment, routes, S3 events,
//! policies, on-failure destination) and `infra/environment.yaml`'s
//! instance role, with their intrinsic functions (`!Ref`, `!Sub`,
//! `!GetAtt`, `!Select`, `!Split`, `!Join`, `!If` and the conditions)
//! resolved to the local platform's values. Anything it cannot resolve is
//! an error naming it, never a guess.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// Why a template could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the template is not YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{at}: cannot resolve {what}")]
    Unresolved { at: String, what: String },
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(message.into())
}

/// The account, region and partition the local platform plays.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const PARTITION: &str = "aws";

/// A template as JSON, each YAML tag (`!Ref x`) turned into its long form
/// (`{"Ref": "x"}`), as CloudFormation itself does.
pub fn parse(yaml: &str) -> Result<Value, TemplateError> {
    let value: serde_norway::Value =
        serde_norway::from_str(yaml).map_err(|e| TemplateError::Yaml(e.to_string()))?;
    to_json(value)
}

fn to_json(value: serde_norway::Value) -> Result<Value, TemplateError> {
    use serde_norway::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).map_err(|e| invalid(e.to_string()))?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(invalid(format!(
                            "a mapping key that is not a string: {other:?}"
                        )));
                    }
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let inner = to_json(tagged.value)?;
            match tag {
                "Ref" => json!({ "Ref": inner }),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) = s
                            .split_once('.')
                            .ok_or_else(|| invalid(format!("!GetAtt {s} names no attribute")))?;
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                "Condition" => json!({ "Condition": inner }),
                other => json!({ format!("Fn::{other}"): inner }),
            }
        }
    })
}

/// What references resolve to: parameters, resources' `Ref` and
/// `Fn::GetAtt` values, the pseudo parameters, and the conditions.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pub parameters: BTreeMap<String, Value>,
    pub refs: BTreeMap<String, Value>,
    pub attributes: BTreeMap<(String, String), Value>,
    conditions: BTreeMap<String, bool>,
}

/// The marker `AWS::NoValue` leaves, removed from lists and mappings.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

impl Resolver {
    /// A resolver for `template` in the local account and region, named
    /// `stack`, its parameters' defaults overridden by `parameters`.
    pub fn new(
        template: &Value,
        stack: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Self, TemplateError> {
        let mut resolver = Self::default();
        for (k, v) in [
            ("AWS::StackName", stack),
            ("AWS::Region", REGION),
            ("AWS::AccountId", ACCOUNT),
            ("AWS::Partition", PARTITION),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("AWS::NoValue", NO_VALUE),
        ] {
            resolver.refs.insert(k.into(), Value::String(v.into()));
        }
        let declared = template
            .get("Parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, spec) in &declared {
            let value = match parameters.get(name) {
                Some(v) => Value::String(v.clone()),
                None => match spec.get("Default") {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    Some(Value::Number(n)) => Value::String(n.to_string()),
                    Some(other) => other.clone(),
                    None => continue,
                },
            };
            let value = match (spec.get("Type").and_then(Value::as_str), &value) {
                (Some(t), Value::String(s))
                    if t.starts_with("List<") || t == "CommaDelimitedList" =>
                {
                    Value::Array(
                        s.split(',')
                            .map(|p| Value::String(p.trim().into()))
                            .collect(),
                    )
                }
                _ => value,
            };
            resolver.parameters.insert(name.clone(), value);
        }
        if let Some(unknown) = parameters.keys().find(|k| !declared.contains_key(*k)) {
            return Err(invalid(format!("the template has no parameter {unknown}")));
        }
        Ok(resolver)
    }

    /// Evaluates the template's `Conditions` (after the refs they use are
    /// known).
    pub fn with_conditions(mut self, template: &Value) -> Result<Self, TemplateError> {
        if let Some(conditions) = template.get("Conditions").and_then(Value::as_object) {
            for (name, condition) in conditions {
                let value = self.condition(condition, &format!("Conditions.{name}"))?;
                self.conditions.insert(name.clone(), value);
            }
        }
        Ok(self)
    }

    fn condition(&self, value: &Value, at: &str) -> Result<bool, TemplateError> {
        let unresolved = |what: &str| TemplateError::Unresolved {
            at: at.to_owned(),
            what: what.to_owned(),
        };
        let Some((op, arg)) = single(value) else {
            return Err(unresolved("a condition"));
        };
        let args = || arg.as_array().cloned().unwrap_or_default();
        Ok(match op {
            "Condition" => {
                let name = arg.as_str().ok_or_else(|| unresolved("Condition"))?;
                *self.conditions.get(name).ok_or_else(|| unresolved(name))?
            }
            "Fn::Equals" => {
                let a = args();
                if a.len() != 2 {
                    return Err(unresolved("Fn::Equals"));
                }
                scalar(&self.resolve(&a[0], at)?) == scalar(&self.resolve(&a[1], at)?)
            }
            "Fn::Not" => {
                !self.condition(args().first().ok_or_else(|| unresolved("Fn::Not"))?, at)?
            }
            "Fn::And" => args()
                .iter()
                .map(|c| self.condition(c, at))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .all(|b| b),
            "Fn::Or" => args()
                .iter()
                .map(|c| self.condition(c, at))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .any(|b| b),
            other => return Err(unresolved(other)),
        })
    }

    /// `value` with every intrinsic function resolved; `at` says where,
    /// for errors.
    pub fn resolve(&self, value: &Value, at: &str) -> Result<Value, TemplateError> {
        let unresolved = |what: String| TemplateError::Unresolved {
            at: at.to_owned(),
            what,
        };
        if let Some((op, arg)) = single(value)
            && (op == "Ref" || op.starts_with("Fn::"))
        {
            return match op {
                "Ref" => {
                    let name = arg.as_str().ok_or_else(|| unresolved("Ref".into()))?;
                    self.parameters
                        .get(name)
                        .or_else(|| self.refs.get(name))
                        .cloned()
                        .ok_or_else(|| unresolved(format!("!Ref {name}")))
                }
                "Fn::GetAtt" => {
                    let parts: Vec<String> = arg
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|p| p.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    let [resource, attribute] = parts.as_slice() else {
                        return Err(unresolved("Fn::GetAtt".into()));
                    };
                    self.attributes
                        .get(&(resource.clone(), attribute.clone()))
                        .cloned()
                        .ok_or_else(|| unresolved(format!("!GetAtt {resource}.{attribute}")))
                }
                "Fn::Sub" => self.sub(arg, at).map(Value::String),
                "Fn::Join" => {
                    let parts = arg
                        .as_array()
                        .ok_or_else(|| unresolved("Fn::Join".into()))?;
                    let [sep, items] = parts.as_slice() else {
                        return Err(unresolved("Fn::Join".into()));
                    };
                    let sep = sep.as_str().unwrap_or_default();
                    let items = self.resolve(items, at)?;
                    let items = items
                        .as_array()
                        .ok_or_else(|| unresolved("Fn::Join".into()))?;
                    Ok(Value::String(
                        items.iter().map(scalar).collect::<Vec<_>>().join(sep),
                    ))
                }
                "Fn::Split" => {
                    let parts = arg
                        .as_array()
                        .ok_or_else(|| unresolved("Fn::Split".into()))?;
                    let [sep, source] = parts.as_slice() else {
                        return Err(unresolved("Fn::Split".into()));
                    };
                    let sep = sep.as_str().ok_or_else(|| unresolved("Fn::Split".into()))?;
                    let source = scalar(&self.resolve(source, at)?);
                    Ok(Value::Array(
                        source.split(sep).map(|s| Value::String(s.into())).collect(),
                    ))
                }
                "Fn::Select" => {
                    let parts = arg
                        .as_array()
                        .ok_or_else(|| unresolved("Fn::Select".into()))?;
                    let [index, list] = parts.as_slice() else {
                        return Err(unresolved("Fn::Select".into()));
                    };
                    let index: usize = scalar(&self.resolve(index, at)?)
                        .parse()
                        .map_err(|_| unresolved("Fn::Select's index".into()))?;
                    let list = self.resolve(list, at)?;
                    list.as_array()
                        .and_then(|l| l.get(index))
                        .cloned()
                        .ok_or_else(|| unresolved(format!("Fn::Select {index}")))
                }
                "Fn::If" => {
                    let parts = arg.as_array().ok_or_else(|| unresolved("Fn::If".into()))?;
                    let [name, yes, no] = parts.as_slice() else {
                        return Err(unresolved("Fn::If".into()));
                    };
                    let name = name.as_str().unwrap_or_default();
                    let holds = *self
                        .conditions
                        .get(name)
                        .ok_or_else(|| unresolved(format!("the condition {name}")))?;
                    self.resolve(if holds { yes } else { no }, at)
                }
                "Fn::Base64" => Ok(self.resolve(arg, at)?),
                other => Err(unresolved(other.to_owned())),
            };
        }
        Ok(match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v, at))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|v| v.as_str() != Some(NO_VALUE))
                    .collect(),
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let v = self.resolve(v, at)?;
                    if v.as_str() != Some(NO_VALUE) {
                        out.insert(k.clone(), v);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// `Fn::Sub`: a string, or `[string, {name: value}]`.
    fn sub(&self, arg: &Value, at: &str) -> Result<String, TemplateError> {
        let (text, vars) = match arg {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(parts) => match parts.as_slice() {
                [Value::String(s), Value::Object(vars)] => (s.as_str(), vars.clone()),
                _ => {
                    return Err(TemplateError::Unresolved {
                        at: at.into(),
                        what: "Fn::Sub".into(),
                    });
                }
            },
            _ => {
                return Err(TemplateError::Unresolved {
                    at: at.into(),
                    what: "Fn::Sub".into(),
                });
            }
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            if let Some(literal) = after.strip_prefix('!') {
                out.push_str("${");
                rest = literal;
                continue;
            }
            let end = after.find('}').ok_or_else(|| TemplateError::Unresolved {
                at: at.into(),
                what: format!("an unclosed ${{ in {text:?}"),
            })?;
            let name = &after[..end];
            let value = match vars.get(name) {
                Some(v) => self.resolve(v, at)?,
                None => match name.split_once('.') {
                    Some((resource, attribute)) if !name.starts_with("AWS::") => {
                        self.resolve(&json!({ "Fn::GetAtt": [resource, attribute] }), at)?
                    }
                    _ => self.resolve(&json!({ "Ref": name }), at)?,
                },
            };
            out.push_str(&scalar(&value));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `{"Op": arg}`: the one key of an intrinsic function.
fn single(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// A resolved scalar as CloudFormation turns it into text.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

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

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
