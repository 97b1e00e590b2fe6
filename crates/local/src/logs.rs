//! What the CloudWatch agent does on an instance, for the local fleet: each
//! instance's process output (`<app>/log/<type>.<n>.log`, written by the
//! agent's direct supervisor) is shipped to the emulator's CloudWatch Logs,
//! group `/slipway/<app>/<env>`, stream = instance id, lines
//! `<type>.<n> <line>`, so log search works locally exactly as in AWS.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use slipway_control::logs::{Logs, group_name};
use slipway_core::names::InstanceId;

use super::fleet::{LocalFleet, LocalInstance};

/// Bytes shipped per file per step at most (the rest waits a step).
const MAX_READ: u64 = 512 * 1024;

pub struct LogShipper {
    logs: Logs,
    fleet: LocalFleet,
    /// How far each file has been shipped.
    offsets: HashMap<PathBuf, u64>,
    streams: HashSet<(String, String)>,
}

fn log_files(instance: &LocalInstance) -> Vec<PathBuf> {
    let dir = instance.dir.join(instance.env.app.as_str()).join("log");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// The complete lines added to `path` since `offset`, and the new offset.
fn new_lines(path: &Path, offset: u64) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    // A file that shrank was replaced: start again.
    let offset = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(MAX_READ).read_to_end(&mut buf)?;
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return Ok((Vec::new(), offset));
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    Ok((lines, offset + end as u64 + 1))
}

impl LogShipper {
    pub fn new(logs: Logs, fleet: LocalFleet) -> Self {
        Self {
            logs,
            fleet,
            offsets: HashMap::new(),
            streams: HashSet::new(),
        }
    }

    async fn ensure_stream(&mut self, group: &str, stream: &str) -> anyhow::Result<()> {
        let key = (group.to_owned(), stream.to_owned());
        if self.streams.contains(&key) {
            return Ok(());
        }
        let client = self.logs.client();
        if let Err(e) = client.create_log_group().log_group_name(group).send().await
            && !e
                .as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception())
        {
            anyhow::bail!(
                "creating {group}: {}",
                aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)
            );
        }
        if let Err(e) = client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
            && !e
                .as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception())
        {
            anyhow::bail!(
                "creating {group}/{stream}: {}",
                aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)
            );
        }
        self.streams.insert(key);
        Ok(())
    }

    async fn ship(&mut self, id: &InstanceId, instance: &LocalInstance) -> anyhow::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut events = Vec::new();
        let mut read = Vec::new();
        for file in log_files(instance) {
            let process = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("app")
                .to_owned();
            let offset = self.offsets.get(&file).copied().unwrap_or(0);
            let Ok((lines, next)) = new_lines(&file, offset) else {
                continue;
            };
            for line in lines {
                events.push(
                    InputLogEvent::builder()
                        .timestamp(now)
                        .message(format!("{process} {line}"))
                        .build()?,
                );
            }
            read.push((file, next));
        }
        if !events.is_empty() {
            let group = group_name(&instance.env);
            self.ensure_stream(&group, id.as_str()).await?;
            for chunk in events.chunks(1000) {
                self.logs
                    .client()
                    .put_log_events()
                    .log_group_name(&group)
                    .log_stream_name(id.as_str())
                    .set_log_events(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "shipping {id}'s logs: {}",
                            aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)
                        )
                    })?;
            }
        }
        // Only what was shipped counts as read: a failed put is retried.
        self.offsets.extend(read);
        Ok(())
    }

    /// Ships what every instance wrote since the last step.
    pub async fn step(&mut self) -> anyhow::Result<()> {
        let instances = self.fleet.snapshot();
        for (id, instance) in &instances {
            self.ship(id, instance).await?;
        }
        let live: HashSet<&Path> = instances.iter().map(|(_, i)| i.dir.as_path()).collect();
        self.offsets
            .retain(|file, _| live.iter().any(|dir| file.starts_with(dir)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_read_and_a_replaced_file_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.1.log");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let (lines, offset) = new_lines(&path, 0).unwrap();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(offset, 8);
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(new_lines(&path, offset).unwrap().0, ["three"]);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(new_lines(&path, 14).unwrap(), (vec!["new".to_owned()], 4));
    }
}
