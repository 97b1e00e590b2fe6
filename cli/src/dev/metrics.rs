//! What the CloudWatch agent's system metrics are on an instance, for the
//! local fleet: every few seconds each instance's app processes (from the
//! agent's pidfiles, `<app>/run/<type>.<n>.pid`) are sampled from `/proc`
//! (CPU time since the last sample, resident memory) and published to the
//! emulator's CloudWatch under the same namespace, names and dimensions
//! the formation reads, so the sparklines work locally as in AWS.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_cloudwatch::primitives::DateTime as AwsTime;
use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
use slipway::fleet::InstanceId;
use slipway::metrics::{CPU, MEMORY, Metrics, NAMESPACE, dimensions};

use super::fleet::{LocalFleet, LocalInstance};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ).
const TICKS: f64 = 100.0;
const PAGE: u64 = 4096;

pub struct MetricsSampler {
    metrics: Metrics,
    fleet: LocalFleet,
    /// Each instance's CPU ticks at its last sample.
    last: HashMap<InstanceId, (u64, Instant)>,
}

/// The pids in the instance's pidfiles.
fn pids(instance: &LocalInstance) -> Vec<u32> {
    let dir = instance.dir.join(instance.env.app.as_str()).join("run");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            v["pid"].as_u64().map(|p| p as u32)
        })
        .collect()
}

/// CPU ticks (user + system) and resident bytes of a process.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // Fields 14 and 15 of stat, counted from after the command name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks, resident * PAGE))
}

fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl MetricsSampler {
    pub fn new(metrics: Metrics, fleet: LocalFleet) -> Self {
        Self {
            metrics,
            fleet,
            last: HashMap::new(),
        }
    }

    /// Samples every instance once and publishes what changed since the
    /// previous sample (an instance's first sample only sets the baseline).
    pub async fn step(&mut self) -> anyhow::Result<()> {
        let instances = self.fleet.snapshot();
        let total = memory_total().unwrap_or(1).max(1);
        let now = Instant::now();
        let at = AwsTime::from_millis(chrono::Utc::now().timestamp_millis());
        let mut data = Vec::new();
        for (id, instance) in &instances {
            let (ticks, resident) = pids(instance)
                .into_iter()
                .filter_map(usage)
                .fold((0, 0), |(t, r), (t2, r2)| (t + t2, r + r2));
            if let Some((before, then)) = self.last.insert(id.clone(), (ticks, now)) {
                let secs = now.duration_since(then).as_secs_f64().max(0.001);
                let cpu = (ticks.saturating_sub(before) as f64 / TICKS / secs * 100.0).min(100.0);
                let memory = resident as f64 / total as f64 * 100.0;
                for (name, value) in [(CPU, cpu), (MEMORY, memory)] {
                    data.push(
                        MetricDatum::builder()
                            .metric_name(name)
                            .set_dimensions(Some(dimensions(&instance.env, id.as_str())))
                            .timestamp(at)
                            .value(value)
                            .unit(StandardUnit::Percent)
                            .storage_resolution(1)
                            .build(),
                    );
                }
            }
        }
        self.last
            .retain(|id, _| instances.iter().any(|(i, _)| i == id));
        // PutMetricData takes up to 1000 data points a call.
        for chunk in data.chunks(1000) {
            self.metrics
                .client()
                .put_metric_data()
                .namespace(NAMESPACE)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "publishing metrics: {}",
                        aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                    )
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_resident_memory() {
        let (_, resident) = usage(std::process::id()).unwrap();
        assert!(resident > 0);
        assert!(memory_total().unwrap() > resident);
    }
}
