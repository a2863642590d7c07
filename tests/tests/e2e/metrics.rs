//! The Prometheus endpoint (SPEC §5): scraped over HTTP, its counters move by exactly the calls
//! made, by method and gRPC code; the latency histogram counts the same calls; the pool and
//! watch gauges are there. Without `metrics_listen` no metrics port is opened.

use std::{collections::BTreeMap, net::SocketAddr};

use parley_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// One sample: a metric name and its labels.
type Series = (String, BTreeMap<String, String>);

/// An HTTP/1.1 GET of `path`: the status code, the headers (names lowercased) and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the endpoint answers and closes")
    .expect("read the response");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers, then a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Parses Prometheus text (format 0.0.4): every sample line, by name and labels.
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("labels end with }");
                (name.to_owned(), parse_labels(rest))
            }
        };
        assert!(
            out.insert((name, labels), value).is_none(),
            "a series appears once: {line}"
        );
    }
    out
}

/// `a="x",b="y"`, with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("key=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

async fn scrape(app: &TestApp) -> BTreeMap<Series, f64> {
    let addr = app.metrics_addr.expect("metrics are on");
    let (status, headers, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&body)
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn value(m: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(&series(name, labels)).copied().unwrap_or(0.0)
}

fn calls(m: &BTreeMap<Series, f64>, method: &str, code: &str) -> f64 {
    value(
        m,
        "parley_rpc_calls_total",
        &[("method", method), ("code", code)],
    )
}

fn latency_count(m: &BTreeMap<Series, f64>, method: &str) -> f64 {
    value(
        m,
        "parley_rpc_duration_seconds_count",
        &[("method", method)],
    )
}

/// The sum of every series of `name`.
fn total(m: &BTreeMap<Series, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

async fn a_scrape_counts_each_call_by_method_and_code(db: Db) {
    let app = spawn_app_with(db, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice.create_group("t", &["bob"]).await.expect("create");
    let before_state = alice.snapshot(&c.id).await;
    let svc = app.service(TENANT);
    let before = scrape(&app).await;

    // One OK, two NOT_FOUND, one PERMISSION_DENIED.
    alice
        .get(&c.id)
        .await
        .expect("alice reads her conversation");
    for _ in 0..2 {
        expect_err(
            alice.get(&uuid::Uuid::now_v7().to_string()).await,
            Code::NotFound,
            ErrorReason::ConversationNotFound,
        );
    }
    expect_err(
        alice.upsert_user("zoe", Kind::Internal).await,
        Code::PermissionDenied,
        ErrorReason::NoPermission,
    );

    let after = scrape(&app).await;
    assert_eq!(
        calls(&after, "GetConversation", "OK") - calls(&before, "GetConversation", "OK"),
        1.0
    );
    assert_eq!(
        calls(&after, "GetConversation", "NOT_FOUND")
            - calls(&before, "GetConversation", "NOT_FOUND"),
        2.0
    );
    assert_eq!(
        calls(&after, "UpsertUser", "PERMISSION_DENIED")
            - calls(&before, "UpsertUser", "PERMISSION_DENIED"),
        1.0
    );
    // Those four and nothing else: a scrape is not a call.
    assert_eq!(
        total(&after, "parley_rpc_calls_total") - total(&before, "parley_rpc_calls_total"),
        4.0
    );
    // This server never refused an UpsertUser before: the series starts at the call.
    assert_eq!(calls(&after, "UpsertUser", "PERMISSION_DENIED"), 1.0);

    // The histogram counts the same calls, and its buckets add up.
    assert_eq!(
        latency_count(&after, "GetConversation") - latency_count(&before, "GetConversation"),
        3.0
    );
    assert_eq!(
        latency_count(&after, "UpsertUser") - latency_count(&before, "UpsertUser"),
        1.0
    );
    for method in ["GetConversation", "UpsertUser"] {
        let count = latency_count(&after, method);
        assert_eq!(
            value(
                &after,
                "parley_rpc_duration_seconds_bucket",
                &[("method", method), ("le", "+Inf")]
            ),
            count
        );
        assert!(
            value(
                &after,
                "parley_rpc_duration_seconds_bucket",
                &[("method", method), ("le", "0.0005")]
            ) <= count
        );
        assert!(
            value(
                &after,
                "parley_rpc_duration_seconds_sum",
                &[("method", method)]
            ) > 0.0
        );
    }
    // Every method's calls over all codes equal its histogram count.
    let methods: Vec<String> = after
        .keys()
        .filter(|(n, _)| n == "parley_rpc_calls_total")
        .filter_map(|(_, l)| l.get("method").cloned())
        .collect();
    for method in &methods {
        let by_code: f64 = after
            .iter()
            .filter(|((n, l), _)| n == "parley_rpc_calls_total" && l.get("method") == Some(method))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(by_code, latency_count(&after, method), "{method}");
    }

    // The pool gauges: the pool opens at least one connection, and none is lent out between
    // calls beyond the pool's size.
    let max = value(&after, "parley_db_pool_connections_max", &[]);
    let idle = value(&after, "parley_db_pool_connections_idle", &[]);
    let in_use = value(&after, "parley_db_pool_connections_in_use", &[]);
    assert!(max > 0.0, "max connections {max}");
    assert!(idle >= 0.0 && in_use >= 0.0 && idle + in_use <= max);
    assert!(after.contains_key(&series("parley_db_pool_connections_in_use", &[])));
    // Registered before any stream exists, so the names are stable.
    assert_eq!(
        after.get(&series("parley_open_watch_streams", &[])),
        Some(&0.0)
    );
    assert_eq!(
        after.get(&series("parley_sqlite_writer_queue_depth", &[])),
        Some(&0.0)
    );

    // The refused calls wrote nothing.
    assert_eq!(alice.snapshot(&c.id).await, before_state);
    expect_err(
        svc.get_user("zoe").await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
}

/// The watch gauge counts the WatchTimeline streams open now: one more while a watch is open,
/// back when its reader goes away.
async fn the_watch_gauge_counts_open_streams(db: Db) {
    let app = spawn_app_with(db, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await;
    seed_standard(&app).await;
    let alice = app.user(TENANT, "alice");
    let c = alice
        .create_group("watched", &["bob"])
        .await
        .expect("create");
    let open = |m: &BTreeMap<Series, f64>| value(m, "parley_open_watch_streams", &[]);
    assert_eq!(open(&scrape(&app).await), 0.0);
    let watch = |who: &Caller| {
        let who = who.clone();
        let id = c.id.clone();
        async move {
            who.conv()
                .watch_timeline(who.req(pb::WatchTimelineRequest {
                    conversation_id: id,
                    after_seq: 0,
                }))
                .await
                .expect("watch")
                .into_inner()
        }
    };
    let first = watch(&alice).await;
    let second = watch(&app.user(TENANT, "bob")).await;
    assert_eq!(open(&scrape(&app).await), 2.0);
    drop(first);
    // The server learns of the reader's going at once (the stream's reset), not at a send.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while open(&scrape(&app).await) != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gauge never came down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(second);
    assert_eq!(calls(&scrape(&app).await, "WatchTimeline", "OK"), 2.0);
}

async fn the_endpoint_serves_only_its_path(db: Db) {
    let app = spawn_app_with(db, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await;
    let addr = app.metrics_addr.expect("metrics are on");
    assert_ne!(addr.port(), 0, "the bound port, not the configured 0");
    assert_ne!(addr, app.addr, "its own port, not the gRPC one");
    let (status, _, _) = get(addr, "/").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(addr, "/metrics/x").await;
    assert_eq!(status, 404);
    // Two servers in one process count apart: this one has answered no call.
    let scraped = scrape(&app).await;
    assert_eq!(total(&scraped, "parley_rpc_calls_total"), 0.0);
}

async fn without_metrics_listen_no_port_is_opened(db: Db) {
    assert_eq!(
        parley_server::Config::new("sqlite::memory:", "parley.key").metrics_listen,
        None,
        "off unless asked for"
    );
    let app = spawn_app(db).await;
    assert_eq!(app.metrics_addr, None);
    // The server still answers, and counts nothing anywhere.
    app.user(TENANT, "alice")
        .list_conversations()
        .await
        .expect("list");
    assert_eq!(app.metrics_addr, None);
}

both_dbs!(
    a_scrape_counts_each_call_by_method_and_code,
    the_endpoint_serves_only_its_path,
    without_metrics_listen_no_port_is_opened,
    the_watch_gauge_counts_open_streams
);
