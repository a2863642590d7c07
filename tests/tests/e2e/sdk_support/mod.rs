//! What the `sdk_*` tests share: SDK clients for the harness's principals, a scripted
//! ParticipantService that fails on demand, a TCP proxy that loses replies, and a server that
//! never answers.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::VecDeque,
    fmt::Debug,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::TryStreamExt;
use parley_sdk::{
    AddParticipants, Client, Error, ErrorReason, ListNotifications, ListParticipants,
    NewConversation, NotificationKind, ParticipantState, Recipient, RetryPolicy,
};
use parley_tests::{Kind, TENANT, TestApp, email_of, pb, sorted};
use pb::participant_service_server::{ParticipantService, ParticipantServiceServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;
use tonic::{Request, Response, Status};

// ----- clients ---------------------------------------------------------------------------------

/// An SDK client on the app's channel presenting `token`.
pub fn client_with(app: &TestApp, token: String) -> Client {
    Client::builder(format!("http://{}", app.addr))
        .bearer_token(token)
        .build_with_channel(app.channel())
        .expect("an SDK client")
}

/// An internal user of [`TENANT`] (email `<sub>@acme.example`).
pub fn user(app: &TestApp, sub: &str) -> Client {
    client_with(
        app,
        app.token(TENANT, sub, Kind::Internal, Some(&email_of(TENANT, sub))),
    )
}

/// An external user of [`TENANT`].
pub fn external(app: &TestApp, sub: &str) -> Client {
    client_with(
        app,
        app.token(TENANT, sub, Kind::External, Some(&email_of(TENANT, sub))),
    )
}

/// The service principal of [`TENANT`] (its administrator).
pub fn service(app: &TestApp) -> Client {
    client_with(app, app.token(TENANT, "svc-sdk", Kind::Service, None))
}

/// Retries that wait milliseconds, not seconds.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(50))
}

/// The error of `result`, which must be one.
#[track_caller]
pub fn unwrap_err<T: Debug>(result: Result<T, parley_sdk::Error>) -> parley_sdk::Error {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(error) => error,
    }
}

// ----- assertions and fixtures for the error tests -------------------------------------------

/// Asserts the error kept the server's status with `code` and the reason of its variant.
#[track_caller]
pub fn assert_status(error: &Error, code: Code, reason: ErrorReason) {
    assert_eq!(error.reason(), Some(reason), "{error:?}");
    assert_eq!(error.code(), code, "{error:?}");
    let source = std::error::Error::source(error).expect("the status is the source");
    assert!(
        source.downcast_ref::<tonic::Status>().is_some(),
        "{source:?}"
    );
    assert!(!error.is_retryable(), "{error:?}");
}

/// alice's GROUP conversation with `others`.
pub async fn group(alice: &Client, others: &[&str]) -> parley_sdk::pb::Conversation {
    alice
        .conversations()
        .create(NewConversation::group(others.iter().copied()).title("t"))
        .await
        .expect("create")
}

pub async fn active_ids(client: &Client, conversation_id: &str) -> Vec<String> {
    let list = ListParticipants::new(conversation_id).state(ParticipantState::Active);
    let participants: Vec<_> = client
        .participants()
        .list_stream(list)
        .try_collect()
        .await
        .expect("participants");
    sorted(participants.into_iter().map(|p| p.user_id).collect())
}

/// Invites `email` to `conversation_id` as alice and returns the invitation link's token.
pub async fn invite(app: &TestApp, alice: &Client, conversation_id: &str, email: &str) -> String {
    alice
        .participants()
        .add(AddParticipants::new(conversation_id).email(email))
        .await
        .expect("invite");
    let notes: Vec<_> = service(app)
        .notifications()
        .list_stream(ListNotifications::new())
        .try_collect()
        .await
        .expect("notifications");
    notes
        .into_iter()
        .find(|n| {
            n.kind() == NotificationKind::Invitation
                && matches!(&n.recipient, Some(Recipient::RecipientEmail(e)) if e == email)
        })
        .expect("an invitation notification")
        .invitation_token
}

// ----- a scripted ParticipantService -------------------------------------------------------------

/// One call the scripted service received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: &'static str,
    pub request_id: String,
    pub authorization: Option<String>,
    pub act_as: Option<String>,
    pub user_agent: Option<String>,
    pub grpc_timeout: Option<String>,
}

/// The failures the scripted service answers with, in order (then successes), and the calls
/// it has seen.
#[derive(Default)]
pub struct Script {
    failures: Mutex<VecDeque<Status>>,
    seen: Mutex<Vec<Seen>>,
}

impl Script {
    /// Answers the next calls with these failures, one each.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Status>) {
        self.failures.lock().unwrap().extend(failures);
    }

    /// Every call so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The number of calls so far.
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn record<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        request_id: &str,
    ) -> Result<(), Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.seen.lock().unwrap().push(Seen {
            method,
            request_id: request_id.to_owned(),
            authorization: header("authorization"),
            act_as: header("x-parley-act-as"),
            user_agent: header("user-agent"),
            grpc_timeout: header("grpc-timeout"),
        });
        match self.failures.lock().unwrap().pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

struct Scripted(Arc<Script>);

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not scripted"))
}

#[tonic::async_trait]
impl ParticipantService for Scripted {
    async fn add_participants(
        &self,
        request: Request<pb::AddParticipantsRequest>,
    ) -> Result<Response<pb::AddParticipantsResponse>, Status> {
        let id = request.get_ref().request_id.clone();
        self.0.record("AddParticipants", &request, &id)?;
        Ok(Response::new(pb::AddParticipantsResponse::default()))
    }

    async fn get_participant(
        &self,
        request: Request<pb::GetParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.0.record("GetParticipant", &request, "")?;
        let r = request.into_inner();
        Ok(Response::new(pb::Participant {
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            ..Default::default()
        }))
    }

    async fn remove_participant(
        &self,
        _: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        unimplemented()
    }

    async fn list_participants(
        &self,
        _: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        unimplemented()
    }

    async fn set_participant_role(
        &self,
        _: Request<pb::SetParticipantRoleRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        unimplemented()
    }

    async fn list_events(
        &self,
        _: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        unimplemented()
    }

    async fn list_invitations(
        &self,
        _: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        unimplemented()
    }

    async fn accept_invitation(
        &self,
        _: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        unimplemented()
    }

    async fn decline_invitation(
        &self,
        _: Request<pb::DeclineInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        unimplemented()
    }

    async fn revoke_invitation(
        &self,
        _: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        unimplemented()
    }
}

/// A running scripted ParticipantService; stops when dropped.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ScriptedServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Script::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let service = ParticipantServiceServer::new(Scripted(script.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = rx.await;
                    },
                )
                .await;
        });
        Self {
            addr,
            script,
            _shutdown: tx,
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

// ----- a proxy that loses a reply ------------------------------------------------------------------

/// A TCP proxy in front of a gRPC server. Once armed, it drops the connection that carries the
/// next reply, just before the reply's HTTP/2 HEADERS frame: the server has applied the call,
/// the client never hears of it.
pub struct LossyProxy {
    pub addr: SocketAddr,
    armed: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

impl LossyProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Self {
            addr,
            armed: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(AtomicUsize::new(0)),
            lost: Arc::new(AtomicUsize::new(0)),
        };
        let (armed, connections, lost) = (
            proxy.armed.clone(),
            proxy.connections.clone(),
            proxy.lost.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(pump(client, server, armed.clone(), lost.clone()));
            }
        });
        proxy
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Loses the next reply.
    pub fn lose_next_reply(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Replies lost so far.
    pub fn lost_replies(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

const FRAME_HEADERS: u8 = 0x1;

async fn pump(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Requests go through untouched.
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    // Replies go frame by frame, so the first HEADERS frame of a reply can be held back.
    let mut header = [0u8; 9];
    loop {
        if server_read.read_exact(&mut header).await.is_err() {
            break;
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        if server_read.read_exact(&mut payload).await.is_err() {
            break;
        }
        if header[3] == FRAME_HEADERS && stream_id != 0 && armed.swap(false, Ordering::SeqCst) {
            lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client_write.write_all(&header).await.is_err()
            || client_write.write_all(&payload).await.is_err()
        {
            break;
        }
    }
    upstream.abort();
}

// ----- a server that never answers -----------------------------------------------------------------

/// Accepts connections and reads whatever arrives, answering nothing.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
