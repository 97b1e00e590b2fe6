//! CloudFormation's intrinsic functions and conditions, resolved against
//! the values a stack gives its parameters, resources and pseudo
//! parameters.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{ACCOUNT, PARTITION, REGION, TemplateError, invalid};

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
pub(super) fn single(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// A resolved scalar as CloudFormation turns it into text.
pub(super) fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}
