//! What the formation shows of an environment: its group's sizes, its
//! load balancers, and each instance with its lifecycle, health and
//! release. The AWS adapter and the local platform both answer with these;
//! the API sends them and `ship` reads them back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use slipway_core::names::InstanceId;

/// One instance as the formation view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: InstanceId,
    pub availability_zone: String,
    /// The group's lifecycle state: InService, Standby, Pending, Terminating…
    pub lifecycle: String,
    /// The group's health check: Healthy or Unhealthy.
    pub health: String,
    pub instance_type: Option<String>,
    pub private_ip: Option<String>,
    pub launched_at: Option<DateTime<Utc>>,
    /// The `slipway:release` tag the agent sets.
    pub release: Option<String>,
    /// Target group health (`healthy`, `unhealthy`, `draining`…), per group.
    pub target_health: BTreeMap<String, String>,
    /// SSM agent ping status (Online, ConnectionLost…), when known.
    pub ssm_ping: Option<String>,
    /// Opens a Session Manager shell in the AWS console.
    pub session_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub name: String,
    pub dns_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formation {
    pub group: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub availability_zones: Vec<String>,
    pub launch_template: Option<String>,
    pub load_balancers: Vec<LoadBalancer>,
    pub instances: Vec<InstanceView>,
    /// Maintenance mode, when its page is up on the load balancer.
    #[serde(default)]
    pub maintenance: Option<slipway_core::maintenance::Maintenance>,
}

/// The console link that opens a Session Manager session on an instance.
pub fn session_url(region: &str, id: &InstanceId) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/systems-manager/session-manager/{id}?region={region}"
    )
}
