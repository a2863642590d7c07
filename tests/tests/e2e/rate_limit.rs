//! Per-principal rate limiting: RESOURCE_EXHAUSTED with reason RATE_LIMITED and a RetryInfo
//! delay; other principals are not affected.

use parley::pb::ErrorReason;
use parley_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

async fn past_its_burst_a_principal_is_told_when_to_retry(db: Db) {
    let app = spawn_app_with(db, |c| c.limits.rate_limit_per_second = 1).await;
    let alice = app.user(TENANT, "alice");
    // A rate of 1 per second allows bursts of 2.
    alice.list_conversations().await.expect("first call");
    alice.list_conversations().await.expect("second call");
    let status = alice
        .list_conversations()
        .await
        .expect_err("third call in the same second");
    assert_error(&status, Code::ResourceExhausted, ErrorReason::RateLimited);
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(
        delay.as_millis() > 0 && delay.as_secs() <= 1,
        "retry delay {delay:?}"
    );

    // Another principal has its own budget.
    app.user(TENANT, "bob")
        .list_conversations()
        .await
        .expect("bob is not limited");

    // After the delay, alice may call again.
    tokio::time::sleep(delay).await;
    alice.list_conversations().await.expect("after the delay");
}

async fn a_limited_mutation_writes_nothing(db: Db) {
    let app = spawn_app_with(db, |c| c.limits.rate_limit_per_second = 1).await;
    let svc = app.service(TENANT);
    svc.upsert_user("alice", Kind::Internal)
        .await
        .expect("upsert");
    svc.upsert_user("bob", Kind::Internal)
        .await
        .expect("upsert");
    let status = svc
        .upsert_user("carol", Kind::Internal)
        .await
        .expect_err("limited");
    assert_error(&status, Code::ResourceExhausted, ErrorReason::RateLimited);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    expect_err(
        svc.get_user("carol").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
}

both_dbs!(
    past_its_burst_a_principal_is_told_when_to_retry,
    a_limited_mutation_writes_nothing
);
