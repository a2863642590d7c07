//! A measurement, not a check (ignored; run it by name): a directory sync into an empty
//! database, one UpsertUser after another with a request id each, must cost as much at the end
//! as at the start. Prints the mean and median call time of the first and the last tenth:
//!
//! ```text
//! PARLEY_IMPORT_USERS=10000 cargo test -p parley-tests --test e2e -- --ignored \
//!     directory_import:: --nocapture --test-threads 1
//! ```
//!
//! PostgreSQL once made a generic plan for a statement a pooled connection had run five times,
//! while the table was nearly empty, and kept it: a primary-key look-up on `users` that walked
//! the `users_name` index and filtered thousands of rows, ever dearer as the directory grew.

use std::time::{Duration, Instant};

use parley_tests::*;

/// Users imported when `PARLEY_IMPORT_USERS` is unset.
const DEFAULT_USERS: usize = 10_000;

async fn import(db: Db) {
    let n = std::env::var("PARLEY_IMPORT_USERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_USERS)
        .max(10);
    let app = spawn_app_with(db, |config| {
        config.limits.rate_limit_per_second = 0;
        config.limits.service_rate_limit_per_second = 0;
    })
    .await;
    let service = app.service(TENANT);
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("user{i:06}");
        let started = Instant::now();
        service
            .upsert_user(&id, Kind::Internal)
            .await
            .unwrap_or_else(|e| panic!("upsert {id}: {e:?}"));
        times.push(started.elapsed());
    }
    let tenth = n / 10;
    let mean = |part: &[Duration]| part.iter().sum::<Duration>() / part.len() as u32;
    // The median too: other work on the machine lengthens a few calls a lot.
    let median = |part: &[Duration]| {
        let mut sorted = part.to_vec();
        sorted.sort();
        sorted[sorted.len() / 2]
    };
    let (first, last) = (&times[..tenth], &times[n - tenth..]);
    println!(
        "{db:?}: {n} UpsertUser calls into an empty directory, per call: first tenth mean \
         {:.2?} median {:.2?}, last tenth mean {:.2?} median {:.2?} (medians {:.2}x)",
        mean(first),
        median(first),
        mean(last),
        median(last),
        median(last).as_secs_f64() / median(first).as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run by name, see the module's documentation"]
async fn sqlite() {
    import(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run by name, see the module's documentation"]
async fn postgres() {
    import(Db::Postgres).await;
}
