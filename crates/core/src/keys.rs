//! The release bucket's key layout, in one place. Every key an S3 reader or
//! writer uses (the control plane, the agent, the local platform, the
//! tests) is built here from parsed names, so a layout change is one edit
//! and no key is ever made from unchecked text. DESIGN.md lists the layout.
//!
//! ```text
//! <app>/<env>/env                      canonical config vars
//! <app>/<env>/settings.json            environment settings
//! <app>/<env>/current                  the release new instances boot with
//! <app>/<env>/lock                     the job in flight
//! <app>/<env>/terminated.json          the environment's termination record
//! <app>/<env>/releases/r<N>/<file>     source.*, env, release.json
//! <app>/<env>/uploads/<name>           an upload that becomes a release
//! <app>/<env>/rejected/<name>          an upload that could not
//! <app>/<env>/released/<name>.json     which release an upload became
//! <app>/<env>/deploys/<id>.json        a deploy record (…/<id>/cancel, chat.json)
//! <app>/<env>/ssm-output/<id>/         the agent's full output of a deploy, per instance
//! <app>/<env>/deploys/idempotency/<d>  a deploy request's idempotency key
//! <app>/<env>/cycles/<id>.json         a cycle record (…/<id>/cancel)
//! <app>/<env>/scales/<id>.json         a scaling change
//! <app>/<env>/index/releases/<n>       empty; lists releases newest first
//! <app>/<env>/index/deploys/<n>        empty; lists deploys newest first
//! <app>/<env>/index/cycles/<n>         empty; lists cycles newest first
//! <app>/<env>/good.json                the releases deploys succeeded with, newest first
//! ```
//!
//! S3 lists keys in ascending order only, and records are named so they
//! sort oldest first. An index entry's name is its record's name turned
//! around: a job's id with every letter and digit mirrored (`0`↔`z`, …, see
//! [`descending`]), a release's number taken from 10¹⁸−1. One listing of
//! an index folder with a delimiter reads the newest first, a page at a
//! time, whatever the history holds.

use crate::ids::{CycleId, DeployId, JobId, JobKind, ScaleId};
use crate::names::{EnvRef, ReleaseId};

/// `<app>/<env>/env`: the environment's canonical config vars.
pub fn config_key(env: &EnvRef) -> String {
    format!("{}env", env.prefix())
}

/// `<app>/<env>/current`: the release new instances boot with.
pub fn current_key(env: &EnvRef) -> String {
    format!("{}current", env.prefix())
}

/// `<app>/<env>/settings.json`: the environment's settings.
pub fn settings_key(env: &EnvRef) -> String {
    format!("{}settings.json", env.prefix())
}

/// `<app>/<env>/lock`: the deploy or cycle in flight.
pub fn lock_key(env: &EnvRef) -> String {
    format!("{}lock", env.prefix())
}

/// `<app>/<env>/terminated.json`: written when the environment is torn down.
pub fn termination_key(env: &EnvRef) -> String {
    format!("{}terminated.json", env.prefix())
}

/// `<app>/<env>/releases/`: one folder per release.
pub fn releases_prefix(env: &EnvRef) -> String {
    format!("{}releases/", env.prefix())
}

/// `<app>/<env>/releases/r<N>/<file>`.
pub fn release_key(env: &EnvRef, id: ReleaseId, file: &str) -> String {
    format!("{}{id}/{file}", releases_prefix(env))
}

/// The release URL the agent gets for a release of `env` in `bucket`.
pub fn release_url(bucket: &str, env: &EnvRef, id: ReleaseId) -> String {
    format!("s3://{bucket}/{}{id}", releases_prefix(env))
}

/// `<app>/<env>/uploads/`: an object created here becomes a release.
pub fn uploads_prefix(env: &EnvRef) -> String {
    format!("{}uploads/", env.prefix())
}

/// `<app>/<env>/uploads/<name>`.
pub fn upload_key(env: &EnvRef, name: &str) -> String {
    format!("{}{name}", uploads_prefix(env))
}

/// `<app>/<env>/rejected/<name>`: where a refused upload is moved.
pub fn rejected_key(env: &EnvRef, name: &str) -> String {
    format!("{}rejected/{name}", env.prefix())
}

/// Beside a rejected upload: why it was refused.
pub fn rejection_reason_key(rejected: &str) -> String {
    format!("{rejected}.reason.json")
}

/// `<app>/<env>/released/<name>.json`: the receipt of an upload made
/// into a release, so asking what became of it is one read.
pub fn released_key(env: &EnvRef, name: &str) -> String {
    format!("{}released/{name}.json", env.prefix())
}

/// `<app>/<env>/deploys/`: one `<id>.json` record per deploy.
pub fn deploys_prefix(env: &EnvRef) -> String {
    format!("{}deploys/", env.prefix())
}

/// `<app>/<env>/deploys/<id>.json`.
pub fn deploy_key(env: &EnvRef, id: &DeployId) -> String {
    format!("{}{id}.json", deploys_prefix(env))
}

/// `<app>/<env>/queue/`: one empty `<job id>` object per deploy or cycle
/// waiting for the environment, first in first out (ids sort by creation,
/// see `JobId`'s order).
pub fn queue_prefix(env: &EnvRef) -> String {
    format!("{}queue/", env.prefix())
}

/// `<app>/<env>/queue/<id>`.
pub fn queue_key(env: &EnvRef, id: &JobId) -> String {
    format!("{}{id}", queue_prefix(env))
}

/// `<app>/<env>/deploys/<id>/cancel`: asks a running deploy to stop.
pub fn deploy_cancel_key(env: &EnvRef, id: &DeployId) -> String {
    format!("{}{id}/cancel", deploys_prefix(env))
}

/// `<app>/<env>/deploys/<id>/chat.json`: where chat hears of the deploy.
pub fn deploy_chat_key(env: &EnvRef, id: &DeployId) -> String {
    format!("{}{id}/chat.json", deploys_prefix(env))
}

/// `<app>/<env>/ssm-output/<id>/`: each instance's full output of a
/// deploy. Instances may write here (SSM Run Command writes with their
/// role), so it is a prefix of its own that nothing reads as a record.
pub fn deploy_output_prefix(env: &EnvRef, id: &DeployId) -> String {
    format!("{}ssm-output/{id}/", env.prefix())
}

/// `<app>/<env>/deploys/idempotency/<digest>`.
pub fn idempotency_key(env: &EnvRef, digest: &str) -> String {
    format!("{}idempotency/{digest}", deploys_prefix(env))
}

/// `<app>/<env>/cycles/`: one `<id>.json` record per cycle.
pub fn cycles_prefix(env: &EnvRef) -> String {
    format!("{}cycles/", env.prefix())
}

/// `<app>/<env>/cycles/<id>.json`.
pub fn cycle_key(env: &EnvRef, id: &CycleId) -> String {
    format!("{}{id}.json", cycles_prefix(env))
}

/// `<app>/<env>/cycles/<id>/cancel`.
pub fn cycle_cancel_key(env: &EnvRef, id: &CycleId) -> String {
    format!("{}{id}/cancel", cycles_prefix(env))
}

/// `<app>/<env>/scales/`: one `<id>.json` record per scaling change.
pub fn scales_prefix(env: &EnvRef) -> String {
    format!("{}scales/", env.prefix())
}

/// `<app>/<env>/scales/<id>.json`.
pub fn scale_key(env: &EnvRef, id: &ScaleId) -> String {
    format!("{}{id}.json", scales_prefix(env))
}

/// A job's record: `deploys/<id>.json` or `cycles/<id>.json`.
pub fn job_key(env: &EnvRef, id: &JobId) -> String {
    match id {
        JobId::Deploy(id) => deploy_key(env, id),
        JobId::Cycle(id) => cycle_key(env, id),
    }
}

/// Beside a job's record: the marker that asks it to stop.
pub fn job_cancel_key(env: &EnvRef, id: &JobId) -> String {
    match id {
        JobId::Deploy(id) => deploy_cancel_key(env, id),
        JobId::Cycle(id) => cycle_cancel_key(env, id),
    }
}

/// Letters and digits in ASCII order: what [`descending`] mirrors.
const SORTED: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `name` with each ASCII letter and digit mirrored in [`SORTED`] (other
/// bytes kept), so names of one length sort in the opposite order. Its own
/// inverse.
pub fn descending(name: &str) -> String {
    name.bytes()
        .map(|b| match SORTED.iter().position(|&c| c == b) {
            Some(i) => SORTED[SORTED.len() - 1 - i] as char,
            None => b as char,
        })
        .collect()
}

/// Release numbers in an index name: as many digits as a `ReleaseId` may
/// have, so every name has one length; the name is `NINES - n`.
const RELEASE_DIGITS: usize = 18;
const NINES: u64 = 999_999_999_999_999_999;

/// `<app>/<env>/index/releases/`: one empty object per release number
/// claimed, newest first.
pub fn release_index_prefix(env: &EnvRef) -> String {
    format!("{}index/releases/", env.prefix())
}

/// `<app>/<env>/index/releases/<n>`: `n` is `NINES` less the number,
/// zero-padded, so a later release sorts first.
pub fn release_index_key(env: &EnvRef, id: ReleaseId) -> String {
    format!(
        "{}{:0width$}",
        release_index_prefix(env),
        NINES - id.number(),
        width = RELEASE_DIGITS
    )
}

/// The release an index key of `env` names, if it is one.
pub fn release_in_index(env: &EnvRef, key: &str) -> Option<ReleaseId> {
    let name = key.strip_prefix(&release_index_prefix(env))?;
    if name.len() != RELEASE_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ReleaseId::new(NINES - name.parse::<u64>().ok()?)
}

/// `<app>/<env>/index/deploys/` or `…/index/cycles/`: one empty object per
/// job, newest first.
pub fn job_index_prefix(env: &EnvRef, kind: JobKind) -> String {
    let folder = match kind {
        JobKind::Deploy => "deploys",
        JobKind::Cycle => "cycles",
    };
    format!("{}index/{folder}/", env.prefix())
}

/// `<app>/<env>/index/deploys/<mirrored id>`.
pub fn job_index_key(env: &EnvRef, id: &JobId) -> String {
    format!(
        "{}{}",
        job_index_prefix(env, id.kind()),
        descending(id.as_str())
    )
}

/// The job an index key of `env` names, if it is one of `kind`.
pub fn job_in_index(env: &EnvRef, kind: JobKind, key: &str) -> Option<JobId> {
    let name = key.strip_prefix(&job_index_prefix(env, kind))?;
    let id = JobId::parse(&descending(name)).ok()?;
    (id.kind() == kind).then_some(id)
}

/// `<app>/<env>/good.json`: the releases deploys succeeded with, newest
/// first (the rollback target, a booting instance's fallback).
pub fn good_key(env: &EnvRef) -> String {
    format!("{}good.json", env.prefix())
}

/// Is `key` a record directly under `prefix` (`<id>.json`, not a job's
/// output or marker)?
pub fn is_record_key(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".json"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvRef {
        EnvRef::parse("hello", "prod").unwrap()
    }

    #[test]
    fn every_key_of_an_environment_lives_under_its_prefix() {
        let e = env();
        let r = ReleaseId::parse("r7").unwrap();
        assert_eq!(config_key(&e), "hello/prod/env");
        assert_eq!(current_key(&e), "hello/prod/current");
        assert_eq!(settings_key(&e), "hello/prod/settings.json");
        assert_eq!(lock_key(&e), "hello/prod/lock");
        assert_eq!(
            release_key(&e, r, "release.json"),
            "hello/prod/releases/r7/release.json"
        );
        assert_eq!(release_url("b", &e, r), "s3://b/hello/prod/releases/r7");
        assert_eq!(upload_key(&e, "a.tar.gz"), "hello/prod/uploads/a.tar.gz");
        assert_eq!(
            rejection_reason_key(&rejected_key(&e, "a.tar.gz")),
            "hello/prod/rejected/a.tar.gz.reason.json"
        );
        assert_eq!(
            released_key(&e, "a.tar.gz"),
            "hello/prod/released/a.tar.gz.json"
        );
        let d = DeployId::parse("d1").unwrap();
        let c = CycleId::parse("c1").unwrap();
        assert_eq!(deploy_key(&e, &d), "hello/prod/deploys/d1.json");
        assert_eq!(job_key(&e, &d.clone().into()), deploy_key(&e, &d));
        assert_eq!(deploy_cancel_key(&e, &d), "hello/prod/deploys/d1/cancel");
        assert_eq!(
            job_cancel_key(&e, &d.clone().into()),
            deploy_cancel_key(&e, &d)
        );
        assert_eq!(deploy_chat_key(&e, &d), "hello/prod/deploys/d1/chat.json");
        assert_eq!(deploy_output_prefix(&e, &d), "hello/prod/ssm-output/d1/");
        assert_eq!(
            idempotency_key(&e, "ab"),
            "hello/prod/deploys/idempotency/ab"
        );
        assert_eq!(cycle_key(&e, &c), "hello/prod/cycles/c1.json");
        assert_eq!(job_key(&e, &c.clone().into()), cycle_key(&e, &c));
        assert_eq!(cycle_cancel_key(&e, &c), "hello/prod/cycles/c1/cancel");
        assert_eq!(job_cancel_key(&e, &c.into()), "hello/prod/cycles/c1/cancel");
        let s = ScaleId::parse("s1").unwrap();
        assert_eq!(scale_key(&e, &s), "hello/prod/scales/s1.json");
        assert_eq!(termination_key(&e), "hello/prod/terminated.json");
    }

    #[test]
    fn index_names_sort_newest_first_and_name_their_record() {
        let e = env();
        let old = ReleaseId::parse("r9").unwrap();
        let new = ReleaseId::parse("r10").unwrap();
        assert!(release_index_key(&e, new) < release_index_key(&e, old));
        assert_eq!(
            release_index_key(&e, old),
            "hello/prod/index/releases/999999999999999990"
        );
        assert_eq!(release_in_index(&e, &release_index_key(&e, new)), Some(new));
        assert_eq!(release_in_index(&e, "hello/prod/index/releases/x"), None);
        assert_eq!(
            release_in_index(&e, "hello/prod/index/releases/999999999999999999"),
            None,
            "r0 is not a release"
        );

        let t = chrono::Utc::now();
        let first: JobId = DeployId::new(t).into();
        let second: JobId = DeployId::new(t + chrono::Duration::milliseconds(1)).into();
        assert!(job_index_key(&e, &second) < job_index_key(&e, &first));
        assert_eq!(
            job_in_index(&e, JobKind::Deploy, &job_index_key(&e, &first)),
            Some(first.clone())
        );
        assert_eq!(
            job_in_index(&e, JobKind::Cycle, &job_index_key(&e, &first)),
            None
        );
        let cycle: JobId = CycleId::new(t).into();
        assert!(job_index_key(&e, &cycle).starts_with("hello/prod/index/cycles/"));
        assert_eq!(descending(&descending("d2026-aZ9")), "d2026-aZ9");
        assert_eq!(good_key(&e), "hello/prod/good.json");
    }

    #[test]
    fn only_records_directly_under_the_prefix_count() {
        let p = "hello/prod/deploys/";
        assert!(is_record_key(p, "hello/prod/deploys/d1.json"));
        assert!(!is_record_key(p, "hello/prod/deploys/d1/output/i-1.json"));
        assert!(!is_record_key(p, "hello/prod/deploys/.json"));
        assert!(!is_record_key(p, "hello/prod/deploysx/d1.json"));
        assert!(!is_record_key(p, "hello/prod/deploys/d1.txt"));
    }
}
