//! Instance metrics from CloudWatch: each instance's CPU and memory over
//! the last 15 minutes, for the formation view and its sparklines.
//!
//! The contract: namespace [`NAMESPACE`], metrics [`CPU`] and [`MEMORY`]
//! (percent), dimensions `InstanceId`, `slipway:app`, `slipway:env`. On
//! EC2 the CloudWatch agent publishes them; on the local platform the fleet
//! samples its processes and publishes the same into the emulator. A whole
//! group is read with one `GetMetricData` call (two queries per instance,
//! up to 500 queries a call), however many instances it has.
//!
//! Per process: [`PROCESS_CPU`] (percent of one CPU) and [`PROCESS_MEMORY`]
//! (resident bytes) with one more dimension, [`PROCESS_DIMENSION`] =
//! `web.1`, `worker.2`, … On EC2 the agent's procstat settings (written on
//! every deploy from the pidfiles the app's units keep) publish them. The
//! processes that report are found with one `ListMetrics` listing for the
//! environment, then read with one more `GetMetricData` call (per 250
//! processes): only their latest values, for the formation table.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat};
use aws_smithy_types::DateTime as AwsTime;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use slipway_core::names::EnvRef;
use slipway_core::names::InstanceId;
use slipway_core::on_first_use::OnFirstUse;

pub use slipway_core::metric_names::{
    CPU, MEMORY, NAMESPACE, PROCESS_CPU, PROCESS_DIMENSION, PROCESS_MEMORY,
};
/// How recent a process's figures must be to be shown.
pub const PROCESS_WINDOW_MINUTES: i64 = 5;
/// How far back the formation looks.
pub const WINDOW_MINUTES: i64 = 15;
/// GetMetricData's limit of queries per call.
const MAX_QUERIES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t: DateTime<Utc>,
    pub v: f64,
}

/// One instance's recent CPU and memory, oldest first, and the latest
/// figures of each of its processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub cpu: Vec<Point>,
    pub memory: Vec<Point>,
    /// By process name (`web.1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, ProcessUsage>,
}

/// A process's latest figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Percent of one CPU (a busy process on two cores can show 200).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<f64>,
}

/// The dimensions every Slipway system metric carries.
pub fn dimensions(env: &EnvRef, instance: &str) -> Vec<Dimension> {
    [
        ("InstanceId", instance),
        ("slipway:app", env.app.as_str()),
        ("slipway:env", env.env.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| Dimension::builder().name(k).value(v).build())
    .collect()
}

/// The dimensions of one process's metrics.
pub fn process_dimensions(env: &EnvRef, instance: &str, process: &str) -> Vec<Dimension> {
    let mut dims = dimensions(env, instance);
    dims.push(
        Dimension::builder()
            .name(PROCESS_DIMENSION)
            .value(process)
            .build(),
    );
    dims
}

fn sdk_error<E: std::error::Error + 'static>(e: E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()
}

fn aws_time(t: DateTime<Utc>) -> AwsTime {
    AwsTime::from_millis(t.timestamp_millis())
}

/// CloudWatch metrics, as the formation needs them.
#[derive(Clone, Debug)]
pub struct Metrics {
    client: OnFirstUse<Client>,
    /// Seconds per point: 60 for the CloudWatch agent's standard
    /// resolution; the local platform samples more often.
    pub period: i32,
}

impl Metrics {
    pub fn new(client: Client, period: i32) -> Self {
        Self {
            client: OnFirstUse::ready(client),
            period,
        }
    }

    /// Built on first use: a function starts without it.
    pub fn from_config(config: &aws_config::SdkConfig, period: i32) -> Self {
        Self {
            client: OnFirstUse::new(config, Client::new),
            period,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn query(&self, id: String, metric: &str, dimensions: Vec<Dimension>) -> MetricDataQuery {
        let metric = Metric::builder()
            .namespace(NAMESPACE)
            .metric_name(metric)
            .set_dimensions(Some(dimensions))
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(self.period)
                    .stat("Average")
                    .build(),
            )
            .return_data(true)
            .build()
    }

    /// The last [`WINDOW_MINUTES`] of CPU and memory of `instances`: one
    /// call per 250 instances (and per page of results).
    pub async fn recent(
        &self,
        env: &EnvRef,
        instances: &[InstanceId],
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, Series>, String> {
        let mut all: BTreeMap<String, Series> = instances
            .iter()
            .map(|i| (i.to_string(), Series::default()))
            .collect();
        let start = now - Duration::minutes(WINDOW_MINUTES);
        for (chunk_no, chunk) in instances.chunks(MAX_QUERIES / 2).enumerate() {
            let mut queries = Vec::with_capacity(chunk.len() * 2);
            let mut owner = BTreeMap::new();
            for (n, instance) in chunk.iter().enumerate() {
                let n = chunk_no * (MAX_QUERIES / 2) + n;
                for (kind, metric) in [("c", CPU), ("m", MEMORY)] {
                    let id = format!("{kind}{n}");
                    owner.insert(id.clone(), (instance.to_string(), kind));
                    queries.push(self.query(id, metric, dimensions(env, instance.as_str())));
                }
            }
            for (id, points) in self.points(queries, start, now).await? {
                let Some((instance, kind)) = owner.get(&id) else {
                    continue;
                };
                let series = all.entry(instance.clone()).or_default();
                let target = if *kind == "c" {
                    &mut series.cpu
                } else {
                    &mut series.memory
                };
                target.extend(points);
            }
        }
        for series in all.values_mut() {
            series.cpu.sort_by_key(|p| p.t);
            series.memory.sort_by_key(|p| p.t);
        }
        self.processes(env, &mut all, now).await?;
        Ok(all)
    }

    /// Fills in each instance's processes: the ones that reported for this
    /// environment (one `ListMetrics` listing), their latest figures (one
    /// `GetMetricData` call per 250 processes). Instances not in `all` are
    /// left out.
    async fn processes(
        &self,
        env: &EnvRef,
        all: &mut BTreeMap<String, Series>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let mut found: BTreeSet<(String, String)> = BTreeSet::new();
        let mut pages = self
            .client
            .list_metrics()
            .namespace(NAMESPACE)
            .metric_name(PROCESS_CPU)
            .dimensions(filter("slipway:app", env.app.as_str()))
            .dimensions(filter("slipway:env", env.env.as_str()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for metric in page.map_err(sdk_error)?.metrics.unwrap_or_default() {
                let dim = |name: &str| {
                    metric
                        .dimensions()
                        .iter()
                        .find(|d| d.name() == Some(name))
                        .and_then(|d| d.value())
                        .map(str::to_owned)
                };
                if let (Some(instance), Some(process)) = (dim("InstanceId"), dim(PROCESS_DIMENSION))
                    && all.contains_key(&instance)
                    && metric.dimensions().len() == 4
                {
                    found.insert((instance, process));
                }
            }
        }
        let start = now - Duration::minutes(PROCESS_WINDOW_MINUTES);
        let found: Vec<_> = found.into_iter().collect();
        for (chunk_no, chunk) in found.chunks(MAX_QUERIES / 2).enumerate() {
            let mut queries = Vec::with_capacity(chunk.len() * 2);
            let mut owner = BTreeMap::new();
            for (n, (instance, process)) in chunk.iter().enumerate() {
                let n = chunk_no * (MAX_QUERIES / 2) + n;
                for (kind, metric) in [("c", PROCESS_CPU), ("m", PROCESS_MEMORY)] {
                    let id = format!("p{kind}{n}");
                    owner.insert(id.clone(), (instance, process, kind));
                    queries.push(self.query(
                        id,
                        metric,
                        process_dimensions(env, instance, process),
                    ));
                }
            }
            for (id, points) in self.points(queries, start, now).await? {
                let (Some((instance, process, kind)), Some(latest)) =
                    (owner.get(&id), points.iter().max_by_key(|p| p.t))
                else {
                    continue;
                };
                let usage = all
                    .entry((*instance).clone())
                    .or_default()
                    .processes
                    .entry((*process).clone())
                    .or_default();
                if *kind == "c" {
                    usage.cpu_percent = Some(latest.v);
                } else {
                    usage.memory_bytes = Some(latest.v);
                }
            }
        }
        Ok(())
    }

    /// Every point of `queries` between `start` and `end`, by query id,
    /// following `NextToken`.
    async fn points(
        &self,
        queries: Vec<MetricDataQuery>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(String, Vec<Point>)>, String> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_metric_data()
                .start_time(aws_time(start))
                .end_time(aws_time(end))
                .set_metric_data_queries(Some(queries.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for result in page.metric_data_results.unwrap_or_default() {
                let Some(id) = result.id else { continue };
                let points = result
                    .timestamps
                    .unwrap_or_default()
                    .into_iter()
                    .zip(result.values.unwrap_or_default())
                    .filter_map(|(t, v)| {
                        let t = Utc.timestamp_millis_opt(t.to_millis().ok()?).single()?;
                        Some(Point { t, v })
                    })
                    .collect();
                out.push((id, points));
            }
            token = page.next_token;
            if token.is_none() {
                return Ok(out);
            }
        }
    }
}

fn filter(name: &str, value: &str) -> DimensionFilter {
    DimensionFilter::builder().name(name).value(value).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
    use aws_sdk_cloudwatch::operation::list_metrics::ListMetricsOutput;
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn instance_ids(n: usize) -> Vec<InstanceId> {
        (0..n)
            .map(|n| InstanceId::parse(&format!("i-{n:017x}")).unwrap())
            .collect()
    }

    fn listed(env: &EnvRef, instance: &InstanceId, process: &str) -> Metric {
        Metric::builder()
            .namespace(NAMESPACE)
            .metric_name(PROCESS_CPU)
            .set_dimensions(Some(process_dimensions(env, instance.as_str(), process)))
            .build()
    }

    #[tokio::test]
    async fn the_processes_that_reported_are_read_with_one_more_call_and_show_their_latest_figures()
    {
        let env = EnvRef::parse("hello", "web").unwrap();
        let ids = instance_ids(3);
        let stranger = InstanceId::parse("i-0fffffffffffffff0").unwrap();
        let (a, b, c) = (
            listed(&env, &ids[0], "web.1"),
            listed(&env, &ids[1], "worker.2"),
            listed(&env, &stranger, "web.1"),
        );
        let list = mock!(Client::list_metrics)
            .match_requests(|r| {
                r.namespace() == Some(NAMESPACE)
                    && r.metric_name() == Some(PROCESS_CPU)
                    && r.dimensions().len() == 2
            })
            .then_output(move || {
                ListMetricsOutput::builder()
                    .metrics(a.clone())
                    .metrics(b.clone())
                    .metrics(c.clone())
                    .build()
            });
        let instances = mock!(Client::get_metric_data)
            .match_requests(|r| r.metric_data_queries().len() == 6)
            .then_output(|| GetMetricDataOutput::builder().build());
        let processes = mock!(Client::get_metric_data)
            .match_requests(|r| {
                r.metric_data_queries().len() == 4
                    && r.metric_data_queries().iter().all(|q| {
                        q.metric_stat()
                            .is_some_and(|s| s.metric().is_some_and(|m| m.dimensions().len() == 4))
                    })
            })
            .then_output(|| {
                GetMetricDataOutput::builder()
                    .metric_data_results(
                        MetricDataResult::builder()
                            .id("pc0")
                            .timestamps(AwsTime::from_secs(1_700_000_000))
                            .timestamps(AwsTime::from_secs(1_700_000_060))
                            .values(5.0)
                            .values(12.5)
                            .build(),
                    )
                    .metric_data_results(
                        MetricDataResult::builder()
                            .id("pm1")
                            .timestamps(AwsTime::from_secs(1_700_000_060))
                            .values(41_000_000.0)
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(
            aws_sdk_cloudwatch,
            RuleMode::MatchAny,
            [&list, &instances, &processes]
        );
        let metrics = Metrics::new(client, 60);

        let series = metrics.recent(&env, &ids, Utc::now()).await.unwrap();

        assert_eq!(
            (
                list.num_calls(),
                instances.num_calls(),
                processes.num_calls()
            ),
            (1, 1, 1)
        );
        assert!(
            !series.contains_key(stranger.as_str()),
            "only the group's instances"
        );
        let web = &series[ids[0].as_str()].processes["web.1"];
        assert_eq!(web.cpu_percent, Some(12.5), "the latest point");
        assert_eq!(web.memory_bytes, None);
        let worker = &series[ids[1].as_str()].processes["worker.2"];
        assert_eq!(worker.memory_bytes, Some(41_000_000.0));
        assert!(series[ids[2].as_str()].processes.is_empty());
    }

    #[tokio::test]
    async fn a_hundred_instances_are_read_with_one_call() {
        let rule = mock!(Client::get_metric_data)
            .match_requests(|r| {
                r.metric_data_queries().len() == 200
                    && r.metric_data_queries().iter().all(|q| {
                        q.metric_stat().is_some_and(|s| {
                            s.metric().is_some_and(|m| {
                                m.namespace() == Some(NAMESPACE) && m.dimensions().len() == 3
                            })
                        })
                    })
            })
            .then_output(|| {
                GetMetricDataOutput::builder()
                    .metric_data_results(
                        MetricDataResult::builder()
                            .id("c7")
                            .timestamps(AwsTime::from_secs(1_700_000_060))
                            .timestamps(AwsTime::from_secs(1_700_000_000))
                            .values(40.0)
                            .values(20.0)
                            .build(),
                    )
                    .build()
            });
        let none_listed =
            mock!(Client::list_metrics).then_output(|| ListMetricsOutput::builder().build());
        let client = mock_client!(
            aws_sdk_cloudwatch,
            RuleMode::MatchAny,
            [&rule, &none_listed]
        );
        let metrics = Metrics::new(client, 60);
        let env = EnvRef::parse("hello", "web").unwrap();
        let ids = instance_ids(100);

        let series = metrics.recent(&env, &ids, Utc::now()).await.unwrap();

        assert_eq!(rule.num_calls(), 1);
        assert_eq!(series.len(), 100);
        let seventh = &series[ids[7].as_str()];
        assert_eq!(
            seventh.cpu.iter().map(|p| p.v).collect::<Vec<_>>(),
            [20.0, 40.0],
            "oldest first"
        );
        assert!(seventh.memory.is_empty() && series[ids[8].as_str()].cpu.is_empty());
    }
}
