//! The AWS adapters of the control plane's ports, each owning its
//! service's client: the fleet (Auto Scaling, EC2, ELBv2, SSM, CloudFormation),
//! the command runner (SSM Run Command), the job launcher (Lambda). And the
//! clients themselves, built once per process from `aws-config`.
//!
//! Tests and the local platform point every client at the emulator with the
//! SDK's standard `AWS_ENDPOINT_URL`; when an endpoint is overridden, S3 uses
//! path-style addressing because the emulator has no per-bucket hostnames.

pub mod fleet;
mod group;
pub mod lambda;
pub mod maintenance;
pub mod sqs;
pub mod ssm;

use aws_config::SdkConfig;
use slipway_core::on_first_use::OnFirstUse;

pub async fn load_config() -> SdkConfig {
    slipway_core::objects::load_aws_config().await
}

pub fn ssm_client(config: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(config)
}

pub fn ec2_client(config: &SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(config)
}

pub fn autoscaling_client(config: &SdkConfig) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::new(config)
}

pub fn elb_client(config: &SdkConfig) -> aws_sdk_elasticloadbalancingv2::Client {
    aws_sdk_elasticloadbalancingv2::Client::new(config)
}

pub fn lambda_client(config: &SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(config)
}

pub fn cloudformation_client(config: &SdkConfig) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(config)
}

/// Why a secret could not be had. Names the parameter, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading the parameter {name}: {detail}")]
    Read { name: String, detail: String },
    #[error("the parameter {0} is empty")]
    Empty(String),
    #[error("no secret configured")]
    Unset,
}

/// A secret: the SecureString parameter `param` (decrypted, read on first
/// use and kept, so a cold start waits on no AWS call), else `inline`
/// (local runs). Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret {
    parameter: Option<(OnFirstUse<aws_sdk_ssm::Client>, String)>,
    value: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("parameter", &self.parameter.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// The parameter `param`, else `inline`; neither is an error now.
    pub fn new(
        ssm: &OnFirstUse<aws_sdk_ssm::Client>,
        param: Option<&str>,
        inline: Option<&str>,
    ) -> Result<Self, SecretError> {
        match (
            param.filter(|p| !p.is_empty()),
            inline.filter(|v| !v.is_empty()),
        ) {
            (Some(name), _) => Ok(Self {
                parameter: Some((ssm.clone(), name.to_owned())),
                value: Default::default(),
            }),
            (None, Some(value)) => Ok(Self::fixed(value)),
            (None, None) => Err(SecretError::Unset),
        }
    }

    /// A secret known already (tests, local runs).
    pub fn fixed(value: &str) -> Self {
        Self {
            parameter: None,
            value: std::sync::Arc::new(tokio::sync::OnceCell::new_with(Some(value.to_owned()))),
        }
    }

    /// The value: read once; a failed read is tried again next time.
    pub async fn get(&self) -> Result<&str, SecretError> {
        self.value
            .get_or_try_init(|| async {
                let (ssm, name) = self
                    .parameter
                    .as_ref()
                    .expect("a secret without a parameter has its value");
                secure_parameter(ssm, name).await
            })
            .await
            .map(String::as_str)
    }
}

/// The value of the SecureString parameter `name`, decrypted; an empty or
/// missing value is [`SecretError::Empty`].
pub async fn secure_parameter(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<String, SecretError> {
    ssm.get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| SecretError::Read {
            name: name.to_owned(),
            detail: aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
        })?
        .parameter
        .and_then(|p| p.value)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SecretError::Empty(name.to_owned()))
}
