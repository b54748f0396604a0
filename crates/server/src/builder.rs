//! [`TidingsBuilder`]: configuration, stores, authorizer and broker, checked once at build.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::Tidings;
use crate::auth::{AccessRequest, Authenticator, AuthorizeFn, KeyError};
use crate::broker::Broker;
use crate::config::Config;
use crate::hooks::{
    ConnectAttempt, ConnectDecision, HookError, Hooks, PublishDecision, PublishRequest, RpcRequest,
    SubscribeRequest,
};
use crate::hub::Hub;
use crate::node::Shared;
use crate::store::{InboxStore, MemoryStore, PublicationStore, Store, Stores};
use crate::webhooks::Webhooks;

/// Configures a [`Tidings`] node.
#[must_use]
pub struct TidingsBuilder {
    config: Config,
    authorizer: Option<AuthorizeFn>,
    stores: Option<Stores>,
    /// Replaces the inbox of whichever store is used.
    inbox: Option<Arc<dyn InboxStore>>,
    broker: Option<Arc<dyn Broker>>,
    hooks: Hooks,
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The JWT key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A setting is invalid (see [`Config::validate`]).
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// Webhooks are configured, but the store given with
    /// [`TidingsBuilder::publication_store`] keeps no webhook queue.
    #[error(
        "webhooks are configured but the publication store keeps no webhook queue: give a store that implements WebhookOutbox with TidingsBuilder::store"
    )]
    WebhooksWithoutOutbox,
    /// Webhooks are configured, but this build of tidings-server has no `webhooks` feature.
    #[error("webhooks are configured but tidings-server was built without its `webhooks` feature")]
    WebhooksNotBuilt,
    /// The HTTP client that delivers webhooks could not be made.
    #[error("cannot make the webhook HTTP client: {0}")]
    WebhookClient(String),
    /// `[proxy]` could not be set up (its HTTP client, or the feature is off).
    #[error("proxy: {0}")]
    Proxy(String),
    /// `Config::broker` names no broker this build can open.
    #[error("broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    /// `build` was called outside a tokio runtime (retention and webhook delivery run as
    /// tasks of the node).
    #[error("Tidings::builder().build() must be called inside a tokio runtime")]
    NoRuntime,
}

impl TidingsBuilder {
    pub(crate) fn new() -> TidingsBuilder {
        TidingsBuilder {
            config: Config::default(),
            authorizer: None,
            stores: None,
            inbox: None,
            broker: None,
            hooks: Hooks::default(),
        }
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the HS256 secret that verifies client tokens.
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.config.jwt.secret = Some(secret.into());
        self
    }

    /// Sets the bearer key of the HTTP API.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// Decides channel access, e.g. "may user 7 open ticket 42". Called for every
    /// subscribe, client publish, history, presence and route-bound channel, after the
    /// built-in policy.
    pub fn authorize<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(AccessRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.authorizer = Some(Arc::new(move |request| Box::pin(hook(request))));
        self
    }

    /// Asks the application about every connection after its token is checked (or, with
    /// no token, instead of it): `Ok(ConnectDecision::default())` admits it as it is,
    /// [`ConnectDecision::user`] names the user (a session cookie in `headers`),
    /// `.channels(..)` limits what it may use; `Err(Refused)` closes it with 4003,
    /// `Err(Unavailable)` with a retryable 4503. Replaces `[proxy] connect`.
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ConnectAttempt) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ConnectDecision, HookError>> + Send + 'static,
    {
        self.hooks.connect = Some(crate::hooks::boxed(hook));
        self
    }

    /// Asks the application before a user reads a channel (subscribe, a route's channel,
    /// history, presence), after the built-in policy and [`authorize`](Self::authorize):
    /// `Err(HookError::Refused(reason))` refuses with 4003, `Unavailable` with a retryable
    /// 4503. Bounded by `proxy.timeout`. Replaces `[proxy] subscribe`.
    pub fn on_subscribe<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SubscribeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HookError>> + Send + 'static,
    {
        self.hooks.subscribe = Some(crate::hooks::boxed(hook));
        self
    }

    /// Checks, or rewrites, every publication a user sends from a connection (back-end
    /// publications are not asked): `Ok(PublishDecision::Replace(event))` publishes the
    /// back end's event instead. Replaces `[proxy] publish`.
    pub fn on_publish<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(PublishRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<PublishDecision, HookError>> + Send + 'static,
    {
        self.hooks.publish = Some(crate::hooks::boxed(hook));
        self
    }

    /// Answers clients' `rpc` calls: the JSON returned is the reply's `data`;
    /// `Err(HookError::NotFound(..))` for a method it does not know. Replaces `[proxy] rpc`.
    pub fn on_rpc<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(RpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, HookError>> + Send + 'static,
    {
        self.hooks.rpc = Some(crate::hooks::boxed(hook));
        self
    }

    /// Uses this store for publications, the offline inbox and the webhook queue (like
    /// [`SqlStore`](crate::sql_store::SqlStore) and [`MemoryStore`]). Without a store the
    /// node keeps `history_size` publications per channel in memory only;
    /// [`store::open`](crate::store::open) opens the store the configuration names (SQLite
    /// in the data directory by default).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.stores = Some(Stores::complete(store));
        self
    }

    /// Uses a store that keeps publications only. The offline inbox is then off (a
    /// connection's personal channel starts at the live position and `ack` is refused)
    /// unless [`inbox_store`](Self::inbox_store) names one, and configuring webhooks is an
    /// error at build.
    pub fn publication_store(mut self, store: Arc<dyn PublicationStore>) -> Self {
        self.stores = Some(Stores {
            publications: store,
            inbox: None,
            outbox: None,
        });
        self
    }

    /// Keeps the offline inbox's positions in this store, whichever store keeps the
    /// publications.
    pub fn inbox_store(mut self, inbox: Arc<dyn InboxStore>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Connects this node to others through a broker (see [`crate::broker`]). Without
    /// one, `build` opens the broker `Config::broker` names, if any.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Builds the node, and starts its retention and webhook tasks.
    pub fn build(self) -> Result<Tidings, BuildError> {
        self.config.validate()?;
        if self.config.allow_anonymous {
            tracing::warn!(
                "allow_anonymous is on: connections without a token are accepted, each as a user \
                 of its own or as the user its route names; do not use it where users matter"
            );
        }
        let broker = match (self.broker, &self.config.broker) {
            (Some(broker), _) => Some(broker),
            (None, Some(url)) => Some(crate::broker::open(
                url,
                self.config.broker_prefix.as_deref(),
            )?),
            (None, None) => None,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let auth = Authenticator::new(&self.config.jwt)?;
        let hooks = proxy_hooks(self.hooks, &self.config)?;
        let mut stores = match self.stores {
            Some(stores) => stores,
            None => Stores::complete(Arc::new(MemoryStore::for_config(&self.config))),
        };
        if let Some(inbox) = self.inbox {
            stores.inbox = Some(inbox);
        }
        let webhooks = Webhooks::new(&self.config.webhooks, &self.config.webhook_delivery);
        if let Some(hooks) = &webhooks {
            let outbox = stores
                .outbox
                .as_ref()
                .ok_or(BuildError::WebhooksWithoutOutbox)?;
            start_webhooks(&runtime, hooks, outbox)?;
        }
        if stores.inbox.is_none() {
            tracing::info!("no inbox store: personal channels start at the live position");
        }
        crate::metrics::install();
        let hub = Arc::new(Hub::new(
            stores,
            broker.clone(),
            webhooks,
            self.config.presence_events_max_members,
            self.config.recovery_limit,
            self.config.presence_ttl,
        ));
        let tidings = Tidings {
            shared: Arc::new(Shared {
                hub,
                auth,
                authorizer: self.authorizer,
                hooks,
                config: self.config,
                shutting_down: AtomicBool::new(false),
                rate_clock: governor::clock::DefaultClock::default(),
            }),
        };
        spawn_retention(&runtime, &tidings);
        if let Some(broker) = broker {
            start_broker(&runtime, broker, &tidings.shared.hub);
        }
        Ok(tidings)
    }
}

/// The hooks the application set, and for each it did not, the `[proxy]` URL's HTTP call
/// (the `webhooks` feature), bounded by `proxy.timeout`.
fn proxy_hooks(mut hooks: Hooks, config: &Config) -> Result<Hooks, BuildError> {
    hooks.timeout = config.proxy.timeout;
    let proxy = &config.proxy;
    let urls = [&proxy.connect, &proxy.subscribe, &proxy.publish, &proxy.rpc];
    if urls.iter().all(|url| url.is_none()) {
        return Ok(hooks);
    }
    #[cfg(feature = "webhooks")]
    {
        let client = Arc::new(crate::proxy::ProxyClient::new(proxy).map_err(BuildError::Proxy)?);
        if hooks.connect.is_none() && proxy.connect.is_some() {
            hooks.connect = Some(client.connect_hook());
        }
        if hooks.subscribe.is_none() && proxy.subscribe.is_some() {
            hooks.subscribe = Some(client.subscribe_hook());
        }
        if hooks.publish.is_none() && proxy.publish.is_some() {
            hooks.publish = Some(client.publish_hook());
        }
        if hooks.rpc.is_none() && proxy.rpc.is_some() {
            hooks.rpc = Some(client.rpc_hook());
        }
        Ok(hooks)
    }
    #[cfg(not(feature = "webhooks"))]
    {
        Err(BuildError::Proxy(
            "[proxy] needs the `webhooks` cargo feature (its HTTP client)".to_owned(),
        ))
    }
}

/// Starts delivering webhooks (the `webhooks` feature), or refuses a configuration that
/// names endpoints when the feature is off.
fn start_webhooks(
    runtime: &tokio::runtime::Handle,
    hooks: &Arc<Webhooks>,
    outbox: &Arc<dyn crate::store::WebhookOutbox>,
) -> Result<(), BuildError> {
    #[cfg(feature = "webhooks")]
    {
        crate::webhooks::spawn_worker(runtime, hooks.clone(), Arc::downgrade(outbox))
            .map_err(BuildError::WebhookClient)
    }
    #[cfg(not(feature = "webhooks"))]
    {
        let _ = (runtime, hooks, outbox);
        Err(BuildError::WebhooksNotBuilt)
    }
}

/// What the broker receives waits here for the hub (bounded: a node that falls behind
/// slows its broker's receiver, which then skips ahead and says so).
const BROKER_INBOX: usize = 4096;

/// Starts the broker and the task that hands what it receives to the hub.
fn start_broker(runtime: &tokio::runtime::Handle, broker: Arc<dyn Broker>, hub: &Arc<Hub>) {
    let (inbox, received) = tokio::sync::mpsc::channel(BROKER_INBOX);
    runtime.spawn(crate::hub::run_inbox(Arc::downgrade(hub), received));
    runtime.spawn(crate::hub::run_presence(Arc::downgrade(hub)));
    runtime.spawn(async move {
        if let Err(e) = broker.start(inbox).await {
            tracing::error!(error = %e, "the broker did not start: this node serves its own clients only");
        }
    });
}

/// Enforces retention every `retention_interval` while the node exists.
fn spawn_retention(runtime: &tokio::runtime::Handle, tidings: &Tidings) {
    let shared = Arc::downgrade(&tidings.shared);
    let every = tidings
        .shared
        .config
        .retention_interval
        .max(Duration::from_secs(1));
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let tidings = Tidings { shared };
            if let Err(e) = tidings.prune().await {
                tracing::warn!(error = %e, "retention failed");
            }
        }
    });
}
