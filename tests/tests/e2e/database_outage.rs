//! When PostgreSQL refuses connections, calls fail with UNAVAILABLE `DATABASE_UNAVAILABLE`
//! (never a hang or a panic), the health service reports NOT_SERVING, and the server recovers
//! by itself once the database is back. (PostgreSQL only: an embedded SQLite file cannot be
//! taken away from a running server in the same way.)

use parley::pb::ErrorReason;
use parley_tests::*;
use sea_orm::ConnectionTrait;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Polls the health service until it reports `want` (it checks the database every 2 s).
async fn wait_for_health(app: &TestApp, want: ServingStatus) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = app
            .health()
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health needs no token")
            .into_inner()
            .status();
        if status == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health stayed {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_is_unavailable_then_recovers() {
    let app = spawn_app(Db::Postgres).await;
    wait_for_health(&app, ServingStatus::Serving).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("before", &[]).await.expect("create");

    let admin_url = std::env::var("PARLEY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = sea_orm::Database::connect(&admin_url)
        .await
        .expect("admin connection");
    let name = app.database_name().expect("a PostgreSQL database");
    // Refuse new connections and drop the server's open ones.
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .expect("refuse connections");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .expect("terminate backends");

    let started = std::time::Instant::now();
    let status = alice.get(&c.id).await.expect_err("the database is gone");
    eprintln!("outage answered in {:?}: {status:?}", started.elapsed());
    assert_error(&status, Code::Unavailable, ErrorReason::DatabaseUnavailable);
    wait_for_health(&app, ServingStatus::NotServing).await;

    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .expect("allow connections");
    let back = alice
        .get(&c.id)
        .await
        .expect("the server recovers by itself");
    assert_eq!(back.id, c.id);
    wait_for_health(&app, ServingStatus::Serving).await;
}
