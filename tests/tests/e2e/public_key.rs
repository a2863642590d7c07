//! A server configured with `--jwt-public-key` verifies RS256 and EdDSA tokens with it, and still
//! accepts tokens signed with the key file's HS256 secret (SPEC §5: both at once).

use std::{path::PathBuf, time::Duration};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parley::pb::ErrorReason;
use parley_server::auth::Claims;
use parley_tests::*;
use tonic::Code;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn sign(algorithm: Algorithm, private_pem: &str, sub: &str) -> String {
    let pem = std::fs::read(fixture(private_pem)).expect("read the private key");
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("parse the private key");
    let claims = Claims::new(TENANT, sub, "internal", Duration::from_secs(600));
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).expect("sign")
}

async fn accepts_only_tokens_signed_by_its_public_key(
    db: Db,
    algorithm: Algorithm,
    public: &str,
    private: &str,
) {
    let public = fixture(public);
    let app = spawn_app_with(db, move |c| c.jwt_public_key = Some(public)).await;
    let alice = app.with_token(sign(algorithm, private, "alice"));
    let conversation = alice
        .create_group("planning", &[])
        .await
        .expect("a signed token is accepted");
    assert_eq!(conversation.owner_id, "alice");

    // The key file's HS256 secret still signs valid tokens.
    let hs256 = app.with_token(app.token(TENANT, "alice", Kind::Internal, None));
    assert_eq!(
        hs256.list_conversations().await.expect("HS256 too").len(),
        1
    );

    // Nor does another key of the same kind.
    let other = if algorithm == Algorithm::RS256 {
        "ed25519_private.pem"
    } else {
        "rsa_private.pem"
    };
    let other_algorithm = if algorithm == Algorithm::RS256 {
        Algorithm::EdDSA
    } else {
        Algorithm::RS256
    };
    let forged = app.with_token(sign(other_algorithm, other, "alice"));
    expect_err(
        forged.list_conversations().await,
        Code::Unauthenticated,
        ErrorReason::TokenInvalid,
    );
    assert_eq!(alice.list_conversations().await.expect("list").len(), 1);
}

async fn rs256(db: Db) {
    accepts_only_tokens_signed_by_its_public_key(
        db,
        Algorithm::RS256,
        "rsa_public.pem",
        "rsa_private.pem",
    )
    .await;
}

async fn eddsa(db: Db) {
    accepts_only_tokens_signed_by_its_public_key(
        db,
        Algorithm::EdDSA,
        "ed25519_public.pem",
        "ed25519_private.pem",
    )
    .await;
}

both_dbs!(rs256, eddsa);
