//! How a JSON policy document becomes a [`Policy`]: every element checked,
//! so a malformed template is refused with the policy, the statement and
//! what is wrong, instead of being evaluated as something else.

use serde_json::{Map, Value};

use super::{
    Compare, Condition, Effect, Operator, Policy, PolicyError, Problem, SetOperator, Statement,
    Targets, Test, Version,
};

impl Policy {
    /// Parses an identity policy or permissions boundary document.
    pub fn parse(name: impl Into<String>, document: &Value) -> Result<Policy, PolicyError> {
        let policy = name.into();
        let Some(object) = document.as_object() else {
            return Err(PolicyError::NotAnObject { policy });
        };
        let top = ["Version", "Id", "Statement"];
        if let Some(element) = object.keys().find(|k| !top.contains(&k.as_str())).cloned() {
            return Err(PolicyError::UnknownElement { policy, element });
        }
        let version = match object.get("Version") {
            None => Version::Legacy,
            Some(v) if v == "2012-10-17" => Version::Current,
            Some(v) if v == "2008-10-17" => Version::Legacy,
            Some(v) => {
                return Err(PolicyError::BadVersion {
                    policy,
                    version: v.to_string(),
                });
            }
        };
        let raw = match object.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
            Some(Value::Array(_)) | None => return Err(PolicyError::NoStatement { policy }),
            Some(single) => vec![single],
        };
        let statements = raw.into_iter().enumerate().map(|(index, value)| {
            Statement::parse(value).map_err(|problem| {
                let statement = statement_label(index, value);
                PolicyError::Statement {
                    policy: policy.clone(),
                    statement,
                    problem: Box::new(problem),
                }
            })
        });
        let statements = statements.collect::<Result<_, _>>()?;
        Ok(Policy {
            name: policy,
            version,
            statements,
        })
    }
}

fn statement_label(index: usize, value: &Value) -> String {
    match value.get("Sid").and_then(Value::as_str) {
        Some(sid) => format!("Statement[{index}] (Sid {sid})"),
        None => format!("Statement[{index}]"),
    }
}

const ELEMENTS: [&str; 7] = [
    "Sid",
    "Effect",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

impl Statement {
    fn parse(value: &Value) -> Result<Statement, Problem> {
        let object = value.as_object().ok_or(Problem::NotAnObject)?;
        if let Some(key) = object
            .keys()
            .find(|k| !ELEMENTS.contains(&k.as_str()))
            .cloned()
        {
            let principal = key == "Principal" || key == "NotPrincipal";
            return Err(if principal {
                Problem::Principal(key)
            } else {
                Problem::UnknownElement(key)
            });
        }
        let sid = match object.get("Sid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Problem::BadSid),
        };
        let effect = match object.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => {
                let shown = object
                    .get("Effect")
                    .map_or("nothing".into(), Value::to_string);
                return Err(Problem::BadEffect(shown));
            }
        };
        let conditions = match object.get("Condition") {
            None => Vec::new(),
            Some(block) => parse_conditions(block)?,
        };
        let actions = targets(object, "Action", "NotAction")?;
        let resources = targets(object, "Resource", "NotResource")?;
        Ok(Statement {
            sid,
            effect,
            actions,
            resources,
            conditions,
        })
    }
}

fn targets(
    object: &Map<String, Value>,
    only: &'static str,
    but: &'static str,
) -> Result<Targets, Problem> {
    match (object.get(only), object.get(but)) {
        (Some(_), Some(_)) => Err(Problem::Both(only, but)),
        (None, None) => Err(Problem::Neither(only, but)),
        (Some(v), None) => strings(v, only).map(Targets::Only),
        (None, Some(v)) => strings(v, but).map(Targets::AllBut),
    }
}

fn strings(value: &Value, field: &'static str) -> Result<Vec<String>, Problem> {
    let bad = || Problem::NotStrings(field);
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

fn parse_conditions(block: &Value) -> Result<Vec<Condition>, Problem> {
    let operators = block.as_object().ok_or(Problem::BadConditionBlock)?;
    let mut conditions = Vec::new();
    for (name, keys) in operators {
        let operator = Operator::parse(name)?;
        for (key, value) in keys.as_object().ok_or(Problem::BadConditionBlock)? {
            let values = condition_values(value)
                .ok_or_else(|| Problem::BadConditionValue(name.clone(), key.clone()))?;
            check_values(&operator, key, &values)?;
            let key = key.clone();
            conditions.push(Condition {
                operator: operator.clone(),
                key,
                values,
            });
        }
    }
    Ok(conditions)
}

fn condition_values(value: &Value) -> Option<Vec<String>> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match value {
        Value::Array(list) if !list.is_empty() => list.iter().map(scalar).collect(),
        Value::Array(_) => None,
        single => scalar(single).map(|s| vec![s]),
    }
}

/// Refuses a `Bool` or `Null` value that is no boolean, a `Numeric*` one
/// that is no number.
fn check_values(operator: &Operator, key: &str, values: &[String]) -> Result<(), Problem> {
    let (expected, valid): (&'static str, fn(&str) -> bool) = match operator.test {
        Test::Bool | Test::Null => ("boolean", |v| {
            v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
        }),
        Test::Numeric(_) => ("number", |v| v.trim().parse::<f64>().is_ok()),
        _ => return Ok(()),
    };
    match values.iter().find(|v| !valid(v)) {
        None => Ok(()),
        Some(value) => Err(Problem::WrongValueType {
            operator: operator.name.clone(),
            key: key.into(),
            value: value.clone(),
            expected,
        }),
    }
}

impl Operator {
    /// Parses `[ForAnyValue:|ForAllValues:]Test[IfExists]`.
    pub fn parse(name: &str) -> Result<Operator, Problem> {
        let unknown = || Problem::UnknownOperator(name.into());
        let (set, rest) = match name.split_once(':') {
            Some(("ForAnyValue", rest)) => (Some(SetOperator::ForAnyValue), rest),
            Some(("ForAllValues", rest)) => (Some(SetOperator::ForAllValues), rest),
            Some(_) => return Err(unknown()),
            None => (None, name),
        };
        let (rest, if_exists) = rest
            .strip_suffix("IfExists")
            .map_or((rest, false), |r| (r, true));
        let (test, negated) = parse_test(rest).ok_or_else(unknown)?;
        if test == Test::Null && (set.is_some() || if_exists) {
            return Err(Problem::NullModifier(name.into()));
        }
        let name = name.to_owned();
        Ok(Operator {
            name,
            set,
            test,
            negated,
            if_exists,
        })
    }
}

/// `StringNotEquals` is `(StringEquals, negated)`; `None` if unknown.
fn parse_test(name: &str) -> Option<(Test, bool)> {
    let (positive, negated) = match name.split_once("Not") {
        Some((head, tail)) => (format!("{head}{tail}"), true),
        None => (name.to_owned(), false),
    };
    let test = match positive.as_str() {
        "StringEquals" => Test::StringEquals,
        "StringEqualsIgnoreCase" => Test::StringEqualsIgnoreCase,
        "StringLike" => Test::StringLike,
        "ArnEquals" | "ArnLike" => Test::Arn,
        "Bool" => Test::Bool,
        "Null" => Test::Null,
        "NumericEquals" => Test::Numeric(Compare::Equals),
        "NumericLessThan" => Test::Numeric(Compare::LessThan),
        "NumericLessThanEquals" => Test::Numeric(Compare::LessThanEquals),
        "NumericGreaterThan" => Test::Numeric(Compare::GreaterThan),
        "NumericGreaterThanEquals" => Test::Numeric(Compare::GreaterThanEquals),
        _ => return None,
    };
    let negatable = match test {
        Test::Bool | Test::Null => false,
        Test::Numeric(compare) => compare == Compare::Equals,
        _ => true,
    };
    (negatable || !negated).then_some((test, negated))
}
