//! A real `nats-server` with JetStream for the export tests: each test starts its own on an
//! ephemeral port with a temporary store, so it can stop and start it again (same port, same
//! store), and reads what Parley exported straight from the stream.

use std::{collections::HashMap, process::Stdio, time::Duration};

use prost::Message as _;

use crate::pb;

/// A `nats-server -js` of the test's own; killed when dropped.
pub struct NatsServer {
    pub port: u16,
    pub url: String,
    /// Its monitoring port (`/varz`).
    monitor: u16,
    store: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

/// The `nats-server` binary: `$PARLEY_TEST_NATS_SERVER`, else the first found on `PATH`,
/// `/usr/sbin` or `/usr/local/bin`.
fn binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("PARLEY_TEST_NATS_SERVER") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect(
            "nats-server is not installed (the Debian package nats-server; .ci/run installs it)",
        )
}

impl NatsServer {
    /// Starts one on a free port and waits until it takes connections (on other ports if a
    /// port was taken in between).
    pub async fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let store = tempfile::tempdir().expect("a store directory");
        let mut server = Self {
            port: 0,
            monitor: 0,
            url: String::new(),
            store,
            child: None,
        };
        for _ in 0..3 {
            let (port, monitor) = (free(), free());
            server.port = port;
            server.monitor = monitor;
            server.url = format!("nats://127.0.0.1:{port}");
            if server.try_start().await {
                return server;
            }
        }
        panic!("nats-server did not start on three pairs of free ports");
    }

    /// Starts it again after [`NatsServer::stop`], on the same port with the same store.
    pub async fn resume(&mut self) {
        for _ in 0..3 {
            if self.try_start().await {
                return;
            }
        }
        panic!("nats-server did not start again on {}", self.url);
    }

    /// Starts the process and waits up to 30 s for it to take connections; `false` if it
    /// exited first (a port taken) or never did.
    async fn try_start(&mut self) -> bool {
        let mut child = tokio::process::Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        for _ in 0..600 {
            if async_nats::connect(self.url.as_str()).await.is_ok() {
                self.child = Some(child);
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill().await;
        false
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// A JetStream context on it.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url.as_str())
            .await
            .expect("connect to nats-server");
        async_nats::jetstream::new(client)
    }

    /// The connections it has accepted since it started (`total_connections` of `/varz` on
    /// its monitoring port).
    pub async fn connections_ever(&self) -> u64 {
        let body = http_get(([127, 0, 0, 1], self.monitor).into(), "/varz").await;
        let varz: serde_json::Value = serde_json::from_str(&body).expect("/varz is JSON");
        varz["total_connections"]
            .as_u64()
            .expect("total_connections")
    }
}

/// The body of `GET path` at `addr` (HTTP/1.0, the connection closed by the server).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect for a GET");
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .expect("send a GET");
    let mut reply = String::new();
    tcp.read_to_string(&mut reply)
        .await
        .expect("read the reply");
    reply
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned())
}

/// The value of the metric `name` (no labels) a server's `/metrics` at `addr` shows, 0 if
/// absent.
pub async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    http_get(addr, "/metrics")
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// One message of the `PARLEY` stream.
#[derive(Clone, Debug)]
pub struct Exported {
    pub stream_seq: u64,
    pub subject: String,
    pub msg_id: String,
    pub kind: String,
    pub visibility: String,
    pub item: pb::TimelineItem,
}

/// Every message of the `PARLEY` stream once it holds at least `expected`, in stream order;
/// panics if it does not within `wait`.
pub async fn exported(nats: &NatsServer, expected: u64, wait: Duration) -> Vec<Exported> {
    let js = nats.jetstream().await;
    let deadline = tokio::time::Instant::now() + wait;
    let mut stream = loop {
        match js.get_stream("PARLEY").await {
            Ok(mut stream) => {
                let held = stream.info().await.map_or(0, |i| i.state.messages);
                if held >= expected {
                    break stream;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!("the stream holds {held} messages of {expected} after {wait:?}");
                }
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("no PARLEY stream after {wait:?}: {e}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let info = stream.info().await.expect("stream info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let message = stream.get_raw_message(seq).await.expect("a stored message");
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        out.push(Exported {
            stream_seq: seq,
            subject: message.subject.to_string(),
            msg_id: header("Nats-Msg-Id"),
            kind: header("Parley-Item"),
            visibility: header("Parley-Visibility"),
            item: pb::TimelineItem::decode(message.payload.as_ref()).expect("a TimelineItem"),
        });
    }
    out
}

/// The exported items by subject, each subject's in stream order.
pub fn by_subject(messages: &[Exported]) -> HashMap<String, Vec<Exported>> {
    let mut out: HashMap<String, Vec<Exported>> = HashMap::new();
    for m in messages {
        out.entry(m.subject.clone()).or_default().push(m.clone());
    }
    out
}
