//! The environment lock against the emulator's conditional writes.

use chrono::{Duration, Utc};
use slipway_control::jobs::lock::{self, Lock, LockError};
use slipway_core::ids::JobId;
use slipway_core::names::EnvRef;
use slipway_core::objects::S3Objects;
use slipway_tests::World;

fn job(id: &str) -> JobId {
    JobId::parse(id).unwrap()
}

fn env() -> EnvRef {
    EnvRef::parse("hello", "prod").unwrap()
}

#[tokio::test]
async fn of_twenty_concurrent_deploys_exactly_one_takes_the_lock() {
    let world = World::new().await;
    let objects = S3Objects::new(world.s3.clone(), &world.bucket);
    let now = Utc::now();

    let attempts = (0..20).map(|i| {
        let objects = objects.clone();
        async move {
            lock::acquire(
                &objects,
                &env(),
                Lock::new(job(&format!("d{i}")), "alice", now),
                now,
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;

    let winners: Vec<&lock::Held> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1);
    let winner = &winners[0].lock.job;
    for r in &results {
        match r {
            Ok(_) => {}
            Err(LockError::Held(holder)) => assert_eq!(&holder.job, winner),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

#[tokio::test]
async fn a_stale_lock_is_taken_over_once_and_its_old_holder_loses_it() {
    let world = World::new().await;
    let objects = S3Objects::new(world.s3.clone(), &world.bucket);
    let long_ago = Utc::now() - Duration::hours(2);
    let stale = lock::acquire(
        &objects,
        &env(),
        Lock::new(job("d-old"), "bob", long_ago),
        long_ago,
    )
    .await
    .unwrap();
    let now = Utc::now();

    let attempts = (0..5).map(|i| {
        let objects = objects.clone();
        async move {
            lock::acquire(
                &objects,
                &env(),
                Lock::new(job(&format!("d{i}")), "alice", now),
                now,
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;

    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let mut old = stale;
    assert!(matches!(
        lock::renew(&objects, &env(), &mut old, now).await,
        Err(LockError::Lost)
    ));
    assert!(matches!(
        lock::release(&objects, &env(), &old).await,
        Err(LockError::Lost)
    ));
    let (holder, _) = lock::read(&objects, &env()).await.unwrap().unwrap();
    assert_ne!(holder.job, job("d-old"));
}

#[tokio::test]
async fn a_live_lock_is_renewed_released_and_then_free_again() {
    let world = World::new().await;
    let objects = S3Objects::new(world.s3.clone(), &world.bucket);
    let now = Utc::now();
    let mut held = lock::acquire(&objects, &env(), Lock::new(job("d1"), "alice", now), now)
        .await
        .unwrap();

    let later = now + Duration::minutes(15);
    lock::renew(&objects, &env(), &mut held, later)
        .await
        .unwrap();
    // Not expired at the first expiry, thanks to the renewal.
    let err = lock::acquire(
        &objects,
        &env(),
        Lock::new(job("d2"), "bob", now + Duration::minutes(25)),
        now + Duration::minutes(25),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("deploy d1 by alice"), "{err}");

    lock::release(&objects, &env(), &held).await.unwrap();
    assert!(lock::read(&objects, &env()).await.unwrap().is_none());
    lock::acquire(&objects, &env(), Lock::new(job("d2"), "bob", now), now)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_conditional_delete_removes_only_the_version_it_names() {
    let world = World::new().await;
    let objects = S3Objects::new(world.s3.clone(), &world.bucket);
    let key = "hello/prod/lock";
    let first = objects
        .put(
            key,
            b"one".to_vec(),
            "text/plain",
            slipway_core::objects::Write::Always,
        )
        .await
        .unwrap();
    let second = objects
        .put(
            key,
            b"two".to_vec(),
            "text/plain",
            slipway_core::objects::Write::Always,
        )
        .await
        .unwrap();
    assert_ne!(first, second);

    // A holder whose version was overwritten meanwhile removes nothing.
    assert!(matches!(
        objects.delete_if_match(key, &first).await,
        Err(slipway_core::objects::ObjectError::Precondition { .. })
    ));
    assert_eq!(world.get(key).await.as_deref(), Some(&b"two"[..]));

    objects.delete_if_match(key, &second).await.unwrap();
    assert_eq!(world.get(key).await, None);
    assert!(matches!(
        objects.delete_if_match(key, &second).await,
        Err(slipway_core::objects::ObjectError::Precondition { .. })
    ));
}
