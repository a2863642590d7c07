//! Tokens (SPEC §5): issuer and audience, `nbf`, HS256 and public keys accepted together, a JWKS
//! chosen by `kid` and re-read while the server runs, claims bounded like request fields; users
//! and services as separate namespaces for request ids and rate limits, a service limited per
//! user and in total, rate limiting before any database work; reflection of the error details.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use parley::pb::ErrorReason;
use parley_server::{
    TokenRules,
    auth::{Audience, Claims},
};
use parley_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

const ISSUER: &str = "https://id.acme.example";
const AUDIENCE: &str = "parley";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Claims of `sub` in the test tenant, valid for ten minutes, with an email and a name.
fn claims(sub: &str, kind: Kind) -> Claims {
    let mut c = Claims::new(TENANT, sub, kind.claim(), Duration::from_secs(600));
    if kind != Kind::Service {
        c.email = Some(email_of(TENANT, sub));
        c.name = Some(format!("{sub} (test)"));
    }
    c
}

fn encoding_key(algorithm: Algorithm, private_pem: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(private_pem)).expect("read the private key");
    match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("parse the private key")
}

/// `claims` signed with a fixture's private key, the header naming `kid`.
fn signed(algorithm: Algorithm, private_pem: &str, kid: Option<&str>, claims: &Claims) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(algorithm, private_pem)).expect("sign")
}

/// The public JWK of a fixture's private key, under `kid`.
fn jwk(algorithm: Algorithm, private_pem: &str, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(algorithm, private_pem), algorithm)
        .expect("a JWK of the public key");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

/// Replaces the JWKS at `path` in one step (write a sibling, rename over), as a key
/// distribution job would.
fn write_jwks(path: &Path, keys: Vec<Jwk>) {
    write_atomically(
        path,
        &serde_json::to_vec_pretty(&JwkSet { keys }).expect("JSON"),
    );
}

fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write the key file");
    std::fs::rename(&tmp, path).expect("replace the key file");
}

/// Asserts that `sub` has no directory entry (read by a service whose token `service` is).
async fn assert_not_in_directory(service: &Caller, sub: &str) {
    expect_err(
        service.get_user(sub).await,
        Code::NotFound,
        ErrorReason::UserNotFound,
    );
}

/// Asserts that `refused` (calls that must all be refused before any database work) runs no
/// SQL statement. The server's own background work (its sweep at start) may fall into the
/// window by chance, so a window that saw statements is tried again, up to three times; calls
/// that touch the database would move the counter every time.
async fn assert_no_statements<F, Fut>(app: &TestApp, mut refused: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = Vec::new();
    for _ in 0..3 {
        let before = app.statement_count();
        refused().await;
        let ran = app.statement_count() - before;
        if ran == 0 {
            return;
        }
        seen.push(ran);
    }
    panic!("refused calls ran SQL statements: {seen:?} in three tries");
}

/// Asserts that each caller's CreateConversation fails UNAUTHENTICATED `TOKEN_INVALID`.
async fn all_token_invalid(calls: &[(&str, Caller)]) {
    for (label, caller) in calls {
        let status = caller.create_group("x", &[]).await.expect_err(label);
        assert_error(&status, Code::Unauthenticated, ErrorReason::TokenInvalid);
    }
}

async fn issuer_and_audience_are_checked(db: Db) {
    let app = spawn_app_with(db, |c| {
        c.token_rules = TokenRules {
            issuer: Some(ISSUER.to_owned()),
            audience: Some(AUDIENCE.to_owned()),
        }
    })
    .await;
    let with = |sub: &str, kind: Kind, iss: Option<&str>, aud: Option<Audience>| {
        let mut c = claims(sub, kind);
        c.iss = iss.map(str::to_owned);
        c.aud = aud;
        app.with_token(app.key.mint(&c).expect("mint"))
    };
    let ours = || Some(Audience::One(AUDIENCE.to_owned()));

    let alice = with("alice", Kind::Internal, Some(ISSUER), ours());
    alice
        .create_group("planning", &[])
        .await
        .expect("the right issuer and audience");
    // One audience among several is enough.
    let several = Some(Audience::Many(vec!["billing".into(), AUDIENCE.into()]));
    with("alice", Kind::Internal, Some(ISSUER), several)
        .list_conversations()
        .await
        .expect("an audience list naming this server");

    let refused = [
        (
            "another issuer",
            with("dave", Kind::Internal, Some("https://evil.example"), ours()),
        ),
        ("no issuer", with("dave", Kind::Internal, None, ours())),
        (
            "another audience",
            with(
                "dave",
                Kind::Internal,
                Some(ISSUER),
                Some(Audience::One("billing".into())),
            ),
        ),
        (
            "no audience",
            with("dave", Kind::Internal, Some(ISSUER), None),
        ),
        ("the harness's plain token", app.user(TENANT, "dave")),
    ];
    assert_no_statements(&app, || all_token_invalid(&refused)).await;
    let service = with("svc-identity", Kind::Service, Some(ISSUER), ours());
    assert_not_in_directory(&service, "dave").await;
    assert_eq!(alice.list_conversations().await.expect("list").len(), 1);
}

async fn a_token_not_valid_yet_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let with_nbf = |sub: &str, nbf: i64| {
        let mut c = claims(sub, Kind::Internal);
        c.nbf = Some(nbf);
        app.with_token(app.key.mint(&c).expect("mint"))
    };
    let refused = [("valid in a minute", with_nbf("dave", now() + 60))];
    assert_no_statements(&app, || all_token_invalid(&refused)).await;
    assert_not_in_directory(&app.service(TENANT), "dave").await;

    // Already valid, or valid within the clock-skew leeway of a few seconds.
    with_nbf("alice", now() - 60)
        .list_conversations()
        .await
        .expect("valid since a minute ago");
    with_nbf("bob", now() + 2)
        .list_conversations()
        .await
        .expect("valid in two seconds: within the leeway");
}

async fn hs256_and_a_public_key_are_accepted_together(db: Db) {
    let public = fixture("rsa_public.pem");
    let app = spawn_app_with(db, move |c| c.jwt_public_key = Some(public)).await;
    let by_key_file = app.user(TENANT, "alice");
    by_key_file
        .create_group("planning", &[])
        .await
        .expect("HS256 with the key file's secret");
    let by_public_key = app.with_token(signed(
        Algorithm::RS256,
        "rsa_private.pem",
        None,
        &claims("alice", Kind::Internal),
    ));
    assert_eq!(
        by_public_key
            .list_conversations()
            .await
            .expect("RS256 with the public key")
            .len(),
        1
    );

    // Not the configured key's algorithm.
    let eddsa = app.with_token(signed(
        Algorithm::EdDSA,
        "ed25519_private.pem",
        None,
        &claims("dave", Kind::Internal),
    ));
    // The public key used as an HMAC secret: the classic algorithm confusion.
    let confused = {
        let pem = std::fs::read(fixture("rsa_public.pem")).expect("read the public key");
        app.with_token(
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims("dave", Kind::Internal),
                &EncodingKey::from_secret(&pem),
            )
            .expect("sign"),
        )
    };
    let forged = app.with_token(app.forged_token(TENANT, "dave"));
    let refused = [
        ("EdDSA", eddsa),
        ("the public key as an HMAC secret", confused),
        ("another secret", forged),
    ];
    assert_no_statements(&app, || all_token_invalid(&refused)).await;
    assert_not_in_directory(&app.service(TENANT), "dave").await;
}

/// Polls `caller` for up to five seconds until a call succeeds (the server looks at its key
/// file again at most once a second).
async fn accepted_within_a_few_seconds(caller: &Caller, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match caller.list_conversations().await {
            Ok(_) => return,
            Err(status) if Instant::now() < deadline => {
                assert_error(&status, Code::Unauthenticated, ErrorReason::TokenInvalid);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{label}: still refused after 5 s: {status:?}"),
        }
    }
}

async fn a_jwks_chooses_the_key_by_kid_and_follows_rotation(db: Db) {
    let keys = tempfile::tempdir().expect("a directory for the JWKS");
    let jwks = keys.path().join("jwks.json");
    write_jwks(
        &jwks,
        vec![
            jwk(Algorithm::RS256, "rsa_private.pem", "rsa-1"),
            jwk(Algorithm::EdDSA, "ed25519_private.pem", "ed-1"),
        ],
    );
    let path = jwks.clone();
    let app = spawn_app_with(db, move |c| c.jwt_public_key = Some(path)).await;
    let token = |algorithm, private, kid: Option<&str>, sub: &str| {
        app.with_token(signed(
            algorithm,
            private,
            kid,
            &claims(sub, Kind::Internal),
        ))
    };

    let rsa_1 = token(Algorithm::RS256, "rsa_private.pem", Some("rsa-1"), "alice");
    rsa_1
        .create_group("planning", &[])
        .await
        .expect("kid rsa-1 verifies with its key");
    let ed_1 = token(
        Algorithm::EdDSA,
        "ed25519_private.pem",
        Some("ed-1"),
        "alice",
    );
    assert_eq!(
        ed_1.list_conversations()
            .await
            .expect("kid ed-1 verifies with its key")
            .len(),
        1
    );
    app.user(TENANT, "alice")
        .list_conversations()
        .await
        .expect("HS256 alongside the JWKS");

    let refused = [
        (
            "an unknown kid",
            token(Algorithm::RS256, "rsa_private.pem", Some("rsa-9"), "dave"),
        ),
        (
            "no kid",
            token(Algorithm::RS256, "rsa_private.pem", None, "dave"),
        ),
        (
            "another key's kid",
            token(
                Algorithm::EdDSA,
                "ed25519_private.pem",
                Some("rsa-1"),
                "dave",
            ),
        ),
        (
            "a key not in the set",
            token(
                Algorithm::EdDSA,
                "ed25519_rotated_private.pem",
                Some("ed-1"),
                "dave",
            ),
        ),
    ];
    assert_no_statements(&app, || all_token_invalid(&refused)).await;
    assert_not_in_directory(&app.service(TENANT), "dave").await;

    // Rotation while the server runs: rsa-1 leaves, ed-2 arrives.
    let ed_2 = token(
        Algorithm::EdDSA,
        "ed25519_rotated_private.pem",
        Some("ed-2"),
        "alice",
    );
    expect_err(
        ed_2.list_conversations().await,
        Code::Unauthenticated,
        ErrorReason::TokenInvalid,
    );
    write_jwks(
        &jwks,
        vec![
            jwk(Algorithm::EdDSA, "ed25519_private.pem", "ed-1"),
            jwk(Algorithm::EdDSA, "ed25519_rotated_private.pem", "ed-2"),
        ],
    );
    accepted_within_a_few_seconds(&ed_2, "the new key ed-2").await;
    expect_err(
        rsa_1.list_conversations().await,
        Code::Unauthenticated,
        ErrorReason::TokenInvalid,
    );
    ed_1.list_conversations().await.expect("ed-1 stayed");

    // A file that no longer parses leaves the last good keys in place…
    write_atomically(&jwks, b"{\"keys\": [ this is not JSON");
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        ed_2.list_conversations()
            .await
            .expect("the last good keys stay while the file is broken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …until a good one replaces it.
    write_jwks(
        &jwks,
        vec![jwk(Algorithm::RS256, "rsa_private.pem", "rsa-1")],
    );
    accepted_within_a_few_seconds(&rsa_1, "rsa-1 again").await;
    expect_err(
        ed_2.list_conversations().await,
        Code::Unauthenticated,
        ErrorReason::TokenInvalid,
    );
}

async fn claims_past_their_bounds_are_refused_before_anything_is_stored(db: Db) {
    let app = spawn_app(db).await;
    let service = app.service(TENANT);
    let with = |sub: &str, name: Option<String>, email: Option<String>| {
        let mut c = claims(sub, Kind::Internal);
        c.name = name;
        c.email = email;
        app.with_token(app.key.mint(&c).expect("mint"))
    };
    // 320 characters in all: `<local>@acme.example`.
    let email_of_len = |len: usize| format!("{}@acme.example", "d".repeat(len - 13));

    let refused = [
        (
            "a 201-character name",
            with("dave", Some("n".repeat(201)), None),
        ),
        (
            "a 321-character email",
            with("dave", None, Some(email_of_len(321))),
        ),
        (
            "an email without @",
            with("dave", None, Some("dave.acme.example".into())),
        ),
        (
            "an email with spaces",
            with("dave", None, Some("dave smith@acme.example".into())),
        ),
    ];
    assert_no_statements(&app, || all_token_invalid(&refused)).await;
    assert_not_in_directory(&service, "dave").await;

    // At the bounds (counted in characters, not bytes) the first call stores them.
    let name = "é".repeat(200);
    let email = email_of_len(320);
    with("erin", Some(name.clone()), Some(email.clone()))
        .create_group("x", &[])
        .await
        .expect("a 200-character name and a 320-character email");
    let erin = service.get_user("erin").await.expect("erin's entry");
    assert_eq!(erin.display_name, name);
    assert_eq!(erin.email, email);
}

async fn a_user_and_a_service_with_one_name_have_their_own_request_ids(db: Db) {
    let app = spawn_app(db).await;
    seed_users(&app, TENANT, &[("bob", Kind::Internal)]).await;
    let robot_user = app.user(TENANT, "robot");
    let robot_service = app.with_token(app.token(TENANT, "robot", Kind::Service, None));
    let c = robot_user
        .create_group("shared name", &[])
        .await
        .expect("create");
    let add_bob = pb::AddParticipantsRequest {
        conversation_id: c.id.clone(),
        invitees: vec![user_invitee("bob")],
        partial_success: false,
        request_id: request_id(),
    };
    robot_user
        .part()
        .add_participants(robot_user.req(add_bob.clone()))
        .await
        .expect("the user adds bob");
    robot_user.remove(&c.id, "bob").await.expect("remove bob");

    // The service's request with the same id is its own: applied, not the user's reply.
    let added = robot_service
        .part()
        .add_participants(robot_service.req(add_bob.clone()))
        .await
        .expect("the service adds bob")
        .into_inner();
    assert_eq!(
        outcomes(&added),
        vec![(
            "bob".to_owned(),
            pb::add_participants_result::Outcome::Added
        )]
    );
    assert_eq!(
        robot_user.active_ids(&c.id).await.expect("roster"),
        vec!["bob", "robot"],
        "bob was really added again"
    );
    // And the service's own retry is answered from its record.
    let before = robot_user.snapshot(&c.id).await;
    robot_service
        .part()
        .add_participants(robot_service.req(add_bob))
        .await
        .expect("the service's retry");
    assert_eq!(
        robot_user.snapshot(&c.id).await,
        before,
        "a replay writes nothing"
    );
}

async fn a_service_is_limited_per_user_and_in_total(db: Db) {
    let limited = |status: tonic::Status| {
        assert_error(&status, Code::ResourceExhausted, ErrorReason::RateLimited);
        assert!(status.get_details_retry_info().is_some(), "RetryInfo");
    };

    // Per user: 1 call a second (bursts of 2) for each user the service acts for.
    let app = spawn_app_with(db, |c| {
        c.limits.rate_limit_per_second = 1;
        c.limits.service_rate_limit_per_second = 1_000;
    })
    .await;
    for user in ["alice", "bob"] {
        // A user's first call adds it to the directory (from its own bucket).
        app.user(TENANT, user)
            .list_conversations()
            .await
            .expect("first call");
    }
    let chat = app.with_token(app.token(TENANT, "svc-chat", Kind::Service, None));
    let (as_alice, as_bob) = (chat.acting_as("alice"), chat.acting_as("bob"));
    as_alice.list_conversations().await.expect("for alice, 1");
    as_alice.list_conversations().await.expect("for alice, 2");
    limited(
        as_alice
            .list_conversations()
            .await
            .expect_err("for alice, 3"),
    );
    as_bob
        .list_conversations()
        .await
        .expect("bob has his own bucket");
    as_bob.list_conversations().await.expect("for bob, 2");
    chat.get_user("alice")
        .await
        .expect("as administrator, the service has its own bucket too");
    // A user named like the service is another principal.
    app.user(TENANT, "svc-chat")
        .list_conversations()
        .await
        .expect("a user with the service's name is not limited with it");

    // In total: 1 call a second (bursts of 2) for the service, whomever it acts for.
    let app = spawn_app_with(db, |c| {
        c.limits.rate_limit_per_second = 1_000;
        c.limits.service_rate_limit_per_second = 1;
    })
    .await;
    for user in ["alice", "bob"] {
        app.user(TENANT, user)
            .list_conversations()
            .await
            .expect("first call");
    }
    let chat = app.with_token(app.token(TENANT, "svc-chat", Kind::Service, None));
    chat.acting_as("alice")
        .list_conversations()
        .await
        .expect("for alice");
    chat.acting_as("bob")
        .list_conversations()
        .await
        .expect("for bob");
    limited(
        chat.acting_as("alice")
            .list_conversations()
            .await
            .expect_err("the service's total is spent"),
    );
    limited(
        chat.get_user("alice")
            .await
            .expect_err("as administrator too"),
    );
    // Another service has its own total.
    app.service(TENANT)
        .get_user("alice")
        .await
        .expect("another service");
}

async fn a_rate_limited_call_does_no_database_work(db: Db) {
    let app = spawn_app_with(db, |c| c.limits.rate_limit_per_second = 1).await;
    let alice = app.user(TENANT, "alice");
    let as_alice = app
        .with_token(app.token(TENANT, "svc-chat", Kind::Service, None))
        .acting_as("alice");
    alice.list_conversations().await.expect("1");
    alice.list_conversations().await.expect("2");
    as_alice.list_conversations().await.expect("1");
    as_alice.list_conversations().await.expect("2");

    assert_no_statements(&app, || async {
        for (label, caller) in [
            ("a user", &alice),
            ("a service acting for a user", &as_alice),
        ] {
            let status = caller.list_conversations().await.expect_err(label);
            assert_error(&status, Code::ResourceExhausted, ErrorReason::RateLimited);
        }
    })
    .await;
}

async fn reflection_serves_the_real_error_details(db: Db) {
    use prost::Message;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app(db).await;
    let mut client = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "google.rpc.BadRequest".into(),
        )),
    };
    let response = client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection without a token")
        .into_inner()
        .message()
        .await
        .expect("a reflection answer")
        .expect("one message");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("google.rpc.BadRequest is not resolved: {response:?}");
    };
    let bad_request = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decode"))
        .filter(|f| f.package() == "google.rpc")
        .flat_map(|f| f.message_type)
        .find(|m| m.name() == "BadRequest")
        .expect("BadRequest among the files");
    let violation = bad_request
        .nested_type
        .iter()
        .find(|m| m.name() == "FieldViolation")
        .expect("BadRequest.FieldViolation");
    let fields: Vec<&str> = violation.field.iter().map(|f| f.name()).collect();
    for expected in ["field", "description", "reason", "localized_message"] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {fields:?}"
        );
    }
}

both_dbs!(
    issuer_and_audience_are_checked,
    a_token_not_valid_yet_is_refused,
    hs256_and_a_public_key_are_accepted_together,
    a_jwks_chooses_the_key_by_kid_and_follows_rotation,
    claims_past_their_bounds_are_refused_before_anything_is_stored,
    a_user_and_a_service_with_one_name_have_their_own_request_ids,
    a_service_is_limited_per_user_and_in_total,
    a_rate_limited_call_does_no_database_work,
    reflection_serves_the_real_error_details,
);
