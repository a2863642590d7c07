//! TLS: a server started with a certificate (`--tls-cert`, `--tls-key`) serves gRPC over TLS
//! only; the SDK's `tls` feature connects to it with the deployment's CA; a client that does not
//! trust that CA, or speaks plaintext, gets nowhere. The certificates are test fixtures signed by
//! a test CA (`tests/fixtures/README.md`).

use std::path::PathBuf;

use parley_sdk::{Client, Error, RetryPolicy, UpsertUser};
use parley_tests::*;
use tonic::transport::{Certificate, ClientTlsConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The call never reached the service: the connection failed or was dropped (which of these
/// depends on how far the handshake got), never an answer from Parley.
fn assert_refused_by_transport(error: &Error) {
    assert!(
        matches!(
            error,
            Error::Transport { .. } | Error::Unavailable { .. } | Error::Cancelled { .. }
        ),
        "{error:?}"
    );
    assert_eq!(error.reason(), None, "no Parley reason: {error:?}");
}

async fn the_sdk_talks_tls_to_a_tls_server(db: Db) {
    let app = spawn_app_with(db, |config| {
        config.tls = Some(parley_server::TlsFiles {
            cert: fixture("tls_server.pem"),
            key: fixture("tls_server_key.pem"),
        });
    })
    .await;
    let token = app.token(TENANT, "svc-tls", Kind::Service, None);
    let ca = std::fs::read(fixture("tls_ca.pem")).expect("the test CA");
    let secure = Client::builder(format!("https://127.0.0.1:{}", app.addr.port()))
        .bearer_token(&token)
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))
        .connect()
        .await
        .expect("a TLS connection trusting the test CA");
    let directory = secure.directory();
    directory
        .upsert_user(UpsertUser::internal("alice"))
        .await
        .expect("a call over TLS");
    assert_eq!(
        directory.get_user("alice").await.expect("read back").id,
        "alice"
    );

    // Plaintext to the TLS port is refused.
    let plain = Client::builder(format!("http://127.0.0.1:{}", app.addr.port()))
        .bearer_token(&token)
        .retry_policy(RetryPolicy::disabled())
        .connect_lazy()
        .expect("a lazy client");
    let error = plain
        .directory()
        .get_user("alice")
        .await
        .expect_err("plaintext is refused");
    assert_refused_by_transport(&error);

    // A client that trusts only the platform's roots does not accept the test CA's certificate.
    let untrusting = Client::builder(format!("https://127.0.0.1:{}", app.addr.port()))
        .bearer_token(&token)
        .retry_policy(RetryPolicy::disabled())
        .connect()
        .await;
    let error = match untrusting {
        Err(e) => e,
        Ok(client) => client
            .directory()
            .get_user("alice")
            .await
            .expect_err("an untrusted certificate is refused"),
    };
    assert_refused_by_transport(&error);
}

both_dbs!(the_sdk_talks_tls_to_a_tls_server);
