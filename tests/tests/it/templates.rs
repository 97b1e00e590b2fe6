//! The IAM in the templates, read as text: what the environment stack role
//! may make, and that an instance role never exceeds its boundary. (The
//! templates are also checked by cfn-lint and `sam validate --lint`.)

use std::collections::BTreeSet;

use slipway_tests::workspace_root;

fn infra(file: &str) -> String {
    std::fs::read_to_string(workspace_root().join("infra").join(file)).unwrap()
}

/// The text of the top-level resource `name`: up to the next line with
/// a two-space indent.
fn resource<'a>(template: &'a str, name: &str) -> &'a str {
    let start = template
        .find(&format!("\n  {name}:\n"))
        .unwrap_or_else(|| panic!("no resource {name}"))
        + 1;
    let body = &template[start..];
    let mut offset = body.find('\n').unwrap_or(body.len());
    while offset < body.len() {
        let line = &body[offset + 1..];
        let is_next = line.starts_with("  ")
            && !line.starts_with("   ")
            && !line.trim_start().starts_with('#');
        if is_next || line.is_empty() || !line.starts_with(' ') && !line.starts_with('\n') {
            break;
        }
        offset += 1 + line.find('\n').unwrap_or(line.len());
    }
    &body[..offset]
}

#[derive(Debug, Default)]
struct Statement {
    effect: String,
    actions: Vec<String>,
    text: String,
}

/// The policy statements in `text`: each begins at `- Sid:` or `- Effect:`.
fn statements(text: &str) -> Vec<Statement> {
    let mut all: Vec<Statement> = Vec::new();
    let action = |s: &str| {
        let s = s.trim();
        (!s.contains(' ') && s.matches(':').count() == 1 && !s.starts_with('!'))
            .then(|| s.to_owned())
    };
    for line in text.lines() {
        let t = line.trim();
        let starts_sid = t.starts_with("- Sid:");
        let starts_effect = t.starts_with("- Effect:");
        let continues_sid = starts_effect
            && all
                .last()
                .is_some_and(|s| s.effect.is_empty() && s.text.trim().starts_with("- Sid:"));
        if starts_sid || (starts_effect && !continues_sid) {
            all.push(Statement::default());
        }
        let Some(current) = all.last_mut() else {
            continue;
        };
        current.text.push_str(t);
        current.text.push('\n');
        if let Some(effect) = t.trim_start_matches("- ").strip_prefix("Effect:") {
            current.effect = effect.trim().to_owned();
        } else if let Some(one) = t.strip_prefix("Action:").and_then(action) {
            current.actions.push(one);
        } else if let Some(item) = t.strip_prefix("- ").and_then(action) {
            current.actions.push(item);
        }
    }
    all
}

fn allowed(text: &str) -> BTreeSet<String> {
    statements(text)
        .into_iter()
        .filter(|s| s.effect == "Allow")
        .flat_map(|s| s.actions)
        .collect()
}

#[test]
fn the_environment_stack_role_makes_instance_roles_only_within_the_boundary() {
    let template = infra("template.yaml");
    let role = resource(&template, "EnvironmentStackRole");
    let all = statements(role);
    assert!(all.len() > 5, "{all:#?}");
    let granting = |action: &str| -> Vec<&Statement> {
        all.iter()
            .filter(|s| s.effect == "Allow" && s.actions.iter().any(|a| a == action))
            .collect()
    };
    for action in [
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:DetachRolePolicy",
    ] {
        let grants = granting(action);
        assert!(!grants.is_empty(), "{action} is not granted at all");
        for s in grants {
            assert!(
                s.text
                    .contains("iam:PermissionsBoundary: !Ref InstanceRoleBoundary"),
                "{action} without the boundary condition:\n{}",
                s.text
            );
        }
    }
    for s in granting("iam:AttachRolePolicy") {
        assert!(
            s.text.contains(
                "iam:PolicyARN: !Sub \"arn:${AWS::Partition}:iam::aws:policy/CloudWatchAgentServerPolicy\""
            ),
            "any managed policy may be attached:\n{}",
            s.text
        );
    }
    for s in granting("iam:PassRole") {
        assert!(
            s.text.contains("iam:PassedToService: ec2.amazonaws.com"),
            "roles may be passed to any service:\n{}",
            s.text
        );
    }
    let denied: BTreeSet<&str> = all
        .iter()
        .filter(|s| s.effect == "Deny")
        .flat_map(|s| s.actions.iter().map(String::as_str))
        .collect();
    assert!(denied.contains("iam:DeleteRolePermissionsBoundary"));
    assert!(denied.contains("iam:PutRolePermissionsBoundary"));
    for s in &all {
        for a in &s.actions {
            let (_, name) = a.split_once(':').unwrap();
            assert!(
                name != "*"
                    && !(name.ends_with('*')
                        && s.effect == "Allow"
                        && !name.starts_with("Describe")),
                "{a} is granted wholesale:\n{}",
                s.text
            );
        }
    }
}

#[test]
fn every_action_an_instance_role_is_given_lies_within_the_boundary() {
    let template = infra("template.yaml");
    let boundary = allowed(resource(&template, "InstanceRoleBoundary"));
    let environment = infra("environment.yaml");
    let role_text = resource(&environment, "InstanceRole");
    let policies = role_text.split("\n      Policies:\n").nth(1).unwrap();
    let role = allowed(policies);

    assert!(role.len() > 20, "{role:?}");
    // The boundary's text ends where the next resource begins.
    assert!(!boundary.contains("iam:CreateRole"), "{boundary:?}");
    assert!(boundary.contains("xray:PutTraceSegments"), "{boundary:?}");
    let outside: Vec<&String> = role.difference(&boundary).collect();
    assert!(
        outside.is_empty(),
        "granted but beyond the boundary: {outside:?}"
    );
    assert!(
        role_text.contains("PermissionsBoundary: !If [HasBoundary, !Ref InstanceRoleBoundary"),
        "the instance role does not carry the boundary"
    );
    let managed: Vec<&str> = role_text
        .split("ManagedPolicyArns:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(str::trim)
        .collect();
    assert_eq!(
        managed,
        ["- !Sub arn:${AWS::Partition}:iam::aws:policy/CloudWatchAgentServerPolicy"],
        "a managed policy the stack role may not attach"
    );
}
