//! Command handlers: load the aggregates a command touches, let them
//! decide, and commit what they decided as one unit of work.
//!
//! Consistency rules, in one place:
//! - Every aggregate is appended at the version it was loaded at; a
//!   concurrent append to any of them makes the whole unit of work fail
//!   with a conflict and nothing is written.
//! - Without `If-Match`, a conflict is retried from scratch (reload,
//!   decide again) with jittered exponential backoff, a bounded number of
//!   times. With `If-Match`, a conflict or a version mismatch is reported.
//! - An idempotency key is claimed before the command runs. A duplicate
//!   that arrives while the claim is held waits (a bounded time) for the
//!   outcome and replays it, and never runs the command against the state
//!   the first request left; if the wait runs out it is told the key is in
//!   progress. The outcome is stored in the same transaction as the events,
//!   and only while the claim is held, so nothing is appended twice. A
//!   command that fails releases its claim: failures are not remembered,
//!   and a retry runs the command again.
//! - A command that spans aggregates (checkout, cancel, ship) commits all
//!   of their events in one transaction: see `checkout.rs`.

mod baskets;
pub mod catalog;
mod checkout;
mod context;
mod error;
mod orders;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use domain::CustomerId;
use domain::basket::{Basket, BasketError};
use domain::order::{Order, OrderError};
use domain::product::{Product, ProductError};
use event_store::{Commit, CommitError, EventStore, IdempotencyRecord, Loaded, UnitOfWork};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

pub use context::{CommandContext, IdempotencyKey};
pub use error::CommandError;

/// The kind of resource a command addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Product,
    Basket,
    Order,
}

impl Resource {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Basket => "basket",
            Self::Order => "order",
        }
    }
}

/// What a successful command did. Stored with its idempotency key and
/// returned again, unchanged, to a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Accepted {
        resource: Resource,
        id: Uuid,
        /// The aggregate's version after the command.
        version: usize,
        /// The global position of the last event written for the aggregate.
        consistency_token: String,
        created: bool,
    },
    CheckedOut {
        order_id: Uuid,
        order_version: usize,
        basket_id: Uuid,
        basket_version: usize,
        consistency_token: String,
    },
}

/// What a command would commit, and how to describe the result once
/// committed.
pub(crate) struct Plan {
    uow: UnitOfWork,
    outcome: Arc<dyn Fn(&Commit) -> Outcome + Send + Sync>,
}

/// How hard to try when concurrent writers collide, and how long to wait
/// for a concurrent request with the same idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How long a request waits for the outcome of another request that
    /// holds its idempotency key before answering that the key is in
    /// progress.
    pub idempotency_wait: Duration,
    /// How long a claim on an idempotency key lasts. A request that crashed
    /// holds its key this long at most; one that is still running when it
    /// lapses cannot commit any more (so this bounds liveness, never
    /// safety). Far longer than a command takes, retries included.
    pub idempotency_lease: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 30,
            min_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
            idempotency_wait: Duration::from_secs(5),
            idempotency_lease: Duration::from_secs(30),
        }
    }
}

/// Releases a claim on an idempotency key if the request holding it is
/// dropped before it finishes (its client went away), so that the client's
/// retry need not wait for the claim to lapse. Releasing is always safe: it
/// removes only a claim that has no outcome and is still this request's.
struct AbandonedClaim {
    release: Option<(EventStore, String, Uuid)>,
}

impl AbandonedClaim {
    fn new(store: &EventStore, key: &str, claim: Uuid) -> Self {
        Self {
            release: Some((store.clone(), key.to_owned(), claim)),
        }
    }

    /// The request finished: it stored its outcome or releases the claim
    /// itself.
    fn disarm(mut self) {
        self.release = None;
    }
}

impl Drop for AbandonedClaim {
    fn drop(&mut self) {
        let Some((store, key, claim)) = self.release.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(error) = store.release_idempotency_key(&key, claim).await {
                tracing::warn!(%error, "failed to release an abandoned idempotency claim");
            }
        });
    }
}

/// Executes commands against the event store.
#[derive(Clone)]
pub struct CommandService {
    store: EventStore,
    retry: RetryPolicy,
}

pub(crate) fn token(position: Option<i64>) -> String {
    position.unwrap_or(0).to_string()
}

/// Aggregates that may belong to a customer.
pub(crate) trait Owned: Aggregate {
    /// The customer it belongs to; none for the catalog's products.
    fn owner(&self) -> Option<CustomerId>;
    /// The error for an id that does not exist, which is also what another
    /// customer's aggregate answers.
    fn absent() -> CommandError;
}

impl Owned for Basket {
    fn owner(&self) -> Option<CustomerId> {
        self.customer_id()
    }
    fn absent() -> CommandError {
        BasketError::NotOpened.into()
    }
}

impl Owned for Order {
    fn owner(&self) -> Option<CustomerId> {
        self.customer_id()
    }
    fn absent() -> CommandError {
        OrderError::NotPlaced.into()
    }
}

impl Owned for Product {
    fn owner(&self) -> Option<CustomerId> {
        None
    }
    fn absent() -> CommandError {
        ProductError::NotRegistered.into()
    }
}

/// Runs a command handler on a loaded aggregate and returns the events it
/// decided (already applied to the aggregate by cqrs-es's sink).
pub(crate) async fn decide<A>(
    loaded: &mut Loaded<A>,
    command: A::Command,
) -> Result<Vec<A::Event>, A::Error>
where
    A: Aggregate<Services = ()>,
{
    let span = telemetry::span!("decide", aggregate.type = A::TYPE);
    let sink = EventSink::default();
    async {
        loaded.aggregate.handle(command, &(), &sink).await?;
        Ok(sink.collect().await)
    }
    .instrument(span)
    .await
}

impl CommandService {
    #[must_use]
    pub const fn new(store: EventStore, retry: RetryPolicy) -> Self {
        Self { store, retry }
    }

    #[must_use]
    pub const fn store(&self) -> &EventStore {
        &self.store
    }

    /// Checks that the caller may touch the aggregate a command addresses
    /// (another customer's answers as one that does not exist), then
    /// `If-Match` against it.
    pub(crate) fn check_version<A: Owned>(
        ctx: &CommandContext,
        loaded: &Loaded<A>,
    ) -> Result<(), CommandError> {
        if let Some(customer) = ctx.owner
            && loaded.exists()
            && loaded.aggregate.owner() != Some(customer)
        {
            return Err(A::absent());
        }
        match ctx.expected_version {
            Some(expected) if loaded.exists() && expected != loaded.version => {
                Err(CommandError::StaleVersion {
                    expected,
                    current: loaded.version,
                })
            }
            _ => Ok(()),
        }
    }

    /// Runs a command once per idempotency key: claims the key, or replays
    /// the outcome of the request that holds it. In a span of its own,
    /// whose trace context its events carry (see
    /// [`CommandContext::metadata_for`]).
    pub(crate) async fn run<F, Fut>(
        &self,
        ctx: &CommandContext,
        resource: Resource,
        plan: F,
    ) -> Result<Outcome, CommandError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Plan, CommandError>>,
    {
        let span = telemetry::span!(
            "command",
            resource = resource.name(),
            command.id = %ctx.command_id,
        );
        self.run_once(ctx, resource, plan).instrument(span).await
    }

    async fn run_once<F, Fut>(
        &self,
        ctx: &CommandContext,
        resource: Resource,
        mut plan: F,
    ) -> Result<Outcome, CommandError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Plan, CommandError>>,
    {
        let Some(idempotency) = &ctx.idempotency else {
            return self.execute(ctx, resource, &mut plan, None).await;
        };
        loop {
            let claim = Uuid::now_v7();
            if let Some(outcome) = self.claim(idempotency, claim).await? {
                return Ok(outcome);
            }
            let abandoned = AbandonedClaim::new(&self.store, &idempotency.stored(), claim);
            let executed = self.execute(ctx, resource, &mut plan, Some(claim)).await;
            abandoned.disarm();
            let error = match executed {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            match self
                .store
                .release_idempotency_key(&idempotency.stored(), claim)
                .await
            {
                Ok(true) => return Err(error),
                // The claim was no longer ours: the commit went through
                // after all, or the claim lapsed and another request took
                // the key. Either way the stored outcome is the answer.
                Ok(false) => {
                    tracing::debug!(%error, "idempotency claim lost, waiting for the outcome");
                }
                Err(release) => {
                    // The claim lapses by itself; until then a retry is told
                    // the key is in progress.
                    tracing::warn!(error = %release, "failed to release an idempotency claim");
                    return Err(error);
                }
            }
        }
    }

    /// Claims an idempotency key for this request (`Ok(None)`), or returns
    /// the outcome of the request that holds it, waiting for it while it is
    /// in progress, up to [`RetryPolicy::idempotency_wait`].
    async fn claim(
        &self,
        idempotency: &IdempotencyKey,
        claim: Uuid,
    ) -> Result<Option<Outcome>, CommandError> {
        let deadline = Instant::now() + self.retry.idempotency_wait;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .without_max_times()
            .with_jitter()
            .build();
        loop {
            let stored = self
                .store
                .claim_idempotency_key(
                    &idempotency.stored(),
                    &idempotency.fingerprint,
                    claim,
                    self.retry.idempotency_lease,
                )
                .await?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            if stored.fingerprint != idempotency.fingerprint {
                return Err(CommandError::IdempotencyKeyReused);
            }
            if let Some(outcome) = stored.outcome {
                return match serde_json::from_value(outcome) {
                    Ok(outcome) => Ok(Some(outcome)),
                    Err(source) => Err(event_store::StoreError::Decode {
                        what: "idempotent outcome".into(),
                        source,
                    }
                    .into()),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CommandError::IdempotencyKeyInProgress {
                    key: idempotency.key.clone(),
                });
            }
            let delay = delays.next().unwrap_or(self.retry.max_delay);
            tokio::time::sleep(delay.min(left)).await;
        }
    }

    /// Plans, commits and, on a concurrency conflict, plans again. With an
    /// idempotency `claim`, the outcome is stored with the events.
    async fn execute<F, Fut>(
        &self,
        ctx: &CommandContext,
        resource: Resource,
        plan: &mut F,
        claim: Option<Uuid>,
    ) -> Result<Outcome, CommandError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Plan, CommandError>>,
    {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter()
            .build();
        loop {
            let Plan { mut uow, outcome } = plan().await?;
            if let (Some(idempotency), Some(claim)) = (&ctx.idempotency, claim) {
                let describe = Arc::clone(&outcome);
                uow.record_idempotency(IdempotencyRecord {
                    key: idempotency.stored(),
                    claim,
                    outcome: Box::new(move |commit| {
                        serde_json::to_value(describe(commit))
                            .expect("an outcome is ids, numbers and strings: it always serialises")
                    }),
                });
            }
            match self.store.commit(uow).await {
                Ok(commit) => return Ok(outcome(&commit)),
                Err(CommitError::Conflict {
                    aggregate_type,
                    aggregate_id,
                }) => {
                    if let Some(expected) = ctx.expected_version {
                        // The aggregate moved between our load and our
                        // append: the version the client saw is stale.
                        return Err(CommandError::ChangedConcurrently { expected });
                    }
                    let Some(delay) = delays.next() else {
                        tracing::warn!(aggregate.type = %aggregate_type, aggregate.id = %aggregate_id, "retries exhausted");
                        return Err(CommandError::ContentionExhausted {
                            resource: resource.name(),
                        });
                    };
                    tracing::debug!(aggregate.type = %aggregate_type, aggregate.id = %aggregate_id, delay_ms = delay.as_millis(), "conflict, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(CommitError::Duplicate { scope, value }) => {
                    return Err(CommandError::Duplicate {
                        field: scope,
                        value,
                    });
                }
                Err(CommitError::IdempotencyKeyTaken) => {
                    // Our claim lapsed and another request holds the key;
                    // `run` waits for its outcome.
                    return Err(CommandError::IdempotencyKeyInProgress {
                        key: ctx
                            .idempotency
                            .as_ref()
                            .map(|k| k.key.clone())
                            .unwrap_or_default(),
                    });
                }
                Err(CommitError::Store(error)) => return Err(error.into()),
            }
        }
    }

    /// A command on one aggregate.
    pub(crate) async fn single<A>(
        &self,
        ctx: &CommandContext,
        resource: Resource,
        id: Uuid,
        command: A::Command,
    ) -> Result<Outcome, CommandError>
    where
        A: Owned + Aggregate<Services = ()>,
        A::Command: Clone,
        CommandError: From<A::Error>,
    {
        let aggregate_id = id.to_string();
        self.run(ctx, resource, || async {
            let mut loaded = self.store.load::<A>(&aggregate_id).await?;
            Self::check_version(ctx, &loaded)?;
            let created = !loaded.exists();
            let events = decide(&mut loaded, command.clone()).await?;
            self.plan_single(ctx, resource, id, created, &loaded, events)
                .await
        })
        .await
    }

    /// The plan for events decided on one loaded aggregate.
    pub(crate) async fn plan_single<A: Aggregate>(
        &self,
        ctx: &CommandContext,
        resource: Resource,
        id: Uuid,
        created: bool,
        loaded: &Loaded<A>,
        events: Vec<A::Event>,
    ) -> Result<Plan, CommandError> {
        let aggregate_id = id.to_string();
        let version = loaded.version + events.len();
        // A command that changed nothing still answers with a token: the
        // position of the aggregate's last event.
        let unchanged_at = if events.is_empty() {
            self.store
                .last_global_position(A::TYPE, &aggregate_id)
                .await?
        } else {
            None
        };
        let mut uow = UnitOfWork::new();
        uow.append(&aggregate_id, loaded, events, |event| {
            ctx.metadata_for(event)
        })?;
        Ok(Plan {
            uow,
            outcome: Arc::new(move |commit| Outcome::Accepted {
                resource,
                id,
                version,
                consistency_token: token(commit.last_global_position.or(unchanged_at)),
                created,
            }),
        })
    }
}
