//! The health check: `http://127.0.0.1:$PORT<path>` must answer 2xx before
//! the timeout, and a process that exits meanwhile fails the check at once
//! rather than after the timeout.

use std::future::Future;
use std::time::{Duration, Instant};

/// Time between probes: short, because the agent's own overhead counts.
const INTERVAL: Duration = Duration::from_millis(25);

pub struct Probe {
    client: reqwest::Client,
    url: String,
}

impl Probe {
    pub fn new(port: u16, path: &str) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client always builds");
        Self {
            client,
            url: format!("http://127.0.0.1:{port}{path}"),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request: `Ok(status)` for 2xx, else what was seen.
    pub async fn once(&self) -> Result<u16, String> {
        match self.client.get(&self.url).send().await {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err(format!("answered {}", r.status().as_u16())),
            Err(e) if e.is_connect() => Err("refused the connection".into()),
            Err(e) if e.is_timeout() => Err("did not answer in time".into()),
            Err(_) => Err("did not answer with HTTP".into()),
        }
    }

    /// Probes until 2xx, `alive` fails, or `timeout` passes.
    pub async fn wait<F, Fut>(&self, timeout: Duration, alive: F) -> Result<Duration, String>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let started = Instant::now();
        loop {
            alive().await?;
            let last = match self.once().await {
                Ok(_) => return Ok(started.elapsed()),
                Err(seen) => seen,
            };
            if started.elapsed() >= timeout {
                return Err(format!(
                    "{} gave no 2xx within {} s (it {last})",
                    self.url,
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(statuses: Vec<u16>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in statuses.into_iter().cycle() {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn healthy_after_a_few_failures() {
        let port = server(vec![503, 503, 200]).await;
        let probe = Probe::new(port, "/health");
        probe
            .wait(Duration::from_secs(5), || async { Ok(()) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn never_healthy_times_out_saying_what_it_saw() {
        let port = server(vec![500]).await;
        let err = Probe::new(port, "/health")
            .wait(Duration::from_millis(200), || async { Ok(()) })
            .await
            .unwrap_err();
        assert!(err.contains("answered 500"), "{err}");
        assert!(err.contains("/health"), "{err}");
    }

    #[tokio::test]
    async fn a_dead_process_fails_at_once() {
        let started = Instant::now();
        let err = Probe::new(1, "/health")
            .wait(Duration::from_secs(30), || async {
                Err("web.1 exited".to_owned())
            })
            .await
            .unwrap_err();
        assert_eq!(err, "web.1 exited");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_redirect_is_not_healthy() {
        let port = server(vec![302]).await;
        let err = Probe::new(port, "/").once().await.unwrap_err();
        assert_eq!(err, "answered 302");
    }
}
