//! The local fleet: every instance the emulated Auto Scaling groups report
//! becomes a directory with a real `slipway-agent` (direct supervisor) and
//! real app processes on a port of its own. A new instance runs
//! `slipway-agent boot`, as user data does on EC2, and is registered as the
//! emulator's managed node (Run Command runs the agent there, the load
//! balancer probes its port); a terminated one is stopped, unregistered and
//! removed. Everything else is the AWS adapter talking to the emulator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_control::aws::fleet::AwsFleet;
use slipway_control::fleet::InstanceId;
use slipway_core::names::EnvRef;
use tokio::process::Command;

use crate::hosts::{
    AGENT_PATH, Hosts, JOURNAL_PROGRAM, LocalHost, install_journal_shim, journal_shim,
};

/// One local instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInstance {
    pub env: EnvRef,
    pub port: u16,
    pub dir: PathBuf,
}

/// How to run the agent for a local instance.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    pub binary: PathBuf,
    pub endpoint: String,
    pub bucket: String,
    /// Where each instance gets its instance role's credentials (as IMDS
    /// gives them on EC2), so the IAM check knows its calls.
    pub principals: crate::iam::Principals,
}

impl AgentSetup {
    /// The instance as a managed node of the emulator: where SSM Run
    /// Command runs the document, with the agent's settings as user data
    /// would write them, and the port the load balancer probes.
    pub fn host(&self, id: &InstanceId, instance: &LocalInstance) -> LocalHost {
        let mut env: BTreeMap<String, String> = super::emulator::aws_env(&self.endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        for (name, value) in [
            ("SLIPWAY_ROOT", instance.dir.display().to_string()),
            ("SLIPWAY_SUPERVISOR", "direct".into()),
            ("SLIPWAY_INSTANCE_ID", id.to_string()),
            ("SLIPWAY_PORT", instance.port.to_string()),
            (
                "SLIPWAY_AGENT_CONFIG",
                instance.dir.join("agent.env").display().to_string(),
            ),
            ("SLIPWAY_BUCKET", self.bucket.clone()),
            ("SLIPWAY_APP", instance.env.app.to_string()),
            ("SLIPWAY_ENV", instance.env.env.to_string()),
        ] {
            env.insert(name.into(), value);
        }
        let role = self
            .principals
            .credentials(crate::iam::Principal::Instance {
                app: instance.env.app.to_string(),
                env: instance.env.env.to_string(),
                instance: id.to_string(),
            });
        for (name, value) in role.env() {
            env.insert(name.into(), value);
        }
        for inherited in ["PATH", "HOME", "LANG"] {
            if let Ok(value) = std::env::var(inherited) {
                env.insert(inherited.into(), value);
            }
        }
        LocalHost {
            dir: instance.dir.clone(),
            env,
            programs: BTreeMap::from([
                (AGENT_PATH.to_owned(), self.binary.clone()),
                (JOURNAL_PROGRAM.to_owned(), journal_shim(&instance.dir)),
            ]),
            port: Some(instance.port),
        }
    }

    /// The agent run on the instance by its host (boot, stop).
    pub fn command(&self, id: &InstanceId, instance: &LocalInstance) -> Command {
        let host = self.host(id, instance);
        let mut cmd = Command::new(&self.binary);
        cmd.envs(&host.env).stdin(Stdio::null());
        cmd
    }
}

/// The local instances, beside the AWS fleet adapter (on the emulator's
/// administrator) the reconciler, sampler and shipper follow the groups with.
#[derive(Clone)]
pub struct LocalFleet {
    pub aws: AwsFleet,
    pub instances: Arc<Mutex<BTreeMap<InstanceId, LocalInstance>>>,
}

impl LocalFleet {
    pub fn new(aws: AwsFleet) -> Self {
        Self {
            aws,
            instances: Arc::default(),
        }
    }

    pub fn instance(&self, id: &InstanceId) -> Option<LocalInstance> {
        self.instances.lock().ok()?.get(id).cloned()
    }

    /// Every local instance now, for work that must not hold the lock.
    pub fn snapshot(&self) -> Vec<(InstanceId, LocalInstance)> {
        self.instances
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// Ports handed to local instances by this process and not yet retired.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The kernel's range for ephemeral ports (Linux's default when unreadable).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Ports an instance's app may be given: outside the ephemeral range, so no
/// outbound connection (to the emulator, the load balancer's health checks)
/// takes one between boot and the app's bind, which is seconds to minutes
/// later, with every deploy binding it again. Binding port 0 picked from
/// exactly that range, and a busy test run lost an app to EADDRINUSE.
fn instance_ports((low, high): (u16, u16)) -> std::ops::RangeInclusive<u16> {
    if low > 12_000 {
        10_000..=low - 1
    } else {
        high.saturating_add(1).max(10_000)..=u16::MAX
    }
}

/// A loopback port no one listens on, outside the ephemeral range, not
/// handed to another instance of this process; starts at a random place so
/// two platforms on one machine seldom probe the same ports.
fn free_port() -> std::io::Result<u16> {
    let ports = instance_ports(ephemeral_range());
    let (start, len) = (*ports.start() as u32, ports.len() as u32);
    let offset = (uuid::Uuid::new_v4().as_u128() % len as u128) as u32;
    let mut handed = HANDED_OUT.lock().map_err(|_| std::io::ErrorKind::Other)?;
    for i in 0..len {
        let port = (start + (offset + i) % len) as u16;
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::ErrorKind::AddrInUse.into())
}

/// Gives a retired instance's port back.
fn release_port(port: u16) {
    if let Ok(mut handed) = HANDED_OUT.lock() {
        handed.remove(&port);
    }
}

/// How long a retired instance's agent has to stop its processes.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// Keeps the local instances in step with the emulated groups.
pub struct Reconciler {
    pub fleet: LocalFleet,
    pub agent: AgentSetup,
    pub root: PathBuf,
    /// Where booted instances register as the emulator's managed nodes.
    pub hosts: Hosts,
}

impl Reconciler {
    /// Every instance of every Slipway group, by environment.
    async fn wanted(&self) -> Result<BTreeMap<InstanceId, EnvRef>, String> {
        let mut wanted = BTreeMap::new();
        let mut pages = self
            .fleet
            .aws
            .autoscaling
            .describe_auto_scaling_groups()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws_sdk_autoscaling::error::DisplayErrorContext(e).to_string())?;
            for group in page.auto_scaling_groups() {
                let (Some(app), Some(env)) = slipway_control::aws::fleet::environment_tags(group)
                else {
                    continue;
                };
                let Ok(env) = EnvRef::parse(app, env) else {
                    continue;
                };
                for i in group.instances() {
                    if let Some(id) = i.instance_id().and_then(|i| InstanceId::parse(i).ok()) {
                        wanted.insert(id, env.clone());
                    }
                }
            }
        }
        Ok(wanted)
    }

    /// One pass: boot the new, retire the gone.
    pub async fn step(&self) -> Result<(), String> {
        let wanted = self.wanted().await?;
        let known: BTreeSet<InstanceId> = self
            .fleet
            .instances
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (id, env) in &wanted {
            if known.contains(id) {
                continue;
            }
            let instance = LocalInstance {
                env: env.clone(),
                port: free_port().map_err(|e| e.to_string())?,
                dir: self.root.join(id.as_str()),
            };
            std::fs::create_dir_all(&instance.dir).map_err(|e| e.to_string())?;
            install_journal_shim(&instance.dir).map_err(|e| e.to_string())?;
            if let Ok(mut map) = self.fleet.instances.lock() {
                map.insert(id.clone(), instance.clone());
            }
            tracing::info!(instance = %id, env = %env, port = instance.port, "local instance boots");
            self.hosts
                .register(id, &self.agent.host(id, &instance))
                .map_err(|e| format!("registering {id} with the emulator: {e}"))?;
            self.boot(id, &instance)?;
        }
        for id in known.difference(&wanted.keys().cloned().collect()) {
            let gone = self
                .fleet
                .instances
                .lock()
                .ok()
                .and_then(|mut m| m.remove(id));
            if let Some(instance) = gone {
                tracing::info!(instance = %id, "local instance retires");
                self.retire(id, &instance).await;
            }
        }
        Ok(())
    }

    /// `slipway-agent boot` in the background, its output in `boot.log`.
    fn boot(&self, id: &InstanceId, instance: &LocalInstance) -> Result<(), String> {
        let log =
            std::fs::File::create(instance.dir.join("boot.log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = self
            .agent
            .command(id, instance)
            .arg("boot")
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.agent.binary.display()))?;
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }

    async fn retire(&self, id: &InstanceId, instance: &LocalInstance) {
        if let Err(e) = self.hosts.unregister(id) {
            tracing::warn!(instance = %id, error = %e, "could not unregister from the emulator");
        }
        let stopping = self
            .agent
            .command(id, instance)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        // Bounded, so a stuck agent cannot hold `ship dev`'s exit or a test's
        // end: its processes' grace is seconds, not this.
        let stopped = tokio::time::timeout(STOP_LIMIT, stopping).await;
        if !stopped.is_ok_and(|s| s.is_ok_and(|s| s.success())) {
            tracing::warn!(instance = %id, "the agent could not stop its processes");
        }
        let _ = std::fs::remove_dir_all(&instance.dir);
        release_port(instance.port);
    }

    /// Follows the groups every `every` until the task is aborted.
    pub async fn run(&self, every: Duration) {
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "the local fleet could not follow the groups");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Stops every local instance's processes and removes them.
    pub async fn retire_all(&self) {
        let all: Vec<(InstanceId, LocalInstance)> = self
            .fleet
            .instances
            .lock()
            .map(|mut m| std::mem::take(&mut *m).into_iter().collect())
            .unwrap_or_default();
        futures::future::join_all(all.iter().map(|(id, i)| self.retire(id, i))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ports_lie_outside_the_ephemeral_range_on_either_side() {
        let below = instance_ports((32768, 60999));
        assert_eq!((*below.start(), *below.end()), (10_000, 32767));
        let above = instance_ports((1024, 40000));
        assert_eq!((*above.start(), *above.end()), (40001, u16::MAX));
    }

    #[test]
    fn a_port_is_not_handed_to_two_instances_until_it_is_released() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
        let range = instance_ports(ephemeral_range());
        assert!(ports.iter().all(|p| range.contains(p)));
        for p in ports {
            release_port(p);
        }
    }
}
