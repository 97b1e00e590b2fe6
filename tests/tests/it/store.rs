//! The release store against the emulator's S3.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use slipway_control::store::{StoreError, UploadOutcome, UploadStatus};
use slipway_core::archive::{ArchiveFormat, Limits};
use slipway_core::manifest::Origin;
use slipway_core::names::{EnvName, EnvRef, ReleaseId};
use slipway_core::testing::{TarBuilder, app_archive, gzip, zstd_compress};
use slipway_tests::World;

fn env(app: &str, env: &str) -> EnvRef {
    EnvRef::parse(app, env).unwrap()
}

fn r(n: u64) -> ReleaseId {
    ReleaseId::new(n).unwrap()
}

async fn upload(world: &World, e: &EnvRef, name: &str, body: Vec<u8>) -> UploadOutcome {
    world.upload(e, name, body).await
}

fn created(outcome: UploadOutcome) -> slipway_core::manifest::Manifest {
    match outcome {
        UploadOutcome::Created(m) => m,
        other => panic!("expected a release, got {other:?}"),
    }
}

#[tokio::test]
async fn an_upload_becomes_r1_with_source_config_snapshot_and_manifest_written() {
    let world = World::new().await;
    let e = env("hello", "prod");
    world.put("hello/prod/env", "B=2\nexport A='one'\n").await;
    let archive = app_archive("python3 app.py");

    let m = created(upload(&world, &e, "first.tar.gz", archive.clone()).await);

    assert_eq!(m.id, r(1));
    assert_eq!(m.source.key, "hello/prod/releases/r1/source.tar.gz");
    assert_eq!(m.source.format, ArchiveFormat::Gzip);
    assert_eq!(m.source.size, archive.len() as u64);
    assert_eq!(m.source.sha256, hex::encode(Sha256::digest(&archive)));
    assert_eq!(m.procfile.web(), "python3 app.py");
    assert_eq!(m.created_by, "s3:tester");
    assert_eq!(
        world
            .get("hello/prod/releases/r1/source.tar.gz")
            .await
            .unwrap(),
        archive
    );
    let snapshot = world.get("hello/prod/releases/r1/env").await.unwrap();
    assert_eq!(snapshot, b"A=one\nB=2\n");
    assert_eq!(m.config_sha256, hex::encode(Sha256::digest(&snapshot)));
    let json: serde_json::Value = serde_json::from_slice(
        &world
            .get("hello/prod/releases/r1/release.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["state"], "ready");
    assert_eq!(json["id"], "r1");
    assert!(
        world.keys("hello/prod/uploads/").await.is_empty(),
        "the upload is consumed"
    );
}

#[tokio::test]
async fn an_environment_without_an_env_file_snapshots_an_empty_config() {
    let world = World::new().await;
    let e = env("hello", "dev");
    let m = created(
        upload(
            &world,
            &e,
            "a.tar.zst",
            zstd_compress(&{
                let mut t = TarBuilder::new();
                t.file("Procfile", b"web: ./serve\n");
                t.finish()
            }),
        )
        .await,
    );
    assert_eq!(m.source.format, ArchiveFormat::Zstd);
    assert_eq!(m.source.key, "hello/dev/releases/r1/source.tar.zst");
    assert_eq!(world.get("hello/dev/releases/r1/env").await.unwrap(), b"");
}

#[tokio::test]
async fn twenty_concurrent_releases_get_exactly_r1_to_r20() {
    let world = World::new().await;
    let e = env("race", "prod");
    let mut keys = Vec::new();
    for i in 0..20 {
        let key = format!("race/prod/uploads/{i}.tar.gz");
        world.put(&key, app_archive(&format!("serve {i}"))).await;
        keys.push(key);
    }

    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let store = world.store.clone();
            let e = e.clone();
            tokio::spawn(async move { store.release_upload(&e, &key, "racer").await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(created(t.await.unwrap().unwrap()).id.number());
    }

    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    let listed = world.store.list_releases(&e, None, 100).await.unwrap();
    let listed: Vec<u64> = listed.releases.iter().map(|m| m.id.number()).collect();
    assert_eq!(listed, (1..=20).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_same_upload_delivered_twice_makes_one_release() {
    let world = World::new().await;
    let e = env("dup", "prod");
    let key = "dup/prod/uploads/once.tar.gz";
    world.put(key, app_archive("x")).await;

    let first = world.store.release_upload(&e, key, "s3").await.unwrap();
    let second = world.store.release_upload(&e, key, "s3").await.unwrap();

    assert_eq!(created(first).id, r(1));
    assert!(matches!(second, UploadOutcome::Gone), "{second:?}");
    assert_eq!(
        world
            .store
            .list_releases(&e, None, 10)
            .await
            .unwrap()
            .releases
            .len(),
        1
    );
}

#[tokio::test]
async fn a_redelivery_after_a_crash_before_the_upload_was_deleted_finds_the_release() {
    let world = World::new().await;
    let e = env("dup", "crash");
    let key = "dup/crash/uploads/once.tar.gz";
    let archive = app_archive("x");
    world.put(key, archive.clone()).await;
    created(world.store.release_upload(&e, key, "s3").await.unwrap());
    // The function died after writing release.json, before deleting the
    // upload: S3 still has the same object (same content, same ETag).
    world.put(key, archive).await;

    let again = world.store.release_upload(&e, key, "s3").await.unwrap();

    assert!(
        matches!(again, UploadOutcome::Duplicate(id) if id == r(1)),
        "{again:?}"
    );
    assert!(world.keys("dup/crash/uploads/").await.is_empty());
    assert_eq!(
        world
            .store
            .list_releases(&e, None, 10)
            .await
            .unwrap()
            .releases
            .len(),
        1
    );
}

#[tokio::test]
async fn hostile_archives_are_moved_to_rejected_with_a_reason_and_never_become_releases() {
    let world = World::new().await;
    let e = env("evil", "prod");
    let base = || {
        let mut t = TarBuilder::new();
        t.file("Procfile", b"web: x\n");
        t
    };
    let bomb = {
        let mut t = base();
        t.file("zeros", &vec![0u8; 32 << 20]);
        gzip(&t.finish())
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal.tar.gz",
            gzip(&base().raw_file("../../etc/cron.d/x", b"x").finish()),
            "climbs out",
        ),
        (
            "absolute.tar.gz",
            gzip(&base().raw_file("/etc/passwd", b"x").finish()),
            "absolute path",
        ),
        (
            "symlink.tar.gz",
            gzip(&base().symlink("escape", "../../../root").finish()),
            "points outside",
        ),
        (
            "device.tar.gz",
            gzip(&base().special("null", tar::EntryType::Char).finish()),
            "character device",
        ),
        ("bomb.tar.gz", bomb, "expands to more than"),
        (
            "noprocfile.tar.gz",
            gzip(&TarBuilder::new().file("a", b"b").finish()),
            "no Procfile",
        ),
        (
            "noweb.tar.gz",
            gzip(&TarBuilder::new().file("Procfile", b"worker: x").finish()),
            "no web process",
        ),
        (
            "notar.tar.gz",
            b"just some text".to_vec(),
            "not a gzip or zstd",
        ),
    ];
    let world = World {
        store: slipway_control::store::ReleaseStore::new(
            slipway_core::objects::S3Objects::new(world.s3.clone(), &world.bucket),
            Limits {
                max_expanded_bytes: 4 << 20,
                ..Limits::default()
            },
        ),
        ..world
    };

    for (name, body, needle) in cases {
        match upload(&world, &e, name, body).await {
            UploadOutcome::Rejected { reason, moved_to } => {
                assert!(reason.contains(needle), "{name}: {reason}");
                assert_eq!(moved_to, format!("evil/prod/rejected/{name}"));
                let why: serde_json::Value = serde_json::from_slice(
                    &world.get(&format!("{moved_to}.reason.json")).await.unwrap(),
                )
                .unwrap();
                assert_eq!(why["reason"], reason);
                assert!(
                    world.get(&moved_to).await.is_some(),
                    "{name}: archive kept for inspection"
                );
            }
            other => panic!("{name}: expected a rejection, got {other:?}"),
        }
    }
    assert!(world.keys("evil/prod/releases/").await.is_empty());
    assert!(world.keys("evil/prod/uploads/").await.is_empty());
    // Each was numbered and copied while it was read; every number was
    // given back.
    let good = created(upload(&world, &e, "good.tar.gz", app_archive("x")).await);
    assert_eq!(good.id, r(1));
}

#[tokio::test]
async fn an_upload_named_for_one_format_and_compressed_with_the_other_is_stored_as_what_it_is() {
    let world = World::new().await;
    let e = env("misnamed", "prod");
    let archive = zstd_compress(&TarBuilder::new().file("Procfile", b"web: x\n").finish());

    let m = created(upload(&world, &e, "really-zstd.tar.gz", archive.clone()).await);

    assert_eq!(m.source.format, ArchiveFormat::Zstd);
    assert_eq!(
        m.source.key,
        format!("misnamed/prod/releases/{}/source.tar.zst", m.id)
    );
    assert_eq!(world.get(&m.source.key).await.unwrap(), archive);
    let left: Vec<String> = world
        .keys("misnamed/prod/releases/")
        .await
        .into_iter()
        .filter(|k| k.ends_with("source.tar.gz"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn two_deliveries_of_one_upload_at_once_never_lose_it() {
    let world = World::new().await;
    for round in 0..5 {
        let e = env("twice", &format!("e{round}"));
        let key = format!("twice/e{round}/uploads/once.tar.gz");
        world.put(&key, app_archive("x")).await;

        let (a, b) = tokio::join!(
            world.store.release_upload(&e, &key, "s3"),
            world.store.release_upload(&e, &key, "s3")
        );

        let (a, b) = (a.unwrap(), b.unwrap());
        let made = [&a, &b]
            .iter()
            .filter(|o| matches!(o, UploadOutcome::Created(_)))
            .count();
        assert!(made >= 1, "round {round}: {a:?} / {b:?}");
        let released = world.store.list_releases(&e, None, 10).await.unwrap();
        assert_eq!(released.releases.len(), made, "round {round}");
        assert!(
            world
                .keys(&format!("twice/e{round}/uploads/"))
                .await
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_released_upload_leaves_a_receipt_and_its_status_survives_a_lost_receipt() {
    let world = World::new().await;
    let e = env("receipt", "prod");
    let m = created(upload(&world, &e, "a.tar.gz", app_archive("x")).await);

    let receipt: serde_json::Value = serde_json::from_slice(
        &world
            .get("receipt/prod/released/a.tar.gz.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["release"], m.id.to_string());
    assert_eq!(receipt["upload"], "receipt/prod/uploads/a.tar.gz");
    let released = UploadStatus::Released { release: m.id };
    let status = world.store.upload_status(&e, "a.tar.gz").await.unwrap();
    assert_eq!(status, Some(released.clone()));
    // A function that stopped before writing it: the recent releases say.
    world.delete_all("receipt/prod/released/").await;
    let status = world.store.upload_status(&e, "a.tar.gz").await.unwrap();
    assert_eq!(status, Some(released));
    let status = world.store.upload_status(&e, "other.tar.gz").await.unwrap();
    assert_eq!(status, Some(UploadStatus::Pending));
}

#[tokio::test]
async fn setting_config_makes_a_new_release_of_the_current_source_with_a_masked_diff() {
    let world = World::new().await;
    let e = env("cfg", "prod");
    world.put("cfg/prod/env", "KEEP=1\nOLD=gone\n").await;
    let r1 = created(upload(&world, &e, "a.tar.gz", app_archive("x")).await);
    world.store.set_current(&e, r1.id).await.unwrap();

    let set = BTreeMap::from([("SECRET".to_string(), "hunter2".to_string())]);
    let change = world
        .store
        .change_config(&e, &set, &["OLD".to_string()], "alice")
        .await
        .unwrap();

    let r2 = change.release.expect("a new release");
    assert_eq!(r2.id, r(2));
    assert_eq!(r2.origin, Origin::Config { from: r(1) });
    assert_eq!(r2.source.sha256, r1.source.sha256);
    assert_eq!(r2.source.key, "cfg/prod/releases/r2/source.tar.gz");
    assert_eq!(
        world.get(&r2.source.key).await,
        world.get(&r1.source.key).await
    );
    assert_eq!(r2.created_by, "alice");
    assert_eq!(
        world.get("cfg/prod/releases/r2/env").await.unwrap(),
        b"KEEP=1\nSECRET=hunter2\n"
    );
    assert_eq!(
        world.get("cfg/prod/env").await.unwrap(),
        b"KEEP=1\nSECRET=hunter2\n"
    );
    assert_eq!(
        world.get("cfg/prod/releases/r1/env").await.unwrap(),
        b"KEEP=1\nOLD=gone\n",
        "r1 is immutable"
    );
    let diff = serde_json::to_string(&change.diff.entries(false)).unwrap();
    assert!(
        diff.contains("SECRET") && diff.contains("OLD") && !diff.contains("hunter2"),
        "{diff}"
    );
    assert!(!r2.description.unwrap_or_default().contains("hunter2"));
}

#[tokio::test]
async fn a_config_change_that_changes_nothing_makes_no_release() {
    let world = World::new().await;
    let e = env("cfg", "same");
    world.put("cfg/same/env", "A=1\n").await;
    created(upload(&world, &e, "a.tar.gz", app_archive("x")).await);
    let set = BTreeMap::from([("A".to_string(), "1".to_string())]);
    let change = world
        .store
        .change_config(&e, &set, &[], "alice")
        .await
        .unwrap();
    assert!(change.release.is_none() && change.diff.is_empty());
}

#[tokio::test]
async fn a_bad_config_key_is_refused_and_changes_nothing() {
    let world = World::new().await;
    let e = env("cfg", "bad");
    world.put("cfg/bad/env", "A=1\n").await;
    let set = BTreeMap::from([("BAD-KEY".to_string(), "x".to_string())]);
    let err = world
        .store
        .change_config(&e, &set, &[], "alice")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert_eq!(world.get("cfg/bad/env").await.unwrap(), b"A=1\n");
}

#[tokio::test]
async fn a_secret_outside_the_environments_parameter_path_is_refused_and_changes_nothing() {
    let world = World::new().await;
    let e = env("cfg", "sec");
    world.put("cfg/sec/env", "A=1\n").await;
    for outside in [
        "ssm:/slipway/users",
        "ssm:/other/sec/db",
        "ssm:/cfg/secx/db",
        "ssm:/cfg/sec/",
        "ssm:/cfg/sec/../../slipway/users",
        "ssm:cfg/sec/db",
    ] {
        let set = BTreeMap::from([("DB".to_string(), outside.to_string())]);
        let err = world
            .store
            .change_config(&e, &set, &[], "alice")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("outside /cfg/sec/"), "{outside}: {text}");
        assert_eq!(world.get("cfg/sec/env").await.unwrap(), b"A=1\n");
    }
    let set = BTreeMap::from([("DB".to_string(), "ssm:/cfg/sec/db".to_string())]);
    world
        .store
        .change_config(&e, &set, &[], "alice")
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_config_changes_are_all_kept() {
    let world = World::new().await;
    let e = env("cfg", "race");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = world.store.clone();
            let e = e.clone();
            tokio::spawn(async move {
                let set = BTreeMap::from([(format!("K{i}"), i.to_string())]);
                store.change_config(&e, &set, &[], "racer").await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(world.store.config(&e).await.unwrap().len(), 8);
}

#[tokio::test]
async fn promoting_a_release_copies_its_source_into_the_target_env_with_the_targets_config() {
    let world = World::new().await;
    let staging = env("shop", "staging");
    world.put("shop/staging/env", "MODE=staging\n").await;
    world.put("shop/prod/env", "MODE=prod\n").await;
    let s1 = created(upload(&world, &staging, "a.tar.gz", app_archive("x")).await);

    let p1 = world
        .store
        .promote(&staging, s1.id, &env("shop", "prod"), "bob")
        .await
        .unwrap();

    assert_eq!(p1.id, r(1));
    assert_eq!(p1.env.as_str(), "prod");
    assert_eq!(
        p1.origin,
        Origin::Promote {
            env: EnvName::parse("staging").unwrap(),
            release: r(1)
        }
    );
    assert_eq!(p1.source.sha256, s1.source.sha256);
    assert_eq!(
        world.get("shop/prod/releases/r1/env").await.unwrap(),
        b"MODE=prod\n"
    );
    assert_eq!(
        world.get(&p1.source.key).await,
        world.get(&s1.source.key).await
    );
}

#[tokio::test]
async fn releases_list_newest_first_in_pages() {
    let world = World::new().await;
    let e = env("list", "prod");
    for i in 0..12 {
        created(upload(&world, &e, &format!("{i}.tar.gz"), app_archive("x")).await);
    }
    let first = world.store.list_releases(&e, None, 5).await.unwrap();
    let ids: Vec<u64> = first.releases.iter().map(|m| m.id.number()).collect();
    assert_eq!(ids, [12, 11, 10, 9, 8]);
    assert_eq!(first.next, Some(r(8)));
    let second = world.store.list_releases(&e, first.next, 5).await.unwrap();
    assert_eq!(second.releases[0].id, r(7));
    let last = world.store.list_releases(&e, Some(r(3)), 5).await.unwrap();
    assert_eq!(last.releases.len(), 2);
    assert_eq!(last.next, None);
}

#[tokio::test]
async fn a_page_of_releases_costs_the_same_requests_with_six_releases_or_sixty() {
    let world = World::new().await;
    let (few, many) = (env("cost", "few"), env("cost", "many"));
    for (e, n) in [(&few, 6), (&many, 60)] {
        for i in 0..n {
            created(upload(&world, e, &format!("{i}.tar.gz"), app_archive("x")).await);
        }
    }
    let (objects, requests) = world.counted();
    let store = slipway_control::store::ReleaseStore::new(objects, Limits::default());
    let mut costs = Vec::new();
    for e in [&few, &many] {
        requests.take();
        let page = store.list_releases(e, None, 5).await.unwrap();
        assert_eq!(page.releases.len(), 5);
        assert_eq!(page.next, Some(page.releases[4].id));
        costs.push(requests.take());
    }
    assert_eq!(costs[0], costs[1], "{costs:?}");
    assert_eq!(
        costs[1],
        1 + 6,
        "one listing and a manifest each, one more for the next page"
    );
}

#[tokio::test]
async fn an_environment_from_before_the_release_index_is_indexed_once_and_numbers_on() {
    let world = World::new().await;
    let e = env("legacy", "prod");
    for i in 0..3 {
        created(upload(&world, &e, &format!("{i}.tar.gz"), app_archive("x")).await);
    }
    let index = slipway_core::keys::release_index_prefix(&e);
    world.delete_all(&index).await;

    let ids: Vec<u64> = (world
        .store
        .list_releases(&e, None, 10)
        .await
        .unwrap()
        .releases)
        .iter()
        .map(|m| m.id.number())
        .collect();
    assert_eq!(ids, [3, 2, 1]);
    assert_eq!(world.keys(&index).await.len(), 3, "indexed on first use");

    world.delete_all(&index).await;
    let next = created(upload(&world, &e, "3.tar.gz", app_archive("x")).await);
    assert_eq!(next.id, r(4), "a new release indexes the old ones first");
    assert_eq!(world.keys(&index).await.len(), 4);
}

#[tokio::test]
async fn the_current_pointer_only_points_at_existing_releases() {
    let world = World::new().await;
    let e = env("ptr", "prod");
    assert_eq!(world.store.current(&e).await.unwrap(), None);
    created(upload(&world, &e, "a.tar.gz", app_archive("x")).await);
    world.store.set_current(&e, r(1)).await.unwrap();
    assert_eq!(world.store.current(&e).await.unwrap(), Some(r(1)));
    assert_eq!(world.get("ptr/prod/current").await.unwrap(), b"r1\n");
    let err = world.store.set_current(&e, r(9)).await.unwrap_err();
    assert!(matches!(err, StoreError::ReleaseNotFound { .. }), "{err:?}");
    assert_eq!(world.store.current(&e).await.unwrap(), Some(r(1)));
}

#[tokio::test]
async fn a_stale_claim_left_by_a_crashed_writer_is_taken_over() {
    let world = World::new().await;
    let e = env("stale", "prod");
    created(upload(&world, &e, "a.tar.gz", app_archive("x")).await);
    let claim = serde_json::json!({
        "state": "pending", "id": "r2", "claimed_at": "2020-01-01T00:00:00Z",
        "claimed_by": "dead", "origin": {"kind": "config", "from": "r1"}
    });
    world
        .put(
            "stale/prod/releases/r2/release.json",
            serde_json::to_vec(&claim).unwrap(),
        )
        .await;

    let m = created(upload(&world, &e, "b.tar.gz", app_archive("y")).await);

    assert_eq!(
        m.id,
        r(2),
        "the crashed writer's number is reused, leaving no gap"
    );
    let ids: Vec<u64> = world
        .store
        .list_releases(&e, None, 10)
        .await
        .unwrap()
        .releases
        .iter()
        .map(|m| m.id.number())
        .collect();
    assert_eq!(ids, [2, 1]);
}

#[tokio::test]
async fn a_fresh_claim_is_skipped_and_not_listed_as_a_release() {
    let world = World::new().await;
    let e = env("fresh", "prod");
    let claim = serde_json::json!({
        "state": "pending", "id": "r1", "claimed_at": chrono::Utc::now(),
        "claimed_by": "busy", "origin": {"kind": "config", "from": "r1"}
    });
    world
        .put(
            "fresh/prod/releases/r1/release.json",
            serde_json::to_vec(&claim).unwrap(),
        )
        .await;
    assert!(
        world
            .store
            .list_releases(&e, None, 10)
            .await
            .unwrap()
            .releases
            .is_empty()
    );
    let m = created(upload(&world, &e, "b.tar.gz", app_archive("y")).await);
    assert_eq!(m.id, r(2));
}
