//! `ship release`: the committed tree of a git checkout, archived with
//! `git archive`, compressed with zstd, uploaded to the presigned URL the
//! control plane hands out, then followed until the upload became a
//! release (or was rejected, with the reason). `ship releases` lists them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use slipway_core::archive::ArchiveFormat;
use slipway_http::wire::{ReleaseList, UploadRequest, UploadStatus, UploadTicket};

use super::Ctx;
use crate::output::{age, opt, table, text};

pub struct ReleaseOptions {
    pub dir: PathBuf,
    pub message: Option<String>,
    pub git_ref: String,
    pub allow_dirty: bool,
    pub tag: bool,
    pub progress: bool,
}

fn git(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn git_text(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&git(dir, args)?).trim().to_owned())
}

/// What to archive: the tree of `dir` at the ref.
struct Tree {
    /// The checkout's top directory, where `git archive` runs.
    top: PathBuf,
    /// `<commit>` or `<commit>:<subdirectory>`.
    tree: String,
    /// The git ref as the release describes it.
    described: String,
    commit: String,
}

/// The tree of `dir` at the ref, checked (a commit; no uncommitted
/// changes unless allowed).
fn tree(options: &ReleaseOptions) -> anyhow::Result<Tree> {
    let dir = &options.dir;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let commit = git_text(
        dir,
        &[
            "rev-parse",
            "--verify",
            &format!("{}^{{commit}}", options.git_ref),
        ],
    )
    .map_err(|_| anyhow!("{:?} is not a commit here", options.git_ref))?;
    let prefix = git_text(dir, &["rev-parse", "--show-prefix"])?;
    let dirty = git_text(dir, &["status", "--porcelain", "--", "."])?;
    if !dirty.is_empty() {
        if !options.allow_dirty {
            bail!(
                "{} has uncommitted changes: commit them, or release the committed tree anyway with --allow-dirty",
                dir.display()
            );
        }
        eprintln!("note: uncommitted changes are not part of the release");
    }
    let tree = if prefix.is_empty() {
        commit.clone()
    } else {
        format!("{commit}:{}", prefix.trim_end_matches('/'))
    };
    // From the top: inside a subdirectory, git archive takes only the part
    // of the tree under that subdirectory's path.
    let top = PathBuf::from(git_text(dir, &["rev-parse", "--show-toplevel"])?);
    let short = &commit[..commit.len().min(12)];
    let described = if options.git_ref == "HEAD" {
        short.to_owned()
    } else {
        format!("{} ({short})", options.git_ref)
    };
    Ok(Tree {
        top,
        tree,
        described,
        commit,
    })
}

/// `git archive` of `tree` compressed with zstd as git writes it, so the
/// two run at once (as `git archive | zstd` does) and the tar is never
/// held whole.
fn compressed_tree(top: &std::path::Path, tree: &str) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(top)
        .args(["archive", "--format=tar", tree])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running git (is it installed?)")?;
    let mut tar = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // git may write more to stderr than a pipe holds while we read stdout.
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    let mut encoder =
        zstd::stream::Encoder::new(Vec::new(), 3).context("compressing the archive")?;
    // One worker compresses while this thread reads git's output.
    encoder.multithread(1).context("compressing the archive")?;
    let copied = std::io::copy(&mut tar, &mut encoder);
    drop(tar);
    let status = child.wait().context("running git archive")?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("git archive: {}", String::from_utf8_lossy(&errors).trim());
    }
    copied.context("reading git archive's output")?;
    encoder.finish().context("compressing the archive")
}

pub async fn release(ctx: &Ctx, options: &ReleaseOptions) -> anyhow::Result<String> {
    let Tree {
        top,
        tree,
        described,
        commit,
    } = tree(options)?;
    let request = UploadRequest {
        description: options.message.clone(),
        git_ref: Some(described),
        format: Some(ArchiveFormat::Zstd),
    };
    // The archive is made while the control plane hands out the ticket.
    let compressing = tokio::task::spawn_blocking(move || compressed_tree(&top, &tree));
    let ticket = ctx.client.post(&ctx.path("/releases"), &request).await;
    let body = compressing.await.context("compressing the archive")??;
    let ticket: UploadTicket = ticket?;
    let name = ticket.key.rsplit('/').next().unwrap_or_default().to_owned();
    upload(
        ctx,
        &ticket.upload_url,
        &ticket.headers,
        body,
        options.progress,
    )
    .await?;
    let release = wait_for_release(ctx, &name).await?;
    if options.tag {
        git(&options.dir, &["tag", &release, &commit])
            .with_context(|| format!("tagging {commit} as {release}"))?;
    }
    Ok(release)
}

async fn upload(
    ctx: &Ctx,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Vec<u8>,
    progress: bool,
) -> anyhow::Result<()> {
    let len = body.len() as u64;
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "uploading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let counter = bar.clone();
    let stream = futures::stream::iter(chunks.into_iter().map(move |c| {
        counter.inc(c.len() as u64);
        Ok::<_, std::io::Error>(c)
    }));
    let mut request = ctx
        .client
        .http()
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(stream));
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request
        .send()
        .await
        .context("uploading the archive to the release bucket")?;
    bar.finish_and_clear();
    if !response.status().is_success() {
        bail!(
            "the release bucket refused the upload ({}); ask for a new URL by running the command again",
            response.status()
        );
    }
    Ok(())
}

async fn wait_for_release(ctx: &Ctx, name: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut poll = Duration::from_millis(50);
    loop {
        let status: UploadStatus = ctx
            .client
            .get(&ctx.path(&format!("/uploads/{name}")))
            .await?;
        match status {
            UploadStatus::Released { release } => return Ok(release.to_string()),
            UploadStatus::Rejected { reason } => bail!("the upload was rejected: {reason}"),
            _ if started.elapsed() > Duration::from_secs(180) => bail!(
                "the upload was not processed within 3 minutes: is the release function receiving S3 events?"
            ),
            _ => {
                // Most uploads are released within a second: ask every
                // 50 ms (three small reads each) for the first 3 s, then
                // less often.
                tokio::time::sleep(poll).await;
                if started.elapsed() > Duration::from_secs(3) {
                    poll = (poll * 3 / 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

pub async fn list(ctx: &Ctx, limit: usize) -> anyhow::Result<bool> {
    let page: ReleaseList = ctx
        .client
        .get(&ctx.path(&format!("/releases?limit={}", limit.clamp(1, 100))))
        .await?;
    if ctx.json(&page) {
        return Ok(true);
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = page
        .releases
        .iter()
        .map(|r| {
            let origin = serde_json::to_value(&r.origin).unwrap_or_default();
            vec![
                r.id.to_string(),
                age(r.created_at, now),
                r.created_by.clone(),
                opt(r.git_ref.as_deref()),
                text(&origin["kind"]),
                opt(r.description.as_deref()),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["RELEASE", "AGE", "BY", "GIT", "FROM", "DESCRIPTION"],
            &rows
        )
    );
    Ok(true)
}
