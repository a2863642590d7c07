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
    assert_eq!(
        status.lines().filter(|l| l.contains("Applied")).count(),
        5,
        "{status}"
    );
    let (ok, _, stderr) = run(dir.path(), &["migrate", "down", "--database-url", &url]);
    assert!(ok, "{stderr}");
    let (_, status, _) = run(dir.path(), &["migrate", "status", "--database-url", &url]);
    assert_eq!(
        status.lines().filter(|l| l.contains("Applied")).count(),
        4,
        "{status}"
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
    // One RPC without a token: logged as one JSON line with its method and code.
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
    assert_eq!(json["method"], "ListConversations");
    assert_eq!(json["reason"], "TOKEN_MISSING");
    assert!(json["latency_ms"].is_number());

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
