//! The templates as CloudFormation reads them, for the local platform to
//! run what they describe rather than a copy: `infra/template.yaml`'s
//! functions (binary, timeout, memory, environment, routes, S3 events,
//! policies, on-failure destination) and `infra/environment.yaml`'s
//! instance role, with their intrinsic functions (`!Ref`, `!Sub`,
//! `!GetAtt`, `!Select`, `!Split`, `!Join`, `!If` and the conditions)
//! resolved to the local platform's values. Anything it cannot resolve is
//! an error naming it, never a guess.

mod functions;
mod resolve;

use serde_json::{Map, Value, json};

pub use functions::{
    ControlPlaneTemplate, Destination, FunctionSpec, Route, S3Notification, Schedule, StackValues,
    function_arn, instance_role, parse_rate,
};
pub use resolve::Resolver;

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

pub(crate) fn invalid(message: impl Into<String>) -> TemplateError {
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

#[cfg(test)]
mod tests;
