//! Telling EC2 what this instance runs: the `slipway:release` tag (and
//! `slipway:fallback` after a boot that fell back), so the formation view
//! reads each instance's release from one `DescribeInstances`.
//!
//! The instance id comes from `--instance-id` / `SLIPWAY_INSTANCE_ID`
//! (the local platform), or from IMDSv2 when the machine is an EC2
//! instance. Off EC2 without an id there is nothing to tag. Tagging is
//! reported, never fatal: the release already serves.

use std::time::Duration;

use aws_config::SdkConfig;

pub const RELEASE_TAG: &str = "slipway:release";
pub const FALLBACK_TAG: &str = "slipway:fallback";
/// Every tag the agent sets on its instance, and every one it removes: the
/// instance role grants exactly these (`infra/environment.yaml`).
pub const TAGS_SET: [&str; 2] = [RELEASE_TAG, FALLBACK_TAG];
pub const TAGS_REMOVED: [&str; 1] = [FALLBACK_TAG];

/// Does the hardware say this is EC2? (Nitro exposes the instance id as
/// the board asset tag; Xen instances have an `ec2…` hypervisor uuid.)
fn on_ec2() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    read("/sys/devices/virtual/dmi/id/board_asset_tag")
        .trim()
        .starts_with("i-")
        || read("/sys/hypervisor/uuid").trim().starts_with("ec2")
}

/// This instance's id, if it has one.
pub async fn instance_id(given: Option<&str>) -> Result<Option<String>, String> {
    if let Some(id) = given {
        return Ok(Some(id.to_owned()));
    }
    if !on_ec2() {
        return Ok(None);
    }
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .build();
    let id = imds
        .get("/latest/meta-data/instance-id")
        .await
        .map_err(|e| format!("IMDSv2 did not give the instance id: {e}"))?;
    Ok(Some(id.as_ref().to_owned()))
}

/// Sets `set` and removes `remove` on the instance.
pub async fn tag(
    config: &SdkConfig,
    instance_id: &str,
    set: &[(&str, String)],
    remove: &[&str],
) -> Result<(), String> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let describe = |e: &dyn std::fmt::Display| e.to_string();
    let mut req = ec2.create_tags().resources(instance_id);
    for (k, v) in set {
        req = req.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(v).build());
    }
    req.send()
        .await
        .map_err(|e| describe(&aws_sdk_ec2::error::DisplayErrorContext(e)))?;
    if !remove.is_empty() {
        let mut req = ec2.delete_tags().resources(instance_id);
        for k in remove {
            req = req.tags(aws_sdk_ec2::types::Tag::builder().key(*k).build());
        }
        req.send()
            .await
            .map_err(|e| describe(&aws_sdk_ec2::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../infra/environment.yaml");

    /// The `aws:TagKeys` the instance role allows for `action`.
    fn allowed_keys(action: &str) -> Vec<String> {
        let start = TEMPLATE
            .find(&format!("Action: {action}\n"))
            .unwrap_or_else(|| panic!("the instance role grants {action}"));
        let statement = &TEMPLATE[start..];
        let statement = &statement[..statement[1..]
            .find("- Effect")
            .map_or(statement.len(), |i| i + 1)];
        let list = statement
            .lines()
            .find_map(|l| l.trim().strip_prefix("aws:TagKeys:"))
            .unwrap_or_else(|| panic!("{action} is limited to tag keys"));
        let mut keys: Vec<String> = list
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|k| k.trim().to_owned())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_instance_role_grants_exactly_the_tags_the_agent_sets_and_removes() {
        let sorted = |keys: &[&str]| {
            let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(allowed_keys("ec2:CreateTags"), sorted(&TAGS_SET));
        assert_eq!(allowed_keys("ec2:DeleteTags"), sorted(&TAGS_REMOVED));
    }

    #[test]
    fn instances_write_only_the_output_prefix_never_records() {
        let env = slipway_core::names::EnvRef::parse("appx", "envx").unwrap();
        let id = slipway_core::ids::DeployId::parse("d1").unwrap();
        let prefix = slipway_core::keys::deploy_output_prefix(&env, &id)
            .replace("appx", "${App}")
            .replace("envx", "${Env}")
            .replace("d1/", "*");
        let puts: Vec<&str> = TEMPLATE
            .split("Action: s3:PutObject")
            .skip(1)
            .map(|rest| rest.lines().nth(1).unwrap_or_default().trim())
            .collect();
        assert_eq!(
            puts,
            [format!(
                "Resource: !Sub arn:${{AWS::Partition}}:s3:::${{ReleaseBucket}}/{prefix}"
            )]
        );
        assert!(!prefix.contains("deploys/"), "{prefix}");
    }
}
