//! Prometheus metrics (SPEC §5): calls by method and gRPC code, latency histograms, database
//! pool use, open watch streams and the SQLite writer queue, served as Prometheus text (format
//! 0.0.4) at `/metrics` on `--metrics-listen`.
//!
//! Each [`App`](crate::App) owns its own [`Registry`] rather than a process-wide recorder, so
//! several servers in one process (the end-to-end tests, replicas) never count each other's
//! calls.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Bytes,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use sea_orm::DatabaseConnectionType;
use tokio::net::TcpListener;

/// The path the endpoint serves; every other path is 404.
pub const METRICS_PATH: &str = "/metrics";

/// Upper bounds of the RPC latency buckets, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Scrapes served at once; past it a connection is closed at once. A scraper needs one.
const MAX_SCRAPE_CONNECTIONS: usize = 16;
/// How long one scrape connection may last, so a client that sends half a request and stalls
/// cannot hold a connection slot.
const SCRAPE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The labels of `parley_rpc_calls_total`: bounded, the methods times the 17 gRPC codes (the
/// error reason stays in the log line; as a label it would multiply the series).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

/// The labels of `parley_rpc_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The database pool the gauges sample at each scrape.
#[derive(Debug)]
enum Pool {
    Sqlite(sea_orm::sqlx::SqlitePool),
    /// SQLite's readers, run on the caller's thread.
    Lite(std::sync::Arc<crate::store::lite::Pool>),
    /// PostgreSQL's connections, in Parley's own pool.
    Pg(std::sync::Arc<crate::store::pg::Pool>),
    /// A connection without a sqlx pool: the pool gauges stay at 0.
    None,
}

impl Pool {
    fn of(db: &crate::store::Conn) -> Self {
        let db = match db {
            crate::store::Conn::Lite(pool) => return Pool::Lite(pool.clone()),
            crate::store::Conn::Pg(pool) => return Pool::Pg(pool.clone()),
            crate::store::Conn::Sea(db) => db,
        };
        // The getters panic on another backend, so look at the variant first.
        match &db.inner {
            DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
                Pool::Sqlite(db.get_sqlite_connection_pool().clone())
            }
            _ => Pool::None,
        }
    }

    /// (open connections, idle connections, the most the pool opens).
    fn usage(&self) -> (u32, usize, u32) {
        match self {
            Pool::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            Pool::Lite(p) => {
                let (open, idle, max) = p.usage();
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                (count(open), idle, count(max))
            }
            Pool::Pg(p) => {
                let sizes = p.sizes();
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                (count(sizes.open), sizes.idle, count(sizes.max))
            }
            Pool::None => (0, 0, 0),
        }
    }
}

/// One server's metrics. Recording is a few atomic operations under a short read lock, never
/// held across an await.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pool: Pool,
    pool_in_use: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    watch_streams: Gauge,
    writer_queue_depth: Gauge,
    /// The SQLite writer whose queue the gauge samples (`None` on PostgreSQL).
    writer: Option<crate::store::Writer>,
    export: crate::export::ExportMetrics,
}

impl Metrics {
    /// Registers every metric, so that each name is there from the first scrape, and samples
    /// `db`'s pool at each scrape.
    pub fn new(db: &crate::store::Conn) -> Self {
        let mut registry = Registry::with_prefix("parley");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "rpc_calls",
            "RPCs answered, by method and gRPC status code",
            calls.clone(),
        );
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time from receiving an RPC to answering it, by method",
            Unit::Seconds,
            latency.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let pool_in_use = gauge(
            &mut registry,
            "db_pool_connections_in_use",
            "Database connections lent out to a statement or transaction",
        );
        let pool_idle = gauge(
            &mut registry,
            "db_pool_connections_idle",
            "Open database connections waiting in the pool",
        );
        let pool_max = gauge(
            &mut registry,
            "db_pool_connections_max",
            "The most database connections the pool opens",
        );
        let watch_streams = gauge(
            &mut registry,
            "open_watch_streams",
            "Watch streams open on this replica",
        );
        let writer_queue_depth = gauge(
            &mut registry,
            "sqlite_writer_queue_depth",
            "Writes waiting for the SQLite writer (0 on PostgreSQL)",
        );
        let export = crate::export::ExportMetrics::default();
        registry.register(
            "export_backlog_items",
            "Timeline items not yet acknowledged by JetStream, as of the export sweep's last pass",
            export.backlog_items.clone(),
        );
        registry.register(
            "export_backlog_conversations",
            "Conversations with items not yet acknowledged by JetStream, as of the export \
             sweep's last pass",
            export.backlog_conversations.clone(),
        );
        registry.register_with_unit(
            "export_backlog_age",
            "Age of the oldest timeline item not yet acknowledged by JetStream",
            Unit::Seconds,
            export.backlog_age.clone(),
        );
        registry.register(
            "export_published_items",
            "Timeline items JetStream acknowledged from this replica",
            export.published.clone(),
        );
        registry.register_with_unit(
            "export_lag",
            "Time from a timeline item's write to JetStream's acknowledgement of its publish",
            Unit::Seconds,
            export.lag.clone(),
        );
        registry.register(
            "export_duplicates",
            "Publishes JetStream acknowledged as duplicates of a message it held (dropped)",
            export.duplicates.clone(),
        );
        registry.register(
            "export_failures",
            "Export rounds or publishes to JetStream that failed",
            export.failures.clone(),
        );
        Self {
            registry,
            calls,
            latency,
            pool: Pool::of(db),
            pool_in_use,
            pool_idle,
            pool_max,
            watch_streams,
            writer_queue_depth,
            writer: None,
            export,
        }
    }

    /// Samples the queue of `db`'s SQLite writer at each scrape (nothing on PostgreSQL, where
    /// writers do not take turns).
    pub fn with_db(db: &crate::store::Db) -> Self {
        let mut metrics = Self::new(&db.read);
        metrics.writer = db.sqlite_writer().cloned();
        metrics
    }

    /// Counts one answered RPC and its latency.
    pub fn record(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// The export's metrics, for the exporter to move.
    pub fn export(&self) -> &crate::export::ExportMetrics {
        &self.export
    }

    /// The open watch streams gauge, for the streams to move.
    pub fn watch_streams(&self) -> &Gauge {
        &self.watch_streams
    }

    /// Samples the pool and writes every metric as Prometheus text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let (open, idle, max) = self.pool.usage();
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        self.pool_in_use.set((i64::from(open) - idle).max(0));
        self.pool_idle.set(idle);
        self.pool_max.set(i64::from(max));
        if let Some(writer) = &self.writer {
            self.writer_queue_depth.set(writer.queue_depth());
        }
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The name a status code has in the gRPC specification (`OK`, `NOT_FOUND`, …): the value of
/// the `code` label.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The metrics endpoint, bound (so its address is known before serving) but not yet serving.
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `metrics` until the task running it is aborted. One request per connection:
    /// scrapers open one per scrape, and no idle connection outlives the server.
    pub async fn serve(self, metrics: Arc<Metrics>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPE_CONNECTIONS));
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&metrics, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(SCRAPE_CONNECTION_TIMEOUT, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "metrics endpoint: bad connection"),
                    Err(_) => tracing::debug!("metrics endpoint: connection timed out"),
                }
                drop(slot);
            });
        }
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String, content_type: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.uri().path() != METRICS_PATH {
        return reply(
            StatusCode::NOT_FOUND,
            format!("try {METRICS_PATH}\n"),
            PLAIN,
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or HEAD\n".to_owned(),
            PLAIN,
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match metrics.render() {
        Ok(text) => reply(StatusCode::OK, text, prometheus_text::CONTENT_TYPE),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be written\n".to_owned(),
            PLAIN,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gauge_is_named_from_the_start() {
        // A connection without a pool: the pool gauges are there, at 0.
        let metrics = Metrics::new(&crate::store::Conn::default());
        let text = metrics.render().expect("render");
        for name in [
            "parley_db_pool_connections_in_use 0",
            "parley_db_pool_connections_idle 0",
            "parley_db_pool_connections_max 0",
            "parley_open_watch_streams 0",
            "parley_sqlite_writer_queue_depth 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn a_call_moves_its_counter_and_its_histogram() {
        let metrics = Metrics::new(&crate::store::Conn::default());
        metrics.record(
            "GetConversation",
            tonic::Code::NotFound,
            Duration::from_millis(3),
        );
        metrics.record(
            "GetConversation",
            tonic::Code::NotFound,
            Duration::from_secs(20),
        );
        let text = metrics.render().expect("render");
        for line in [
            r#"parley_rpc_calls_total{method="GetConversation",code="NOT_FOUND"} 2"#,
            "# TYPE parley_rpc_duration_seconds histogram",
            r#"parley_rpc_duration_seconds_bucket{method="GetConversation",le="0.0025"} 0"#,
            r#"parley_rpc_duration_seconds_bucket{method="GetConversation",le="0.005"} 1"#,
            r#"parley_rpc_duration_seconds_bucket{method="GetConversation",le="10"} 1"#,
            r#"parley_rpc_duration_seconds_bucket{method="GetConversation",le="+Inf"} 2"#,
            r#"parley_rpc_duration_seconds_count{method="GetConversation"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn code_names_are_the_specification_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
