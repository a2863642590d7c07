//! Throughput and latency of the roster's hot paths against a real server, on SQLite and on
//! PostgreSQL: `cargo bench -p parley-tests --bench roster`. Prints a table; asserts nothing
//! about time (speed is measured here, not in the test suite).

use std::time::{Duration, Instant};

use parley::pb;
use parley_tests::*;

struct Row {
    what: &'static str,
    n: usize,
    elapsed: Duration,
}

impl Row {
    fn print(&self, db: Db) {
        let per = self.elapsed / self.n.max(1) as u32;
        let rate = self.n as f64 / self.elapsed.as_secs_f64();
        println!(
            "{:<9} {:<52} {:>6} {:>12.3?} {:>10.0}/s",
            format!("{db:?}"),
            self.what,
            self.n,
            per,
            rate
        );
    }
}

async fn timed<F, Fut>(what: &'static str, n: usize, f: F) -> Row
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    f().await;
    Row {
        what,
        n,
        elapsed: started.elapsed(),
    }
}

async fn bench(db: Db) {
    let app = spawn_app_with(db, |c| {
        c.limits.rate_limit_per_second = 0;
        c.limits.max_group_members = 6_000;
    })
    .await;
    let users = seed_many(&app, "u", 1_000).await;
    let owner = app.user(TENANT, "owner");
    let mut rows = Vec::new();

    // One AddParticipants of 1,000 users (the batch path), five times.
    let mut conversations = Vec::new();
    for _ in 0..5 {
        conversations.push(owner.create_group("bench", &[]).await.expect("create").id);
    }
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    rows.push(
        timed("AddParticipants, 1,000 users per call", 5, || async {
            for c in &conversations {
                owner.add_users(c, &ids).await.expect("add 1,000");
            }
        })
        .await,
    );

    // A 6,000-member group in one call, three times: more rows than one statement may bind, so
    // the inserts go in batches of 1,000.
    let members = seed_many(&app, "g", 6_000).await;
    let member_ids: Vec<&str> = members.iter().map(String::as_str).collect();
    seed_group(&app, TENANT, "everyone", &member_ids).await;
    let mut big = Vec::new();
    for _ in 0..3 {
        big.push(owner.create_group("bench", &[]).await.expect("create").id);
    }
    rows.push(
        timed(
            "AddParticipants, a 6,000-member group per call",
            3,
            || async {
                for c in &big {
                    owner
                        .add(c, vec![group_invitee("everyone")], false)
                        .await
                        .expect("add the group");
                }
            },
        )
        .await,
    );

    // One user per call, sequentially, into one conversation.
    let c = owner.create_group("bench", &[]).await.expect("create").id;
    rows.push(
        timed(
            "AddParticipants, 1 user per call, sequential",
            200,
            || async {
                for id in ids.iter().take(200) {
                    owner.add_users(&c, &[id]).await.expect("add one");
                }
            },
        )
        .await,
    );

    // 32 callers at once into one conversation (they serialize on its lock).
    let c = owner.create_group("bench", &[]).await.expect("create").id;
    rows.push(
        timed(
            "AddParticipants, 1 user per call, 32 concurrent",
            320,
            || async {
                let calls = ids.iter().take(320).map(|id| {
                    let owner = owner.clone();
                    let c = c.clone();
                    let id = (*id).to_owned();
                    async move { owner.add_users(&c, &[&id]).await.expect("add one") }
                });
                futures::future::join_all(calls).await;
            },
        )
        .await,
    );

    // Messages, then paging the timeline at its start and at its end.
    rows.push(
        timed("SendMessage, sequential", 500, || async {
            for i in 0..500 {
                owner.send(&c, &format!("message {i}")).await.expect("send");
            }
        })
        .await,
    );
    let page = |token: String, order: pb::Order| {
        let owner = owner.clone();
        let c = c.clone();
        async move {
            owner
                .conv()
                .list_timeline(owner.req(pb::ListTimelineRequest {
                    conversation_id: c,
                    order: order as i32,
                    page_size: 100,
                    page_token: token,
                }))
                .await
                .expect("page")
                .into_inner()
        }
    };
    rows.push(
        timed("ListTimeline, first page of 100", 200, || async {
            for _ in 0..200 {
                page(String::new(), pb::Order::OldestFirst).await;
            }
        })
        .await,
    );
    let mut token = String::new();
    for _ in 0..7 {
        token = page(token, pb::Order::OldestFirst).await.next_page_token;
    }
    rows.push(
        timed(
            "ListTimeline, 8th page of 100 (by key, not offset)",
            200,
            || async {
                for _ in 0..200 {
                    page(token.clone(), pb::Order::OldestFirst).await;
                }
            },
        )
        .await,
    );
    for row in &rows {
        row.print(db);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "{:<9} {:<52} {:>6} {:>12} {:>12}",
        "database", "operation", "calls", "per call", "rate"
    );
    for db in [Db::Sqlite, Db::Postgres] {
        runtime.block_on(bench(db));
    }
}
