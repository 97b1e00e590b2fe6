//! A job's place in its environment's history: a new record goes in with
//! its index entry (entry first), and the newest records come back from one
//! listing of the index and one read each, however many deploys or cycles
//! the environment has had (`store::index` says how the index works).

use futures::{StreamExt, TryStreamExt, stream};

use slipway_core::ids::{JobId, JobKind};
use slipway_core::keys::{
    cycles_prefix, deploys_prefix, is_record_key, job_in_index, job_index_key, job_index_prefix,
};
use slipway_core::names::EnvRef;
use slipway_core::objects::{ObjectError, S3Objects, Write};

use super::{JobRecord, write_record};
use crate::store::index;

/// Writes a new job's record as `write` allows, its index entry first (on
/// an environment never indexed, its earlier records too): the record's
/// version.
pub async fn create<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    id: &JobId,
    record: &R,
    write: Write<'_>,
) -> Result<String, ObjectError> {
    let prefix = job_index_prefix(env, id.kind());
    if index::newest(objects, &prefix, None, 1).await?.is_empty() {
        index_records(objects, env, id.kind()).await?;
    }
    index::add(objects, &job_index_key(env, id)).await?;
    write_record(objects, env, id, record, write).await
}

/// The newest `limit` records of `kind`, newest first; an entry whose
/// record is missing (its writer stopped between the two) or no longer
/// parses is skipped.
pub async fn newest<R: JobRecord>(
    objects: &S3Objects,
    env: &EnvRef,
    kind: JobKind,
    limit: usize,
) -> Result<Vec<R>, ObjectError> {
    let keys = index::newest(objects, &job_index_prefix(env, kind), None, limit).await?;
    let ids: Vec<JobId> = if keys.is_empty() {
        let mut ids = index_records(objects, env, kind).await?;
        ids.truncate(limit);
        ids
    } else {
        keys.iter()
            .filter_map(|k| job_in_index(env, kind, k))
            .collect()
    };
    let records: Vec<Option<R>> = stream::iter(ids)
        .map(|id| async move {
            let key = slipway_core::keys::job_key(env, &id);
            Ok::<_, ObjectError>(
                objects
                    .get(&key)
                    .await?
                    .and_then(|o| serde_json::from_slice(&o.body).ok()),
            )
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(records.into_iter().flatten().collect())
}

/// Indexes the records of an environment from before the index (once: the
/// index is not empty afterwards): its job ids, newest first.
async fn index_records(
    objects: &S3Objects,
    env: &EnvRef,
    kind: JobKind,
) -> Result<Vec<JobId>, ObjectError> {
    let prefix = match kind {
        JobKind::Deploy => deploys_prefix(env),
        JobKind::Cycle => cycles_prefix(env),
    };
    let mut ids: Vec<JobId> = objects
        .list_keys(&prefix)
        .await?
        .iter()
        .filter(|k| is_record_key(&prefix, k))
        .filter_map(|k| JobId::parse(k.strip_prefix(&prefix)?.strip_suffix(".json")?).ok())
        .filter(|id| id.kind() == kind)
        .collect();
    ids.sort_by(|a, b| b.created_order().cmp(a.created_order()));
    let keys: Vec<String> = ids.iter().map(|id| job_index_key(env, id)).collect();
    index::add_all(objects, &keys).await?;
    if !ids.is_empty() {
        tracing::info!(env = %env, kind = %kind, records = ids.len(), "indexed the records of an environment from before the index");
    }
    Ok(ids)
}
