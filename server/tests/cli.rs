//! The `parley-server` binary: `token`, `migrate`, and `serve` with a graceful stop on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_parley-server");

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("PARLEY_DATABASE_URL")
        .output()
        .expect("run parley-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn token_prints_only_a_jwt_signed_with_a_private_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = run(
        dir.path(),
        &[
            "token", "--tenant", "acme", "--sub", "alice", "--kind", "service", "--ttl", "5m",
        ],
    );
    assert!(ok, "{stderr}");
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(stdout.lines().count(), 1);
    let key = dir.path().join("parley.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The key file is reused: a second token verifies with the same secret.
    let before = std::fs::read(&key).expect("read key");
    let (ok, _, _) = run(dir.path(), &["token", "--tenant", "acme", "--sub", "bob"]);
    assert!(ok);
    assert_eq!(std::fs::read(&key).expect("read key"), before);
    // A bad kind is refused.
    let (ok, _, stderr) = run(
        dir.path(),
        &["token", "--tenant", "acme", "--sub", "x", "--kind", "root"],
    );
    assert!(!ok && stderr.contains("root"), "{stderr}");
}

#[test]
fn migrate_up_status_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let (ok, _, stderr) = run(dir.path(), &["migrate", "status", "--database-url", &url]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(dir.path(), &["migrate", "up", "--database-url", &url]);
    assert!(ok, "{stderr}");
    let (ok, status, _) = run(dir.path(), &["migrate", "status", "--database-url", &url]);
    assert!(ok);
    let all = <parley_migration::Migrator as parley_migration::MigratorTrait>::migrations().len();
    assert_eq!(
        status.lines().filter(|l| l.contains("Applied")).count(),
        all,
        "{status}"
    );
    let (ok, _, stderr) = run(dir.path(), &["migrate", "down", "--database-url", &url]);
    assert!(ok, "{stderr}");
    let (_, status, _) = run(dir.path(), &["migrate", "status", "--database-url", &url]);
    assert_eq!(
        status.lines().filter(|l| l.contains("Applied")).count(),
        all - 1,
        "{status}"
    );
}

#[test]
fn an_unknown_sqlite_synchronous_mode_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, stderr) = run(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sqlite-synchronous",
            "off",
        ],
    );
    assert!(!ok, "the server must not start");
    assert!(
        stderr.contains("--sqlite-synchronous") && stderr.contains("full"),
        "the error names the flag and its values: {stderr}"
    );
    assert!(
        !dir.path().join("parley.db").exists(),
        "nothing is created before the flags are read"
    );
}

#[cfg(unix)]
#[test]
fn serve_logs_each_rpc_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--listen", &listen, "--log-format", "json"])
        .env_remove("PARLEY_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("the server logs until it listens")
            .expect("a log line");
        if line.contains("listening") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
    }
    assert!(
        dir.path().join("parley.db").exists(),
        "sqlite://parley.db is created in the working directory"
    );
    // One RPC without a token: logged as one JSON line with its code, inside the RPC's span
    // (which names the method).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client =
            parley::pb::conversation_service_client::ConversationServiceClient::new(channel);
        let status = client
            .list_conversations(parley::pb::ListConversationsRequest::default())
            .await
            .expect_err("no token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    });
    let line = lines
        .next()
        .expect("a log line for the RPC")
        .expect("a log line");
    let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(json["span"]["name"], "rpc", "{line}");
    assert_eq!(json["span"]["method"], "ListConversations", "{line}");
    assert_eq!(json["reason"], "TOKEN_MISSING");
    assert!(json["latency_ms"].is_number());

    // A call with a token: its span also names the tenant and the principal.
    let (ok, token, stderr) = run(dir.path(), &["token", "--tenant", "acme", "--sub", "alice"]);
    assert!(ok, "{stderr}");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client =
            parley::pb::conversation_service_client::ConversationServiceClient::new(channel);
        let mut request = tonic::Request::new(parley::pb::ListConversationsRequest::default());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.trim()).parse().expect("ascii"),
        );
        client
            .list_conversations(request)
            .await
            .expect("with a token");
    });
    let json = loop {
        let line = lines
            .next()
            .expect("a log line for the second RPC")
            .expect("a log line");
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if json["message"] == "rpc" {
            break json;
        }
    };
    assert_eq!(json["code"], "Ok", "{json}");
    assert_eq!(json["span"]["tenant"], "acme", "{json}");
    assert_eq!(json["span"]["principal"], "alice", "{json}");
    assert_eq!(json["span"]["act_as"], "", "{json}");

    stop_with_sigterm(&mut child);
}

#[test]
fn tls_flags_come_in_pairs_and_must_be_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, stderr) = run(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--tls-cert", "server.pem"],
    );
    assert!(!ok && stderr.contains("--tls-key"), "{stderr}");
    // A certificate that cannot be read fails the start, not the first call.
    let (ok, _, stderr) = run(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "missing.pem",
            "--tls-key",
            "missing-key.pem",
        ],
    );
    assert!(!ok && stderr.contains("missing.pem"), "{stderr}");
}

/// `--metrics-listen` serves Prometheus text, and a call's `traceparent` shows in its span.
#[cfg(unix)]
#[test]
fn serve_takes_the_callers_traceparent_and_serves_metrics() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--listen", &listen, "--log-format", "json"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--sqlite-synchronous", "full"])
        .env_remove("PARLEY_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines().map(|line| {
        let line = line.expect("a log line");
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        json
    });
    // The metrics address is logged before the gRPC listener's line.
    let mut metrics_addr = None;
    let started = Instant::now();
    loop {
        let json = lines.next().expect("the server logs until it listens");
        if let Some(addr) = json["addr"].as_str() {
            metrics_addr = Some(addr.parse::<std::net::SocketAddr>().expect("an address"));
        }
        if json["message"] == "parley-server listening" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
    }
    let metrics_addr = metrics_addr.expect("the metrics address is logged");
    assert_ne!(metrics_addr.port(), 0);

    let (ok, token, stderr) = run(dir.path(), &["token", "--tenant", "acme", "--sub", "alice"]);
    assert!(ok, "{stderr}");
    let call = |traceparent: &str| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            let mut client =
                parley::pb::conversation_service_client::ConversationServiceClient::new(channel);
            let mut request = tonic::Request::new(parley::pb::ListConversationsRequest::default());
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", token.trim()).parse().expect("ascii"),
            );
            request
                .metadata_mut()
                .insert("traceparent", traceparent.parse().expect("ascii"));
            client
                .list_conversations(request)
                .await
                .expect("a malformed traceparent is not an error");
        });
    };
    let mut rpc_line = || loop {
        let json = lines.next().expect("a log line for the RPC");
        if json["message"] == "rpc" {
            break json;
        }
    };

    call("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let json = rpc_line();
    assert_eq!(json["code"], "Ok", "{json}");
    assert_eq!(
        json["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{json}"
    );
    assert_eq!(json["span"]["parent_span_id"], "00f067aa0ba902b7", "{json}");

    // A malformed one is ignored: the call is answered, its span names no trace.
    call("00-not-a-trace-01");
    let json = rpc_line();
    assert_eq!(json["code"], "Ok", "{json}");
    assert!(json["span"].get("trace_id").is_none(), "{json}");
    assert!(json["span"].get("parent_span_id").is_none(), "{json}");

    // The endpoint counted both calls.
    let mut stream = std::net::TcpStream::connect(metrics_addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .lines()
            .any(|l| l == r#"parley_rpc_calls_total{method="ListConversations",code="OK"} 2"#),
        "{response}"
    );

    stop_with_sigterm(&mut child);
    // The metrics port closed with the server.
    assert!(std::net::TcpStream::connect(metrics_addr).is_err());
}

/// Sends SIGTERM and waits (up to 30 s) for a graceful exit with status 0.
#[cfg(unix)]
fn stop_with_sigterm(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "a graceful stop exits 0: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
