//! `ssm:/path/to/param` config values, resolved through SSM Parameter Store
//! when a release is installed, so a secret lives in one place and never in
//! the release store. Values are fetched decrypted, ten names per
//! `GetParameters` call (the API's limit); a missing parameter fails the
//! deploy by its name, and no value ever reaches an error or a log line.

use std::collections::{BTreeMap, BTreeSet};

/// The prefix that marks a config value as a reference.
pub const PREFIX: &str = "ssm:";

/// `GetParameters` takes at most this many names.
const BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("config var {key}: {why}")]
    BadReference { key: String, why: &'static str },
    #[error("SSM parameters not found: {}", .names.join(", "))]
    Missing { names: Vec<String> },
    #[error("could not read SSM parameters ({})", .names.join(", "))]
    Aws {
        names: Vec<String>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The parameter names a config refers to, checked.
pub fn references(vars: &BTreeMap<String, String>) -> Result<BTreeSet<String>, SecretError> {
    let mut names = BTreeSet::new();
    for (key, value) in vars {
        let Some(name) = value.strip_prefix(PREFIX) else {
            continue;
        };
        let bad = |why| SecretError::BadReference {
            key: key.clone(),
            why,
        };
        if name.is_empty() || name.len() > 2048 {
            return Err(bad("an ssm: reference needs a parameter name"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-:".contains(&b))
        {
            return Err(bad(
                "an ssm: parameter name has only letters, digits and / _ . - :",
            ));
        }
        names.insert(name.to_owned());
    }
    Ok(names)
}

/// Parameter Store, as far as the agent uses it.
pub struct ParameterStore {
    client: aws_sdk_ssm::Client,
}

impl ParameterStore {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        Self { client }
    }

    /// The decrypted values of `names`; every one must exist.
    pub async fn get_all(
        &self,
        names: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        let names: Vec<&String> = names.iter().collect();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for batch in names.chunks(BATCH) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(batch.iter().map(|n| (*n).clone()).collect()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| SecretError::Aws {
                    names: batch.iter().map(|n| (*n).clone()).collect(),
                    source: aws_sdk_ssm::error::DisplayErrorContext(e)
                        .to_string()
                        .into(),
                })?;
            missing.extend(out.invalid_parameters().iter().cloned());
            for p in out.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    found.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        // A name the service neither returned nor called invalid is missing too.
        for name in names {
            if !found.contains_key(name.as_str()) && !missing.contains(name) {
                missing.push(name.clone());
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(SecretError::Missing { names: missing });
        }
        Ok(found)
    }
}

/// `vars` with every `ssm:` reference replaced by its value.
pub fn substitute(
    vars: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| {
            let resolved = v
                .strip_prefix(PREFIX)
                .and_then(|name| values.get(name))
                .unwrap_or(v);
            (k.clone(), resolved.clone())
        })
        .collect()
}

#[cfg(test)]
mod instance_role {
    const TEMPLATE: &str = include_str!("../../infra/environment.yaml");

    /// The instance role's statements, as text.
    fn statements() -> Vec<&'static str> {
        let role = &TEMPLATE[TEMPLATE.find("  InstanceRole:").unwrap()..];
        let role = &role[..role.find("  InstanceProfile:").unwrap()];
        role.split("- Effect: ").skip(1).collect()
    }

    #[test]
    fn instances_read_no_parameter_outside_their_environments_path() {
        let role = &TEMPLATE[TEMPLATE.find("  InstanceRole:").unwrap()..];
        let role = &role[..role.find("  InstanceProfile:").unwrap()];
        assert!(
            !role.lines().any(|l| l.trim_start().starts_with("- !Sub")
                && l.contains("AmazonSSMManagedInstanceCore")),
            "the managed policy reads every parameter"
        );
        let env = slipway_core::names::EnvRef::parse("appx", "envx").unwrap();
        let path = slipway_core::config::secret_path(&env)
            .replace("appx", "${App}")
            .replace("envx", "${Env}");
        let mut reads = 0;
        for statement in statements().into_iter().filter(|s| s.starts_with("Allow")) {
            let grants_reads = statement
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.contains("ssm:GetParameter"));
            if grants_reads {
                reads += 1;
                let resource = statement
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Resource: "))
                    .unwrap_or_default();
                assert!(
                    resource.ends_with(&format!("parameter{path}*")),
                    "parameter reads outside {path}: {statement}"
                );
            }
        }
        assert_eq!(reads, 1, "the agent reads its environment's parameters");
        assert!(
            statements()
                .iter()
                .any(|s| s.starts_with("Deny") && s.contains("parameter/slipway/users")),
            "the control plane's users are denied outright"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::operation::get_parameters::{GetParametersError, GetParametersOutput};
    use aws_sdk_ssm::types::Parameter;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn references_are_collected_once_and_bad_ones_named_by_key() {
        let v = vars(&[("A", "ssm:/app/db"), ("B", "plain"), ("C", "ssm:/app/db")]);
        assert_eq!(references(&v).unwrap().len(), 1);
        let err = references(&vars(&[("SECRET", "ssm:")])).unwrap_err();
        assert!(err.to_string().contains("SECRET"));
        let err = references(&vars(&[("SECRET", "ssm:/a b")])).unwrap_err();
        assert!(err.to_string().contains("SECRET"));
    }

    #[tokio::test]
    async fn names_go_ten_per_call_and_missing_ones_are_named_without_values() {
        let names: BTreeSet<String> = (0..12).map(|i| format!("/p/{i:02}")).collect();
        let first = mock!(aws_sdk_ssm::Client::get_parameters)
            .match_requests(|r| r.names().len() == 10 && r.with_decryption() == Some(true))
            .then_output(|| {
                GetParametersOutput::builder()
                    .set_parameters(Some(
                        (0..10)
                            .map(|i| {
                                Parameter::builder()
                                    .name(format!("/p/{i:02}"))
                                    .value(format!("secret-{i}"))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            });
        let second = mock!(aws_sdk_ssm::Client::get_parameters)
            .match_requests(|r| r.names().len() == 2)
            .then_output(|| {
                GetParametersOutput::builder()
                    .parameters(
                        Parameter::builder()
                            .name("/p/10")
                            .value("secret-10")
                            .build(),
                    )
                    .invalid_parameters("/p/11")
                    .build()
            });
        let client = mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&first, &second]);

        let err = ParameterStore::new(client)
            .get_all(&names)
            .await
            .unwrap_err();

        let text = err.to_string();
        assert_eq!(text, "SSM parameters not found: /p/11");
        assert!(!text.contains("secret-"));
        assert_eq!(first.num_calls() + second.num_calls(), 2);
    }

    #[tokio::test]
    async fn a_service_error_names_the_parameters_not_their_values() {
        let rule = mock!(aws_sdk_ssm::Client::get_parameters).then_error(|| {
            GetParametersError::InternalServerError(
                aws_sdk_ssm::types::error::InternalServerError::builder()
                    .message("boom")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_ssm, [&rule]);
        let names = BTreeSet::from(["/p/db".to_owned()]);
        let err = ParameterStore::new(client)
            .get_all(&names)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/p/db"), "{err}");
    }

    #[test]
    fn references_are_replaced_and_other_values_kept() {
        let v = vars(&[("DB", "ssm:/p/db"), ("MODE", "fast")]);
        let values = BTreeMap::from([("/p/db".to_owned(), "postgres://x".to_owned())]);
        let got = substitute(&v, &values);
        assert_eq!(got["DB"], "postgres://x");
        assert_eq!(got["MODE"], "fast");
    }
}
