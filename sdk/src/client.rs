//! [`Client`]: the channel, the credentials and the call settings every service handle
//! shares; [`ClientBuilder`] to make one; [`TokenProvider`] for tokens that change.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use tonic::{
    Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};
use tower::{ServiceBuilder, ServiceExt, retry::RetryLayer};

use crate::{
    conversations::Conversations,
    directory::Directory,
    error::{BoxError, Error, Result},
    notifications::Notifications,
    participants::Participants,
    retry::{Attempt, CallPolicy, Method, RetryPolicy},
};

/// The metadata key a service principal names the user it acts for with.
pub const ACT_AS_HEADER: &str = "x-parley-act-as";

/// How long connecting may take unless [`ClientBuilder::connect_timeout`] says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a connection is pinged while quiet, and how long a ping may go unanswered before
/// the connection is given up (with its calls and watches, which reconnect).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one attempt of a call may take unless [`ClientBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The future a [`TokenProvider`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'a>>;

/// Supplies the bearer token, asked once per attempt of every call, so a provider that
/// refreshes an expiring token (from an identity provider, a file, a secret store) keeps the
/// client working.
///
/// Any `Fn() -> impl Future<Output = Result<String, BoxError>>` is a provider:
///
/// ```no_run
/// # async fn demo() -> Result<(), parley_sdk::Error> {
/// use std::sync::Arc;
/// use tokio::sync::RwLock;
///
/// let current = Arc::new(RwLock::new(String::from("<token>")));
/// let source = current.clone(); // a refresher task writes new tokens here
/// let client = parley_sdk::Client::builder("http://127.0.0.1:50051")
///     .token_provider(move || {
///         let source = source.clone();
///         async move { Ok::<_, parley_sdk::BoxError>(source.read().await.clone()) }
///     })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub trait TokenProvider: Send + Sync + 'static {
    /// The token to send now, without the `Bearer ` prefix.
    fn token(&self) -> TokenFuture<'_>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
{
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self())
    }
}

#[derive(Clone)]
enum Credentials {
    None,
    Static(AsciiMetadataValue),
    Provider(Arc<dyn TokenProvider>),
}

fn bearer(token: &str) -> Result<AsciiMetadataValue> {
    let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Error::invalid_configuration("the token is not valid header text"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Builds a [`Client`].
///
/// ```no_run
/// # async fn demo() -> Result<(), parley_sdk::Error> {
/// use std::time::Duration;
/// use parley_sdk::{Client, RetryPolicy};
///
/// let client = Client::builder("http://127.0.0.1:50051")
///     .bearer_token("<token>")
///     .connect_timeout(Duration::from_secs(5))
///     .timeout(Duration::from_secs(10))
///     .retry_policy(RetryPolicy::default().max_attempts(5))
///     .user_agent("billing-service/1.4")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ClientBuilder {
    endpoint: String,
    /// More replicas of the same service, besides `endpoint`.
    others: Vec<String>,
    credentials: std::result::Result<Credentials, Error>,
    act_as: Option<String>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    user_agent: Option<String>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("act_as", &self.act_as)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            others: Vec::new(),
            credentials: Ok(Credentials::None),
            act_as: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: Some(DEFAULT_TIMEOUT),
            retry: RetryPolicy::default(),
            user_agent: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Sends `authorization: Bearer <token>` with every call.
    pub fn bearer_token(mut self, token: impl AsRef<str>) -> Self {
        self.credentials = bearer(token.as_ref()).map(Credentials::Static);
        self
    }

    /// Asks `provider` for the token before every attempt of every call.
    pub fn token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.credentials = Ok(Credentials::Provider(Arc::new(provider)));
        self
    }

    /// For service principals: every call acts as `user_id` (metadata `x-parley-act-as`) and
    /// is judged as that user. See also [`Client::act_as`].
    pub fn act_as(mut self, user_id: impl Into<String>) -> Self {
        self.act_as = Some(user_id.into());
        self
    }

    /// How long opening the connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one attempt of a call may take (default 30 s); the server is told too
    /// (`grpc-timeout`). A retried call is bounded by [`RetryPolicy::max_elapsed`] as well.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Lets calls run as long as they take.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// How failed calls are retried (default: [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Never retries: every call makes one attempt.
    pub fn no_retries(mut self) -> Self {
        self.retry = RetryPolicy::disabled();
        self
    }

    /// Names the application in the `user-agent` header (before `parley-sdk/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// TLS settings for an `https://` endpoint (feature `tls`). Without them an `https://`
    /// endpoint uses the platform's trusted roots.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    fn endpoint(&self) -> Result<Endpoint> {
        self.endpoint_of(&self.endpoint)
    }

    /// Every endpoint of the builder, each with its settings.
    fn endpoints(&self) -> Result<Vec<Endpoint>> {
        std::iter::once(&self.endpoint)
            .chain(&self.others)
            .map(|url| self.endpoint_of(url))
            .collect()
    }

    fn endpoint_of(&self, url: &str) -> Result<Endpoint> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::invalid_configuration(format!("endpoint {url:?}: {e}")))?;
        let agent = match &self.user_agent {
            Some(app) => format!("{app} parley-sdk/{}", env!("CARGO_PKG_VERSION")),
            None => format!("parley-sdk/{}", env!("CARGO_PKG_VERSION")),
        };
        let endpoint = endpoint
            .user_agent(agent)
            .map_err(|e| Error::invalid_configuration(format!("user agent: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A watch may be quiet for a while: pings tell a dead connection from a quiet one.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        #[cfg(feature = "tls")]
        let endpoint = match (&self.tls, url.starts_with("https://")) {
            (Some(config), _) => endpoint.tls_config(config.clone())?,
            (None, true) => endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())?,
            (None, false) => endpoint,
        };
        Ok(endpoint)
    }

    /// Connects now; fails if the server cannot be reached. With several endpoints
    /// ([`Client::builder_with_endpoints`]) it connects as [`ClientBuilder::connect_lazy`]
    /// does.
    pub async fn connect(self) -> Result<Client> {
        if !self.others.is_empty() {
            return self.connect_lazy();
        }
        let channel = self.endpoint()?.connect().await?;
        self.build_with_channel(channel)
    }

    /// Returns at once and connects on the first call (and reconnects whenever needed).
    pub fn connect_lazy(self) -> Result<Client> {
        let channel = if self.others.is_empty() {
            self.endpoint()?.connect_lazy()
        } else {
            Channel::balance_list(self.endpoints()?.into_iter())
        };
        self.build_with_channel(channel)
    }

    /// Uses a channel made elsewhere (e.g. with custom middleware); the endpoint, connect
    /// timeout, user agent and TLS settings of this builder are not used.
    pub fn build_with_channel(self, channel: Channel) -> Result<Client> {
        let act_as = self.act_as.as_deref().map(act_as_value).transpose()?;
        Ok(Client {
            shared: Arc::new(Shared {
                channel,
                credentials: self.credentials?,
                act_as,
                timeout: self.timeout,
                retry: self.retry,
            }),
        })
    }
}

fn act_as_value(user_id: &str) -> Result<AsciiMetadataValue> {
    AsciiMetadataValue::try_from(user_id)
        .map_err(|_| Error::invalid_configuration("the act-as user id is not valid header text"))
}

struct Shared {
    channel: Channel,
    credentials: Credentials,
    act_as: Option<AsciiMetadataValue>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

/// A connection to a Parley server with its credentials. Cheap to clone: clones share the
/// connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), parley_sdk::Error> {
/// use parley_sdk::{Client, NewConversation};
///
/// let client = Client::connect("http://127.0.0.1:50051", "<token>").await?;
/// let conversation = client
///     .conversations()
///     .create(NewConversation::group(["bob", "carol"]).title("Launch"))
///     .await?;
/// client.conversations().send_message(&conversation.id, "Hello!").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("act_as", &self.shared.act_as)
            .field("timeout", &self.shared.timeout)
            .field("retry", &self.shared.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts building a client for `endpoint`, e.g. `http://127.0.0.1:50051`.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint.into())
    }

    /// Starts building a client for several replicas of one service (e.g. behind no load
    /// balancer): calls are spread over those that answer, and a call or a watch that loses
    /// its replica goes on with another.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), parley_sdk::Error> {
    /// let client = parley_sdk::Client::builder_with_endpoints([
    ///     "http://10.0.0.1:50051",
    ///     "http://10.0.0.2:50051",
    /// ])
    /// .bearer_token("<token>")
    /// .connect_lazy()?;
    /// # Ok(()) }
    /// ```
    pub fn builder_with_endpoints<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = endpoints.into_iter().map(Into::into);
        let mut builder = ClientBuilder::new(all.next().unwrap_or_default());
        builder.others = all.collect();
        builder
    }

    /// Connects to `endpoint` with a bearer token and the default settings.
    pub async fn connect(endpoint: impl Into<String>, token: impl AsRef<str>) -> Result<Self> {
        Self::builder(endpoint).bearer_token(token).connect().await
    }

    /// The same connection and settings, acting as `user_id` (for service principals: the
    /// calls are judged as that user).
    ///
    /// ```no_run
    /// # async fn demo(service: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
    /// let as_alice = service.act_as("alice")?;
    /// let page = as_alice.conversations().list(Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub fn act_as(&self, user_id: impl AsRef<str>) -> Result<Self> {
        let act_as = Some(act_as_value(user_id.as_ref())?);
        Ok(self.with_shared(|s| s.act_as = act_as))
    }

    /// The same connection with another bearer token (e.g. for another user).
    pub fn with_token(&self, token: impl AsRef<str>) -> Result<Self> {
        let credentials = Credentials::Static(bearer(token.as_ref())?);
        Ok(self.with_shared(|s| s.credentials = credentials))
    }

    fn with_shared(&self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Shared {
            channel: self.shared.channel.clone(),
            credentials: self.shared.credentials.clone(),
            act_as: self.shared.act_as.clone(),
            timeout: self.shared.timeout,
            retry: self.shared.retry.clone(),
        };
        change(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// ConversationService: conversations, messages, the timeline, access checks.
    pub fn conversations(&self) -> Conversations {
        Conversations::new(self.clone())
    }

    /// ParticipantService: adding, removing and listing participants; invitations; events.
    pub fn participants(&self) -> Participants {
        Participants::new(self.clone())
    }

    /// DirectoryService (service principals): users and groups.
    pub fn directory(&self) -> Directory {
        Directory::new(self.clone())
    }

    /// NotificationService (service principals): the notification outbox.
    pub fn notifications(&self) -> Notifications {
        Notifications::new(self.clone())
    }

    /// The underlying channel, for the generated stubs in [`crate::pb`].
    pub fn channel(&self) -> Channel {
        self.shared.channel.clone()
    }

    /// Wraps `message` with this client's metadata for one attempt.
    pub(crate) async fn request<T>(
        &self,
        message: T,
        timeout: Option<Duration>,
    ) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        let authorization = match &self.shared.credentials {
            Credentials::None => None,
            Credentials::Static(value) => Some(value.clone()),
            Credentials::Provider(provider) => {
                let token = provider
                    .token()
                    .await
                    .map_err(|source| Error::TokenProvider { source })?;
                Some(bearer(&token)?)
            }
        };
        let metadata = request.metadata_mut();
        if let Some(value) = authorization {
            metadata.insert("authorization", value);
        }
        if let Some(user) = &self.shared.act_as {
            metadata.insert(ACT_AS_HEADER, user.clone());
        }
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        Ok(request)
    }

    /// One logical unary call: attempts through the retry layer, each with fresh metadata and
    /// the same message (so a mutation keeps its request id).
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        options: &CallOptions,
        method: Method,
        message: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Channel, tonic::Request<Req>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        let timeout = options.timeout.unwrap_or(self.shared.timeout);
        let policy = options
            .retry
            .clone()
            .unwrap_or_else(|| self.shared.retry.clone());
        let attempt = Attempt::new(self.clone(), call, timeout);
        ServiceBuilder::new()
            .layer(RetryLayer::new(CallPolicy::new(policy, method)))
            .service(attempt)
            .oneshot(message)
            .await
    }
}

/// Settings a service handle applies to its calls, over the client's.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallOptions {
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) request_id: Option<String>,
}

impl CallOptions {
    /// The request id of one logical mutation: the caller's, else a new UUIDv7.
    pub(crate) fn request_id(&self, explicit: Option<String>) -> String {
        explicit
            .or_else(|| self.request_id.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    }
}

/// The per-handle settings every service handle offers.
macro_rules! call_options {
    ($handle:ident) => {
        impl $handle {
            pub(crate) fn new(client: $crate::Client) -> Self {
                Self {
                    client,
                    options: Default::default(),
                }
            }

            /// The same handle with another per-attempt timeout for its calls.
            #[must_use]
            pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.options.timeout = Some(Some(timeout));
                self
            }

            /// The same handle with another retry policy for its calls
            /// ([`RetryPolicy::disabled`](crate::RetryPolicy::disabled) for none).
            #[must_use]
            pub fn with_retry_policy(mut self, policy: $crate::RetryPolicy) -> Self {
                self.options.retry = Some(policy);
                self
            }

            /// The same handle sending `request_id` with its mutations instead of a fresh
            /// UUIDv7 per call. Use it for one logical call (e.g. to repeat, after a crash, a
            /// call whose id you stored): the server answers a repeated id with the first
            /// reply, and a different request under the same id with `REQUEST_ID_REUSED`.
            #[must_use]
            pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
                self.options.request_id = Some(request_id.into());
                self
            }
        }
    };
}
pub(crate) use call_options;

/// A closure calling one method of a generated client on a channel.
macro_rules! rpc {
    ($stub:ident :: $method:ident) => {
        |channel: ::tonic::transport::Channel, request| async move {
            $stub::new(channel)
                .max_decoding_message_size(::parley::MAX_REPLY_BYTES)
                .$method(request)
                .await
        }
    };
}
pub(crate) use rpc;
