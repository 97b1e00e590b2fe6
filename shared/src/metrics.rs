//! Instance metrics from CloudWatch: each instance's CPU and memory over
//! the last 15 minutes, for the formation view and its sparklines.
//!
//! The contract: namespace [`NAMESPACE`], metrics [`CPU`] and [`MEMORY`]
//! (percent), dimensions `InstanceId`, `slipway:app`, `slipway:env`. On
//! EC2 the CloudWatch agent publishes them; on the local platform the fleet
//! samples its processes and publishes the same into the emulator. A whole
//! group is read with one `GetMetricData` call (two queries per instance,
//! up to 500 queries a call), however many instances it has.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_smithy_types::DateTime as AwsTime;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

use crate::fleet::InstanceId;
use crate::names::EnvRef;

pub const NAMESPACE: &str = "Slipway/System";
pub const CPU: &str = "cpu_percent";
pub const MEMORY: &str = "memory_percent";
/// How far back the formation looks.
pub const WINDOW_MINUTES: i64 = 15;
/// GetMetricData's limit of queries per call.
const MAX_QUERIES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub t: DateTime<Utc>,
    pub v: f64,
}

/// One instance's recent CPU and memory, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    pub cpu: Vec<Point>,
    pub memory: Vec<Point>,
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

fn aws_time(t: DateTime<Utc>) -> AwsTime {
    AwsTime::from_millis(t.timestamp_millis())
}

/// CloudWatch metrics, as the formation needs them.
#[derive(Clone, Debug)]
pub struct Metrics {
    client: Client,
    /// Seconds per point: 60 for the CloudWatch agent's standard
    /// resolution; the local platform samples more often.
    pub period: i32,
}

impl Metrics {
    pub fn new(client: Client, period: i32) -> Self {
        Self { client, period }
    }

    pub fn from_config(config: &aws_config::SdkConfig, period: i32) -> Self {
        Self::new(Client::new(config), period)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn query(&self, id: String, metric: &str, env: &EnvRef, instance: &str) -> MetricDataQuery {
        let metric = Metric::builder()
            .namespace(NAMESPACE)
            .metric_name(metric)
            .set_dimensions(Some(dimensions(env, instance)))
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
                    queries.push(self.query(id, metric, env, instance.as_str()));
                }
            }
            let mut token = None;
            loop {
                let out = self
                    .client
                    .get_metric_data()
                    .start_time(aws_time(start))
                    .end_time(aws_time(now))
                    .set_metric_data_queries(Some(queries.clone()))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| {
                        aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()
                    })?;
                for result in out.metric_data_results.unwrap_or_default() {
                    let Some((instance, kind)) = result.id.as_ref().and_then(|id| owner.get(id))
                    else {
                        continue;
                    };
                    let points = result
                        .timestamps
                        .unwrap_or_default()
                        .into_iter()
                        .zip(result.values.unwrap_or_default())
                        .filter_map(|(t, v)| {
                            let t = Utc.timestamp_millis_opt(t.to_millis().ok()?).single()?;
                            Some(Point { t, v })
                        });
                    let series = all.entry(instance.clone()).or_default();
                    let target = if *kind == "c" {
                        &mut series.cpu
                    } else {
                        &mut series.memory
                    };
                    target.extend(points);
                }
                token = out.next_token;
                if token.is_none() {
                    break;
                }
            }
        }
        for series in all.values_mut() {
            series.cpu.sort_by_key(|p| p.t);
            series.memory.sort_by_key(|p| p.t);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

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
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule]);
        let metrics = Metrics::new(client, 60);
        let env = EnvRef::parse("hello", "web").unwrap();
        let ids: Vec<InstanceId> = (0..100)
            .map(|n| InstanceId::parse(&format!("i-{n:017x}")).unwrap())
            .collect();

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
