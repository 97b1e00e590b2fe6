//! The IAM check: each recorded call of a known principal evaluated, as
//! AWS evaluates it, against that principal's policies from the templates:
//! a function's role from `infra/template.yaml` (SAM's policy templates
//! expanded, `AWSLambdaBasicExecutionRole` included), an instance's role
//! from `infra/environment.yaml` within the control plane's
//! `InstanceRoleBoundary`. A call no policy allows is named with its
//! principal and the permission it lacks; across many runs (the test
//! suite's), the grants no call used are listed too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::{self, Decision, Policy, Request};
use super::{Call, Principal, Principals, read_calls};
use crate::template::{self, ACCOUNT, REGION};

/// The environment template instances' roles come from.
const ENVIRONMENT: &str = include_str!("../../../../infra/environment.yaml");

/// Where each platform leaves its checked calls for the suite's report
/// (`scripts/test` sets it).
pub const RECORD_DIR_VAR: &str = "SLIPWAY_IAM_RECORD_DIR";

/// A principal's policies: its identity policies and its boundary.
pub struct Policies {
    pub identity: Vec<Policy>,
    pub boundary: Option<Vec<Policy>>,
}

fn parse_all(docs: Vec<(String, Value)>) -> anyhow::Result<Vec<Policy>> {
    docs.into_iter()
        .map(|(name, doc)| Policy::parse(name, &doc).map_err(|e| anyhow::anyhow!("{e}")))
        .collect()
}

/// What the templates give `principal`.
pub fn policies(principal: &Principal) -> anyhow::Result<Policies> {
    policies_in(&crate::stack::read(crate::BUCKET, &[])?, principal)
}

/// What `plane` (and the environment template) give `principal`.
pub fn policies_in(
    plane: &template::ControlPlaneTemplate,
    principal: &Principal,
) -> anyhow::Result<Policies> {
    match principal {
        Principal::Function { logical_id } => {
            let spec = plane
                .function(logical_id)
                .ok_or_else(|| anyhow::anyhow!("infra/template.yaml has no {logical_id}"))?;
            Ok(Policies {
                identity: parse_all(spec.policies.clone())?,
                boundary: None,
            })
        }
        Principal::Instance { app, env, .. } => {
            let boundary = plane.properties("InstanceRoleBoundary")?;
            let boundary_arn = crate::stack::physical(plane, "InstanceRoleBoundary")?;
            let role =
                template::instance_role(ENVIRONMENT, app, env, crate::BUCKET, &boundary_arn)?;
            Ok(Policies {
                identity: parse_all(role)?,
                boundary: Some(parse_all(vec![(
                    "InstanceRoleBoundary".into(),
                    boundary["PolicyDocument"].clone(),
                )])?),
            })
        }
    }
}

/// The request AWS evaluates for one check of `principal`'s call: what
/// the emulator recorded, and the context the principal itself brings.
fn request(principal: &Principal, check: &super::Check) -> Request {
    let mut context = check.context.clone();
    if let Principal::Instance { instance, .. } = principal {
        context.insert(
            "ec2:SourceInstanceARN".into(),
            vec![format!(
                "arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"
            )],
        );
    }
    Request {
        action: check.action.clone(),
        resource: check.resource.clone(),
        context,
    }
}

/// One call a principal made that its policies do not allow.
#[derive(Debug, Clone)]
pub struct Denied {
    pub principal: Principal,
    pub operation: String,
    pub action: String,
    pub resource: String,
    pub why: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} called {} without {} on {} ({})",
            self.principal, self.operation, self.action, self.resource, self.why
        )
    }
}

fn why(decision: &Decision) -> Option<String> {
    match decision {
        Decision::Allowed => None,
        Decision::NotAllowed => Some("no statement allows it".into()),
        Decision::ExplicitDeny { by } => Some(format!(
            "denied by {} statement {}",
            by.policy,
            by.sid.clone().unwrap_or_else(|| by.index.to_string())
        )),
        Decision::OutsideBoundary { allowed_by } => Some(format!(
            "{} allows it, the permissions boundary does not",
            allowed_by.policy
        )),
    }
}

/// A checked call, as the suite's report reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attributed {
    pub principal: Principal,
    pub call: Call,
}

/// The calls of `principals` among `calls`.
pub fn attribute(calls: Vec<Call>, principals: &Principals) -> Vec<Attributed> {
    calls
        .into_iter()
        .filter_map(|call| {
            let principal = principals.get(call.key.as_deref()?)?;
            Some(Attributed { principal, call })
        })
        .collect()
}

/// What a set of calls came to: the refused ones, and per principal kind
/// (a function's role, the instance role) the grants none used.
#[derive(Debug, Default)]
pub struct Report {
    pub calls: usize,
    pub denied: Vec<Denied>,
    pub unused: BTreeMap<String, Vec<String>>,
}

/// The role a principal's grants are counted under: each function's own,
/// one instance role for every environment.
fn role(principal: &Principal) -> String {
    match principal {
        Principal::Function { .. } => principal.to_string(),
        Principal::Instance { .. } => "InstanceRole (infra/environment.yaml)".into(),
    }
}

/// What a principal's policies depend on: a function, or an instance's
/// environment (every instance of it has the same role).
fn policy_key(principal: &Principal) -> anyhow::Result<String> {
    let mut principal = principal.clone();
    if let Principal::Instance { instance, .. } = &mut principal {
        instance.clear();
    }
    Ok(serde_json::to_string(&principal)?)
}

/// Evaluates every call against its principal's policies.
pub fn evaluate(calls: &[Attributed]) -> anyhow::Result<Report> {
    evaluate_in(&crate::stack::read(crate::BUCKET, &[])?, calls)
}

/// Evaluates every call against its principal's policies in `plane`.
pub fn evaluate_in(
    plane: &template::ControlPlaneTemplate,
    calls: &[Attributed],
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut cache: BTreeMap<String, Policies> = BTreeMap::new();
    let mut used: BTreeMap<String, BTreeSet<policy::GrantRef>> = BTreeMap::new();
    // A role's policies, by the role's key in `cache`.
    let mut roles: BTreeMap<String, String> = BTreeMap::new();
    for Attributed { principal, call } in calls {
        let key = policy_key(principal)?;
        if !cache.contains_key(&key) {
            cache.insert(key.clone(), policies_in(plane, principal)?);
        }
        let policies = &cache[&key];
        roles.entry(role(principal)).or_insert_with(|| key.clone());
        report.calls += 1;
        for check in &call.checks {
            let request = request(principal, check);
            let decision =
                policy::evaluate(&policies.identity, policies.boundary.as_deref(), &request);
            match why(&decision) {
                Some(why) => report.denied.push(Denied {
                    principal: principal.clone(),
                    operation: call.operation.clone(),
                    action: check.action.clone(),
                    resource: check.resource.clone(),
                    why,
                }),
                None => used
                    .entry(role(principal))
                    .or_default()
                    .extend(policy::matching_allows(&policies.identity, &request)),
            }
        }
    }
    for (role, key) in roles {
        let policies = &cache[&key];
        let used = used.remove(&role).unwrap_or_default();
        let unused: Vec<String> = policy::grants(&policies.identity)
            .into_iter()
            .filter(|g| !used.contains(&g.at))
            .map(|g| g.description)
            .collect();
        report.unused.insert(role, unused);
    }
    Ok(report)
}

/// The platform's check when it stops: its recorded calls (every `*.jsonl`
/// in `dir`) of `principals`, left for the suite's report when
/// [`RECORD_DIR_VAR`] is set; an error naming every call refused.
pub fn check_dir(dir: &Path, principals: &Principals) -> anyhow::Result<()> {
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            calls.extend(read_calls(&path)?);
        }
    }
    let attributed = attribute(calls, principals);
    if let Some(out) = std::env::var_os(RECORD_DIR_VAR) {
        let out = Path::new(&out);
        std::fs::create_dir_all(out)?;
        let mut text = String::new();
        for a in &attributed {
            text.push_str(&serde_json::to_string(a)?);
            text.push('\n');
        }
        std::fs::write(
            out.join(format!("{}.jsonl", uuid::Uuid::new_v4().simple())),
            text,
        )?;
    }
    let report = evaluate(&attributed)?;
    refused(&report)
}

/// An error listing every refused call of `report`, if any.
pub fn refused(report: &Report) -> anyhow::Result<()> {
    if report.denied.is_empty() {
        return Ok(());
    }
    let mut unique: Vec<String> = report.denied.iter().map(Denied::to_string).collect();
    unique.sort();
    unique.dedup();
    anyhow::bail!(
        "IAM: {} call(s) the templates do not allow:\n  {}",
        report.denied.len(),
        unique.join("\n  ")
    )
}

/// The suite's report over every platform's calls left in `dir`.
pub fn report_dir(dir: &Path) -> anyhow::Result<Report> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path)?
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                all.push(serde_json::from_str::<Attributed>(line)?);
            }
        }
    }
    evaluate(&all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::Check;
    use crate::template::{ControlPlaneTemplate, StackValues};

    fn plane(yaml: &str) -> ControlPlaneTemplate {
        ControlPlaneTemplate::read(
            yaml,
            &StackValues {
                stack: crate::stack::STACK.into(),
                bucket: crate::BUCKET.into(),
                api_id: "local".into(),
                parameters: Default::default(),
            },
        )
        .unwrap()
    }

    fn call(
        principal: Principal,
        operation: &str,
        action: &str,
        resource: &str,
        context: &[(&str, &str)],
    ) -> Attributed {
        Attributed {
            principal,
            call: Call {
                key: Some("ASIAEXAMPLE".into()),
                service: action.split(':').next().unwrap().into(),
                operation: operation.into(),
                status: Some(200),
                checks: vec![Check {
                    action: action.into(),
                    resource: resource.into(),
                    context: context
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                        .collect(),
                }],
            },
        }
    }

    fn deploy_fn() -> Principal {
        Principal::Function {
            logical_id: "DeployFunction".into(),
        }
    }

    fn send_command() -> Vec<Attributed> {
        vec![
            call(
                deploy_fn(),
                "SendCommand",
                "ssm:SendCommand",
                "arn:aws:ssm:us-east-1:123456789012:document/Slipway-Deploy",
                &[],
            ),
            call(
                deploy_fn(),
                "SendCommand",
                "ssm:SendCommand",
                "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
                &[("ssm:resourceTag/slipway:app", "hello")],
            ),
        ]
    }

    #[test]
    fn a_call_the_template_allows_passes_and_its_grant_counts_as_used() {
        let template = plane(crate::stack::TEMPLATE);
        let report = evaluate_in(&template, &send_command()).unwrap();
        assert!(report.denied.is_empty(), "{:?}", report.denied);
        let unused = &report.unused["DeployFunctionRole"];
        assert!(
            !unused.iter().any(|g| g.contains("ssm:SendCommand")),
            "{unused:?}"
        );
        assert!(
            unused
                .iter()
                .any(|g| g.contains("autoscaling:EnterStandby")),
            "{unused:?}"
        );
    }

    #[test]
    fn removing_the_permission_a_call_needs_fails_the_check_naming_principal_call_and_permission() {
        let grant = "            - Sid: OnSlipwayInstancesOnly\n              Effect: Allow\n              Action: ssm:SendCommand\n";
        let without = crate::stack::TEMPLATE.replacen(
            grant,
            &grant.replace("ssm:SendCommand", "ssm:DescribeDocument"),
            1,
        );
        assert_ne!(without, crate::stack::TEMPLATE);
        let report = evaluate_in(&plane(&without), &send_command()).unwrap();
        let err = refused(&report).unwrap_err().to_string();
        assert!(err.contains("DeployFunctionRole"), "{err}");
        assert!(err.contains("SendCommand without ssm:SendCommand"), "{err}");
        assert!(err.contains("instance/i-0123456789abcdef0"), "{err}");
    }

    #[test]
    fn an_untagged_instance_is_beyond_the_deploy_function() {
        let template = plane(crate::stack::TEMPLATE);
        let untagged = call(
            deploy_fn(),
            "SendCommand",
            "ssm:SendCommand",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
            &[],
        );
        assert_eq!(evaluate_in(&template, &[untagged]).unwrap().denied.len(), 1);
    }

    #[test]
    fn an_instance_may_tag_itself_only_and_read_only_its_own_environment() {
        let template = plane(crate::stack::TEMPLATE);
        let me = Principal::Instance {
            app: "hello".into(),
            env: "prod".into(),
            instance: "i-0aaaaaaaaaaaaaaaa".into(),
        };
        let tag = |id: &str| {
            let arn = format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}");
            call(
                me.clone(),
                "CreateTags",
                "ec2:CreateTags",
                &arn,
                &[
                    ("aws:ARN", arn.as_str()),
                    ("aws:TagKeys", "slipway:release"),
                ],
            )
        };
        let read = |key: &str| {
            call(
                me.clone(),
                "GetObject",
                "s3:GetObject",
                &format!("arn:aws:s3:::slipway-dev/{key}"),
                &[],
            )
        };
        let report = evaluate_in(
            &template,
            &[
                tag("i-0aaaaaaaaaaaaaaaa"),
                read("hello/prod/releases/r1/release.json"),
            ],
        )
        .unwrap();
        assert!(report.denied.is_empty(), "{:?}", report.denied);
        let report = evaluate_in(
            &template,
            &[tag("i-0bbbbbbbbbbbbbbbb"), read("other/prod/env")],
        )
        .unwrap();
        assert_eq!(report.denied.len(), 2, "{:?}", report.denied);
    }
}
