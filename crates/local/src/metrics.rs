//! What the CloudWatch agent's system metrics are on an instance, for the
//! local fleet: every few seconds each instance's app processes (from the
//! agent's pidfiles, `<app>/run/<type>.<n>.pid`) are sampled from `/proc`
//! (CPU time since the last sample, resident memory) and published to the
//! emulator's CloudWatch under the same namespace, names and dimensions
//! the formation reads, so the sparklines work locally as in AWS. Each
//! process is published on its own too (`slipway:process` = `web.1`), its
//! main pid only, as the CloudWatch agent's procstat does on EC2.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use aws_sdk_cloudwatch::primitives::DateTime as AwsTime;
use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
use slipway_control::metrics::{
    CPU, MEMORY, Metrics, NAMESPACE, PROCESS_CPU, PROCESS_MEMORY, dimensions, process_dimensions,
};
use slipway_core::names::InstanceId;

use super::fleet::{LocalFleet, LocalInstance};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ).
const TICKS: f64 = 100.0;
const PAGE: u64 = 4096;

pub struct MetricsSampler {
    metrics: Metrics,
    fleet: LocalFleet,
    /// Each instance's CPU ticks at its last sample.
    last: HashMap<InstanceId, (u64, Instant)>,
    /// Each process's (instance, `web.1`, pid) CPU ticks at its last sample.
    last_process: HashMap<(InstanceId, String, u32), u64>,
}

/// The processes in the instance's pidfiles: (`web.1`, pid).
fn pids(instance: &LocalInstance) -> Vec<(String, u32)> {
    let dir = instance.dir.join(instance.env.app.as_str()).join("run");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| {
            let name = e.path().file_stem()?.to_str()?.to_owned();
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            v["pid"].as_u64().map(|p| (name, p as u32))
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
            last_process: HashMap::new(),
        }
    }

    /// Samples every instance once and publishes what changed since the
    /// previous sample (an instance's first sample only sets the baseline).
    pub async fn step(&mut self) -> anyhow::Result<()> {
        let instances = self.fleet.snapshot();
        let total = memory_total().unwrap_or(1).max(1);
        let now = Instant::now();
        let at = AwsTime::from_millis(chrono::Utc::now().timestamp_millis());
        let datum = |name: &str, dims, value, unit| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims))
                .timestamp(at)
                .value(value)
                .unit(unit)
                .storage_resolution(1)
                .build()
        };
        let mut data = Vec::new();
        let mut seen = HashSet::new();
        for (id, instance) in &instances {
            let mut ticks = 0;
            let mut resident = 0;
            let secs = self
                .last
                .get(id)
                .map(|(_, then)| now.duration_since(*then).as_secs_f64().max(0.001));
            for (process, pid) in pids(instance) {
                let Some((t, r)) = usage(pid) else { continue };
                ticks += t;
                resident += r;
                let key = (id.clone(), process.clone(), pid);
                if let (Some(before), Some(secs)) = (self.last_process.get(&key), secs) {
                    let cpu = t.saturating_sub(*before) as f64 / TICKS / secs * 100.0;
                    let dims = process_dimensions(&instance.env, id.as_str(), &process);
                    data.push(datum(PROCESS_CPU, dims.clone(), cpu, StandardUnit::Percent));
                    data.push(datum(PROCESS_MEMORY, dims, r as f64, StandardUnit::Bytes));
                }
                self.last_process.insert(key.clone(), t);
                seen.insert(key);
            }
            if let (Some((before, _)), Some(secs)) =
                (self.last.insert(id.clone(), (ticks, now)), secs)
            {
                let cpu = (ticks.saturating_sub(before) as f64 / TICKS / secs * 100.0).min(100.0);
                let memory = resident as f64 / total as f64 * 100.0;
                let dims = dimensions(&instance.env, id.as_str());
                data.push(datum(CPU, dims.clone(), cpu, StandardUnit::Percent));
                data.push(datum(MEMORY, dims, memory, StandardUnit::Percent));
            }
        }
        self.last
            .retain(|id, _| instances.iter().any(|(i, _)| i == id));
        self.last_process.retain(|key, _| seen.contains(key));
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
