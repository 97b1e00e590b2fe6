//! IAM policy evaluation, as AWS documents it, so the local platform can
//! refuse exactly the calls AWS would refuse.
//!
//! A principal's identity policies (its inline statements, the SAM policy
//! templates and the managed policies it is given) and, where it has one,
//! its permissions boundary are parsed into [`Policy`] values, and every call
//! is decided by [`evaluate`]: an explicit `Deny` anywhere wins, then an
//! identity `Allow` must match, then the boundary must allow it too.
//! [`matching_allows`] and [`grants`] tell which grants a call used, so a
//! caller can list the grants no call ever needed.
//!
//! Rules followed (IAM User Guide: policy evaluation logic, condition
//! operators, policy variables):
//! - actions match case-insensitively, resources and condition values
//!   case-sensitively, both with `*` and `?`; in resources `*` spans `/`
//!   and `:`; `ArnLike`/`ArnEquals` match each of an ARN's six
//!   colon-separated parts on its own;
//! - condition keys are looked up case-insensitively; all operators and all
//!   keys of a statement must hold, any one of a key's values may match;
//! - a key absent from the request: positive operators fail, negated ones
//!   (`StringNotEquals`, `StringNotLike`, `ArnNot*`, `NumericNotEquals`) hold,
//!   `...IfExists` holds, `ForAllValues:` holds, `ForAnyValue:` fails, and
//!   `Null` tests absence itself; an empty list counts as absent;
//! - an operator without a set prefix over a multi-valued key (our choice,
//!   the guide leaves it open): a positive operator holds if any value
//!   matches, a negated one if no value matches its positive test;
//! - `${key}`, `${key, 'default'}`, `${*}`, `${?}`, `${$}` are replaced in
//!   resources and string/ARN condition values of `2012-10-17` policies; a
//!   key that is absent (or multi-valued) with no default makes that entry
//!   match nothing; substituted text is literal, never a wildcard.

use std::collections::BTreeMap;
use std::fmt;

use self::StatementProblem as Problem;

#[path = "policy_parse.rs"]
mod parse;

/// What a malformed policy document is refused with; each names the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {policy}: the document is not a JSON object")]
    NotAnObject { policy: String },
    #[error("policy {policy}: unknown top-level element {element}")]
    UnknownElement { policy: String, element: String },
    #[error("policy {policy}: Version {version} is neither 2012-10-17 nor 2008-10-17")]
    BadVersion { policy: String, version: String },
    #[error("policy {policy}: it has no Statement")]
    NoStatement { policy: String },
    #[error("policy {policy}, {statement}: {problem}")]
    Statement {
        policy: String,
        statement: String,
        problem: Box<Problem>,
    },
}

/// What is wrong with one statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementProblem {
    #[error("the statement is not a JSON object")]
    NotAnObject,
    #[error("unknown element {0}")]
    UnknownElement(String),
    #[error("{0} has no place in an identity policy or permissions boundary")]
    Principal(String),
    #[error("Sid must be a string")]
    BadSid,
    #[error("Effect must be \"Allow\" or \"Deny\", not {0}")]
    BadEffect(String),
    #[error("it has both {0} and {1}")]
    Both(&'static str, &'static str),
    #[error("it has neither {0} nor {1}")]
    Neither(&'static str, &'static str),
    #[error("{0} must be a string or a non-empty list of strings")]
    NotStrings(&'static str),
    #[error("Condition must be an object of operators, each an object of keys")]
    BadConditionBlock,
    #[error("unknown condition operator {0}")]
    UnknownOperator(String),
    #[error("{0} {1}: values must be strings, numbers or booleans, or a non-empty list of them")]
    BadConditionValue(String, String),
    #[error("{operator} {key}: {value} is not a {expected}")]
    WrongValueType {
        operator: String,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{0} takes neither a ForAnyValue:/ForAllValues: prefix nor IfExists")]
    NullModifier(String),
}

/// The policy language version: only `2012-10-17` replaces `${...}`
/// variables; a document without `Version` is `2008-10-17`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Current,
    Legacy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub version: Version,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action`/`Resource` (`Only`) or `NotAction`/`NotResource` (`AllBut`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    Only(Vec<String>),
    AllBut(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Targets,
    pub resources: Targets,
    pub conditions: Vec<Condition>,
}

/// One key under one operator, with the values any of which may match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub operator: Operator,
    pub key: String,
    pub values: Vec<String>,
}

/// `[ForAnyValue:|ForAllValues:]<test, Not for negated>[IfExists]`, as
/// written in the policy (`name`) and taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub set: Option<SetOperator>,
    pub test: Test,
    pub negated: bool,
    pub if_exists: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOperator {
    ForAnyValue,
    ForAllValues,
}

/// The positive test of an operator: `StringNotLike` is `StringLike`
/// negated; `ArnEquals` and `ArnLike` are one test, as AWS documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Arn,
    Bool,
    Null,
    Numeric(Compare),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// The call being authorized, with its request context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, Vec<String>>,
}

/// Which policy set a statement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySet {
    Identity,
    Boundary,
}

/// Names one statement for a message: policy, set, index and Sid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    pub set: PolicySet,
    pub policy: String,
    pub index: usize,
    pub sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// A `Deny` statement of the identity policies or the boundary matched.
    ExplicitDeny {
        by: StatementRef,
    },
    /// No identity `Allow` matched (the implicit deny).
    NotAllowed,
    /// `allowed_by` allowed it, but no statement of the boundary does.
    OutsideBoundary {
        allowed_by: StatementRef,
    },
}

/// One action pattern of one `Allow` statement (indexes into the policy
/// slice, its statements and their `Action` list; a `NotAction` statement is
/// one grant, with `action` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef {
    pub policy: usize,
    pub statement: usize,
    pub action: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub at: GrantRef,
    pub description: String,
}

impl Test {
    /// Whether this test matches one request value against one policy value.
    fn matches(self, policy: &str, actual: &str, vars: Option<&Context>) -> bool {
        let pattern = |wildcards| compile(policy, wildcards, vars);
        match self {
            Test::StringEquals => pattern(false).is_some_and(|p| glob(&p, actual, false)),
            Test::StringEqualsIgnoreCase => pattern(false).is_some_and(|p| glob(&p, actual, true)),
            Test::StringLike => pattern(true).is_some_and(|p| glob(&p, actual, false)),
            Test::Arn => pattern(true).is_some_and(|p| arn_matches(&p, actual)),
            Test::Bool => policy.eq_ignore_ascii_case(actual),
            Test::Null => false,
            Test::Numeric(compare) => compare.holds(policy, actual),
        }
    }
}

impl Compare {
    fn holds(self, policy: &str, actual: &str) -> bool {
        let (Ok(want), Ok(have)) = (policy.trim().parse::<f64>(), actual.trim().parse::<f64>())
        else {
            return false;
        };
        match self {
            Compare::Equals => have == want,
            Compare::LessThan => have < want,
            Compare::LessThanEquals => have <= want,
            Compare::GreaterThan => have > want,
            Compare::GreaterThanEquals => have >= want,
        }
    }
}

impl Statement {
    /// Whether this statement covers the request: action, resource and
    /// every condition.
    pub fn applies(&self, version: Version, request: &Request) -> bool {
        self.matches_action(&request.action) && self.covers_rest(version, request)
    }

    fn covers_rest(&self, version: Version, request: &Request) -> bool {
        let vars = (version == Version::Current).then_some(&request.context);
        let hit =
            |r: &String| compile(r, true, vars).is_some_and(|p| glob(&p, &request.resource, false));
        let resource = match &self.resources {
            Targets::Only(list) => list.iter().any(hit),
            Targets::AllBut(list) => !list.iter().any(hit),
        };
        let context = &request.context;
        resource && self.conditions.iter().all(|c| c.holds(vars, context))
    }

    fn matches_action(&self, action: &str) -> bool {
        match &self.actions {
            Targets::Only(list) => list.iter().any(|p| action_matches(p, action)),
            Targets::AllBut(list) => !list.iter().any(|p| action_matches(p, action)),
        }
    }

    /// The indexes of this statement's grants, or of those matching `action`.
    fn grant_indexes(&self, action: Option<&str>) -> Vec<usize> {
        match (&self.actions, action) {
            (Targets::Only(list), None) => (0..list.len()).collect(),
            (Targets::Only(list), Some(a)) => (0..list.len())
                .filter(|&i| action_matches(&list[i], a))
                .collect(),
            (Targets::AllBut(_), Some(a)) if !self.matches_action(a) => Vec::new(),
            (Targets::AllBut(_), _) => vec![0],
        }
    }
}

type Context = BTreeMap<String, Vec<String>>;

/// The request's values for a key, looked up case-insensitively.
fn lookup<'a>(context: &'a Context, key: &str) -> Option<&'a [String]> {
    let found = context.iter().find(|(k, _)| k.eq_ignore_ascii_case(key));
    found.map(|(_, v)| v.as_slice())
}

impl Condition {
    fn holds(&self, vars: Option<&Context>, context: &Context) -> bool {
        let present = lookup(context, &self.key).filter(|v| !v.is_empty());
        if self.operator.test == Test::Null {
            let want_absent = |v: &String| v.eq_ignore_ascii_case("true");
            return self
                .values
                .iter()
                .any(|v| want_absent(v) == present.is_none());
        }
        let Some(actual) = present else {
            return self.absent_result();
        };
        let test = |v: &String| self.test_one(v, vars);
        match self.operator.set {
            Some(SetOperator::ForAllValues) => actual.iter().all(test),
            Some(SetOperator::ForAnyValue) => actual.iter().any(test),
            None if self.operator.negated => actual.iter().all(test),
            None => actual.iter().any(test),
        }
    }

    fn absent_result(&self) -> bool {
        match (self.operator.if_exists, self.operator.set) {
            (true, _) | (false, Some(SetOperator::ForAllValues)) => true,
            (false, Some(SetOperator::ForAnyValue)) => false,
            (false, None) => self.operator.negated,
        }
    }

    /// The operator, negation included, applied to one request value.
    fn test_one(&self, actual: &str, vars: Option<&Context>) -> bool {
        let hit = self
            .values
            .iter()
            .any(|v| self.operator.test.matches(v, actual, vars));
        hit != self.operator.negated
    }
}

/// One element of a compiled pattern: `*` and `?` are wildcards only where
/// the policy text had them (never from a substituted variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Star,
    One,
}

/// Compiles policy text; `None` when a variable cannot be resolved.
fn compile(text: &str, wildcards: bool, vars: Option<&Context>) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let (Some(context), Some(inner)) = (vars, variable_at(rest)) {
            out.extend(resolve(inner, context)?.chars().map(Tok::Lit));
            rest = &rest[inner.len() + 3..];
            continue;
        }
        out.push(match c {
            '*' if wildcards => Tok::Star,
            '?' if wildcards => Tok::One,
            c => Tok::Lit(c),
        });
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

/// The text between `${` and `}` when `text` starts with a variable.
fn variable_at(text: &str) -> Option<&str> {
    let body = text.strip_prefix("${")?;
    body.find('}').map(|end| &body[..end])
}

fn resolve(inner: &str, context: &Context) -> Option<String> {
    if matches!(inner, "*" | "?" | "$") {
        return Some(inner.to_owned());
    }
    let (key, default) = match inner.split_once(',') {
        Some((key, default)) => (key.trim(), Some(default.trim().trim_matches('\''))),
        None => (inner.trim(), None),
    };
    match lookup(context, key) {
        Some([single]) => Some(single.clone()),
        _ => default.map(str::to_owned),
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    compile(pattern, true, None).is_some_and(|p| glob(&p, action, true))
}

/// Glob matching with `*` (any run, `/` and `:` included) and `?` (one
/// character); `fold` makes it case-insensitive.
fn glob(pattern: &[Tok], text: &str, fold: bool) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(Tok::Star) => (retry, p) = (Some((p, t)), p + 1),
            Some(Tok::One) => (p, t) = (p + 1, t + 1),
            Some(Tok::Lit(l)) if same_char(*l, c, fold) => (p, t) = (p + 1, t + 1),
            _ => match retry {
                Some((sp, st)) => (retry, p, t) = (Some((sp, st + 1)), sp + 1, st + 1),
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|tok| *tok == Tok::Star)
}

fn same_char(a: char, b: char, fold: bool) -> bool {
    a == b || (fold && a.to_lowercase().eq(b.to_lowercase()))
}

/// `ArnLike`: each colon-separated part of the ARN (six at most, the last
/// one keeping its colons) is matched on its own.
fn arn_matches(pattern: &[Tok], arn: &str) -> bool {
    let mut parts: Vec<&[Tok]> = Vec::new();
    let mut rest = pattern;
    while let Some(colon) = rest
        .iter()
        .position(|t| *t == Tok::Lit(':'))
        .filter(|_| parts.len() < 5)
    {
        parts.push(&rest[..colon]);
        rest = &rest[colon + 1..];
    }
    parts.push(rest);
    let actual: Vec<&str> = arn.splitn(parts.len(), ':').collect();
    actual.len() == parts.len() && parts.iter().zip(actual).all(|(p, a)| glob(p, a, false))
}

impl Request {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Request {
        let (action, resource) = (action.into(), resource.into());
        Request {
            action,
            resource,
            context: BTreeMap::new(),
        }
    }

    /// Adds a condition key and its values to the request context.
    pub fn with<V: Into<String>>(
        mut self,
        key: &str,
        values: impl IntoIterator<Item = V>,
    ) -> Request {
        self.context
            .insert(key.to_owned(), values.into_iter().map(Into::into).collect());
        self
    }
}

/// Decides a request as AWS does for a principal with these identity
/// policies and, when given, this permissions boundary.
pub fn evaluate(identity: &[Policy], boundary: Option<&[Policy]>, request: &Request) -> Decision {
    let find = |set, effect| {
        let policies = if set == PolicySet::Identity {
            Some(identity)
        } else {
            boundary
        };
        policies.and_then(|p| first_matching(p, set, effect, request))
    };
    let deny =
        find(PolicySet::Identity, Effect::Deny).or_else(|| find(PolicySet::Boundary, Effect::Deny));
    if let Some(by) = deny {
        return Decision::ExplicitDeny { by };
    }
    match find(PolicySet::Identity, Effect::Allow) {
        None => Decision::NotAllowed,
        Some(allowed_by)
            if boundary.is_some() && find(PolicySet::Boundary, Effect::Allow).is_none() =>
        {
            Decision::OutsideBoundary { allowed_by }
        }
        Some(_) => Decision::Allowed,
    }
}

fn first_matching(
    policies: &[Policy],
    set: PolicySet,
    effect: Effect,
    request: &Request,
) -> Option<StatementRef> {
    policies.iter().find_map(|policy| {
        let mut statements = policy.statements.iter().enumerate();
        let (index, s) =
            statements.find(|(_, s)| s.effect == effect && s.applies(policy.version, request))?;
        Some(StatementRef {
            set,
            policy: policy.name.clone(),
            index,
            sid: s.sid.clone(),
        })
    })
}

/// The `Allow` statements of these policies, with their indexes.
fn allows(policies: &[Policy]) -> impl Iterator<Item = (usize, usize, &Policy, &Statement)> {
    policies.iter().enumerate().flat_map(|(p, policy)| {
        let statements = policy.statements.iter().enumerate();
        statements
            .filter(|(_, s)| s.effect == Effect::Allow)
            .map(move |(s, st)| (p, s, policy, st))
    })
}

/// Every grant of an `Allow` statement that covers the request: each of its
/// action patterns that matches, or the one grant of a `NotAction`.
pub fn matching_allows(identity: &[Policy], request: &Request) -> Vec<GrantRef> {
    let covering =
        allows(identity).filter(|(_, _, policy, s)| s.covers_rest(policy.version, request));
    let grants = covering.flat_map(|(policy, statement, _, s)| {
        let indexes = s.grant_indexes(Some(&request.action));
        indexes.into_iter().map(move |action| GrantRef {
            policy,
            statement,
            action,
        })
    });
    grants.collect()
}

/// Every grant of the `Allow` statements of these policies, described.
pub fn grants(policies: &[Policy]) -> Vec<Grant> {
    let all = allows(policies).flat_map(|(policy, statement, _, s)| {
        let indexes = s.grant_indexes(None);
        indexes.into_iter().map(move |action| GrantRef {
            policy,
            statement,
            action,
        })
    });
    let described = all.filter_map(|at| {
        at.describe(policies)
            .map(|description| Grant { at, description })
    });
    described.collect()
}

impl GrantRef {
    /// `S3CrudPolicy: s3:PutObjectAcl on arn:aws:s3:::b, arn:aws:s3:::b/*`,
    /// with ` when ...` for its conditions; `None` if it names nothing.
    pub fn describe(&self, policies: &[Policy]) -> Option<String> {
        let policy = policies.get(self.policy)?;
        let statement = policy.statements.get(self.statement)?;
        let action = match &statement.actions {
            Targets::Only(list) => list.get(self.action)?.clone(),
            Targets::AllBut(list) => format!("every action but {}", list.join(", ")),
        };
        let resources = match &statement.resources {
            Targets::Only(list) => list.join(", "),
            Targets::AllBut(list) => format!("everything but {}", list.join(", ")),
        };
        let mut text = format!("{}: {action} on {resources}", policy.name);
        for (i, c) in statement.conditions.iter().enumerate() {
            let joiner = if i == 0 { "when" } else { "and" };
            let values = c.values.join("|");
            text.push_str(&format!(" {joiner} {} {} {values}", c.operator.name, c.key));
        }
        Some(text)
    }
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = match self.set {
            PolicySet::Identity => "identity policy",
            PolicySet::Boundary => "permissions boundary",
        };
        write!(f, "{set} {} Statement[{}]", self.policy, self.index)?;
        match &self.sid {
            Some(sid) => write!(f, " (Sid {sid})"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed => write!(f, "allowed"),
            Decision::ExplicitDeny { by } => write!(f, "explicitly denied by {by}"),
            Decision::NotAllowed => write!(f, "no identity policy statement allows it"),
            Decision::OutsideBoundary { allowed_by } => {
                let boundary = "no statement of the permissions boundary allows it";
                write!(f, "allowed by {allowed_by}, but {boundary}")
            }
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
