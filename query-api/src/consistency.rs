//! Read-your-writes. A command's response carries a consistency token (the
//! global position of the last event it appended). A GraphQL request that
//! sends it back in `X-Consistency-Token` has each resolver wait, before it
//! reads, until its projection has applied everything that command wrote:
//! every aggregate of the command's transaction, at the sequence it reached
//! (and so everything before it on those aggregates). The wait is bounded
//! by `CONSISTENCY_TIMEOUT_MS` from the start of the request; past it the
//! field fails with `CONSISTENCY_TIMEOUT`, naming the projection.
//!
//! A field that reads the event store itself (`orderAsOf`) declares no
//! projection and never waits: the command's transaction committed its
//! events before the command answered with the token.
//!
//! A token covers its own command. A client that made several commands
//! (placed three orders, then lists them) sends all their tokens,
//! comma-separated, up to [`MAX_TOKENS`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::QueryError;
use crate::read_models::ReadModels;
use crate::search::SearchIndex;

/// The header that carries a command's consistency token.
pub const HEADER: &str = "x-consistency-token";

/// The most tokens one request may carry.
pub const MAX_TOKENS: usize = 32;

/// A projection a resolver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadModel {
    ProductCatalog,
    BasketView,
    OrderView,
    SalesDaily,
    Search,
}

impl ReadModel {
    /// The projection's name, as `eshop projections status` shows it (the
    /// read model's own).
    #[must_use]
    pub const fn name(self) -> &'static str {
        use ::read_models::{
            ReadModel as _, basket_view, order_view, product_catalog, sales_daily,
        };
        match self {
            Self::ProductCatalog => product_catalog::ProductCatalog::NAME,
            Self::BasketView => basket_view::BasketView::NAME,
            Self::OrderView => order_view::OrderView::NAME,
            Self::SalesDaily => sales_daily::SalesDaily::NAME,
            Self::Search => ::read_models::SEARCH,
        }
    }

    /// Whether it reads events of `aggregate_type`, as the registry says.
    fn reads(self, aggregate_type: &str) -> bool {
        static CATALOG: std::sync::LazyLock<Vec<(&str, &[&str])>> =
            std::sync::LazyLock::new(::read_models::catalog);
        CATALOG
            .iter()
            .any(|(name, types)| *name == self.name() && types.contains(&aggregate_type))
    }
}

/// One request's consistency requirement.
pub struct Consistency {
    token: Option<String>,
    deadline: Instant,
    timeout: Duration,
    /// What the token's command wrote: (aggregate type, id, sequence).
    written: OnceCell<Vec<(String, String, i64)>>,
    reached: Mutex<HashSet<ReadModel>>,
}

impl Consistency {
    /// No token: reads take the views as they are.
    #[must_use]
    pub fn none() -> Self {
        Self::new(None, Duration::ZERO)
    }

    #[must_use]
    pub fn new(token: Option<String>, timeout: Duration) -> Self {
        Self {
            token,
            deadline: Instant::now() + timeout,
            timeout,
            written: OnceCell::new(),
            reached: Mutex::default(),
        }
    }

    /// Waits until `model` has applied what the token's command wrote.
    /// Returns at once without a token, or once the model was reached
    /// earlier in this request.
    pub async fn wait_for(
        &self,
        model: ReadModel,
        read_models: &ReadModels,
        search: &SearchIndex,
    ) -> Result<(), QueryError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if self
            .reached
            .lock()
            .map(|r| r.contains(&model))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let span = telemetry::span!(
            "consistency.wait",
            read_model = model.name(),
            token = %token,
        );
        self.wait_until_applied(token, model, read_models, search)
            .instrument(span)
            .await
    }

    async fn wait_until_applied(
        &self,
        token: &str,
        model: ReadModel,
        read_models: &ReadModels,
        search: &SearchIndex,
    ) -> Result<(), QueryError> {
        let written = self
            .written
            .get_or_try_init(|| async {
                let tokens: Vec<&str> = token.split(',').map(str::trim).collect();
                if tokens.len() > MAX_TOKENS {
                    return Err(QueryError::bad_input(format!(
                        "X-Consistency-Token carries at most {MAX_TOKENS} tokens"
                    )));
                }
                let mut written = Vec::new();
                for token in tokens {
                    let position: i64 = token.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                        QueryError::bad_input(format!(
                            "X-Consistency-Token: '{}' is not a token from a command response",
                            token.chars().take(32).collect::<String>()
                        ))
                    })?;
                    let of_command = read_models.written_with(position).await?;
                    if of_command.is_empty() {
                        return Err(QueryError::bad_input(format!(
                            "X-Consistency-Token: {position} names no event of this event store"
                        )));
                    }
                    written.extend(of_command);
                }
                Ok::<_, QueryError>(written)
            })
            .await?;
        let mine: Vec<&(String, String, i64)> =
            written.iter().filter(|(t, _, _)| model.reads(t)).collect();
        let mut pause = Duration::from_millis(2);
        loop {
            let done = if mine.is_empty() {
                true
            } else if model == ReadModel::Search {
                search.has_applied(&mine).await?
            } else {
                let pairs: Vec<(String, i64)> =
                    mine.iter().map(|(_, id, s)| (id.clone(), *s)).collect();
                read_models.not_yet_applied(model.name(), &pairs).await? == 0
            };
            if done {
                if model == ReadModel::Search && !mine.is_empty() {
                    search.refresh().await?;
                }
                if let Ok(mut reached) = self.reached.lock() {
                    reached.insert(model);
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= self.deadline {
                metrics::counter!("eshop_graphql_consistency_timeouts_total", "projection" => model.name())
                    .increment(1);
                return Err(QueryError::ConsistencyTimeout {
                    projection: model.name().to_owned(),
                    waited_ms: self.timeout.as_millis(),
                });
            }
            tokio::time::sleep(pause.min(self.deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }
}
