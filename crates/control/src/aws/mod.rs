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
pub mod sqs;
pub mod ssm;

use aws_config::SdkConfig;

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

/// A secret: the SecureString parameter `param` (decrypted), else `inline`
/// (local runs).
pub async fn secret(
    ssm: &aws_sdk_ssm::Client,
    param: Option<&str>,
    inline: Option<&str>,
) -> Result<String, SecretError> {
    match (
        param.filter(|p| !p.is_empty()),
        inline.filter(|v| !v.is_empty()),
    ) {
        (Some(name), _) => ssm
            .get_parameter()
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
            .ok_or_else(|| SecretError::Empty(name.to_owned())),
        (None, Some(value)) => Ok(value.to_owned()),
        (None, None) => Err(SecretError::Unset),
    }
}
