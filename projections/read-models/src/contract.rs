//! The read-model contract: what a read model declares ([`ReadModel`]),
//! and how the projector runs any of them ([`Projection`], implemented once
//! for all of them by [`View`]).

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::Event;
use crate::rows::{Rows, Table};

/// Why an event cannot be folded into a read model. It would fail the same
/// way on every try: the live projector dead-letters the event, a rebuild
/// or verify fails naming it.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// A figure would not fit its `bigint` column; it is never stored
    /// wrapped or saturated.
    #[error("{what} is out of range for a bigint")]
    OutOfRange { what: &'static str },
    /// A stored row could not be read back into the read model's row type:
    /// the table holds something the projection never wrote.
    #[error("the {table} row of {key} does not decode: {source}")]
    StoredRow {
        table: &'static str,
        key: Uuid,
        source: serde_json::Error,
    },
    /// A row could not be encoded for writing.
    #[error("a {table} row does not encode: {source}")]
    Encode {
        table: &'static str,
        source: serde_json::Error,
    },
}

/// Computes a projection's rows from whole histories, for rebuilds: the
/// events of one aggregate at a time, in sequence order, then the next.
/// It gives exactly the rows that applying the same events one by one
/// gives: both run the read model's one fold ([`crate::ReadModel::fold`]).
pub trait Fold: Send {
    /// Takes the next event of the current aggregate.
    fn apply(&mut self, event: &Event) -> Result<(), FoldError>;

    /// The current aggregate has no more events: write its rows, and start
    /// afresh for the next one.
    fn end_aggregate(&mut self, out: &mut Rows);

    /// Every aggregate is in: write the rows kept across aggregates (totals).
    fn end(&mut self, _out: &mut Rows) {}
}

/// Why a batch of events was not applied to a read model's tables.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database failed or refused the change.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// The events do not fold (see [`FoldError`]).
    #[error(transparent)]
    Data(#[from] FoldError),
}

/// For read models without rows shared between aggregates: no such
/// change can exist.
#[derive(Debug)]
pub enum NoTotals {}

/// A read model, declared once.
///
/// Its state is one row per aggregate in [`ReadModel::TABLES`]`[`
/// [`ReadModel::ROW_TABLE`]`]`, keyed by the aggregate's id, that
/// [`ReadModel::fold`] computes from the aggregate's events. A read model
/// may also keep rows shared by many aggregates (daily totals): the fold
/// emits additive changes to them ([`ReadModel::Delta`]), which the live
/// path adds in PostgreSQL ([`ReadModel::book`]), so that concurrent
/// batches add up, and a rebuild adds in memory ([`ReadModel::total`]).
pub trait ReadModel: Send + Sync + 'static {
    /// Names the projection: its consumer group, progress and metrics.
    const NAME: &'static str;
    /// The aggregate types whose events it reads.
    const AGGREGATE_TYPES: &'static [&'static str];
    /// The tables it owns, the main one first; a rebuild replaces them all.
    const TABLES: &'static [Table];
    /// Which of [`ReadModel::TABLES`] holds the row per aggregate; its
    /// key is one `uuid` column, the aggregate's id.
    const ROW_TABLE: usize = 0;

    /// The row per aggregate. Its serde field names are the table's
    /// columns: it is read back with `to_jsonb` and written with
    /// `jsonb_populate_recordset`.
    type Row: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync;
    /// An additive change to a shared row ([`NoTotals`] when there are none).
    type Delta: Send;
    /// The shared rows as a rebuild adds them up (`()` when there are none).
    type Totals: Default + Send;

    /// Folds one event of an aggregate into its row (`None` until the
    /// event that creates it), in sequence order. Events that do not
    /// concern the read model change nothing.
    fn fold(
        row: &mut Option<Self::Row>,
        event: &Event,
        deltas: &mut Vec<Self::Delta>,
    ) -> Result<(), FoldError>;

    /// Writes a row for COPY, in the order of the table's columns.
    fn copy(row: &Self::Row, out: &mut Rows);

    /// Adds a change to the rebuild's totals.
    fn total(_totals: &mut Self::Totals, _delta: Self::Delta) {}

    /// Writes the rebuild's totals for COPY.
    fn copy_totals(_totals: Self::Totals, _out: &mut Rows) {}

    /// Adds changes to the shared rows, in one statement of the live
    /// projector's transaction.
    fn book(
        db: &mut PgConnection,
        deltas: Vec<Self::Delta>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = (db, deltas);
        async { Ok(()) }
    }
}

/// A read model as the projector, rebuild and verify run it, whatever its
/// row type: the registry ([`crate::all`]) is a list of these.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Names the projection's consumer group and progress.
    fn name(&self) -> &'static str;

    /// The aggregate types whose topics it reads.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// The tables it owns, the main one first; a rebuild replaces them all.
    fn tables(&self) -> &'static [Table];

    /// Computes its rows from whole histories, for rebuilds.
    fn fold(&self) -> Box<dyn Fold>;

    /// Applies events that the caller has claimed (in sequence order within
    /// each aggregate), inside the caller's transaction: loads the rows of
    /// their aggregates in one statement, folds, and writes the changed
    /// rows back in one statement.
    async fn apply(&self, db: &mut PgConnection, events: &[&Event]) -> Result<(), ApplyError>;
}

/// Runs a [`ReadModel`]: its statements are built once from its table.
pub struct View<M> {
    load: String,
    write: String,
    model: PhantomData<fn() -> M>,
}

impl<M: ReadModel> View<M> {
    #[must_use]
    pub fn new() -> Self {
        let table = &M::TABLES[M::ROW_TABLE];
        let key = table.key[0];
        let columns = table.columns.join(", ");
        let updates = table
            .columns
            .iter()
            .filter(|c| !table.key.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            load: format!(
                "SELECT {key}, to_jsonb(t) FROM {name} t WHERE {key} = ANY($1)",
                name = table.name
            ),
            write: format!(
                "INSERT INTO {name} ({columns}) \
                 SELECT {columns} FROM jsonb_populate_recordset(NULL::{name}, $1) \
                 ON CONFLICT ({key}) DO UPDATE SET {updates}",
                name = table.name
            ),
            model: PhantomData,
        }
    }
}

impl<M: ReadModel> Default for View<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// What a batch of events makes of a read model's rows.
pub struct Folded<M: ReadModel> {
    /// Each aggregate's row after the batch, in the order the aggregates
    /// first appear in it (`None`: not created yet).
    pub rows: Vec<(Uuid, Option<M::Row>)>,
    /// The changes to shared rows, in event order.
    pub deltas: Vec<M::Delta>,
}

/// Folds a batch into the rows it starts from. Pure: what [`View`] runs
/// between its two statements.
pub fn fold_batch<M: ReadModel>(
    mut rows: HashMap<Uuid, M::Row>,
    events: &[&Event],
) -> Result<Folded<M>, FoldError> {
    let mut order: Vec<Uuid> = Vec::new();
    let mut states: HashMap<Uuid, Option<M::Row>> = HashMap::new();
    let mut deltas = Vec::new();
    for event in events {
        let id = event.aggregate_uuid();
        let state = states.entry(id).or_insert_with(|| {
            order.push(id);
            rows.remove(&id)
        });
        M::fold(state, event, &mut deltas)?;
    }
    let folded = order
        .into_iter()
        .map(|id| {
            let state = states.remove(&id).flatten();
            (id, state)
        })
        .collect();
    Ok(Folded {
        rows: folded,
        deltas,
    })
}

#[async_trait]
impl<M: ReadModel> Projection for View<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        M::AGGREGATE_TYPES
    }

    fn tables(&self) -> &'static [Table] {
        M::TABLES
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::new(ViewFold::<M> {
            row: None,
            totals: M::Totals::default(),
            deltas: Vec::new(),
        })
    }

    async fn apply(&self, db: &mut PgConnection, events: &[&Event]) -> Result<(), ApplyError> {
        if events.is_empty() {
            return Ok(());
        }
        let table = M::TABLES[M::ROW_TABLE].name;
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.aggregate_uuid()).collect();
        ids.sort_unstable();
        ids.dedup();
        let stored: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(&self.load)
            .bind(&ids)
            .fetch_all(&mut *db)
            .await?;
        let mut before = HashMap::with_capacity(stored.len());
        for (key, value) in stored {
            let row: M::Row = serde_json::from_value(value)
                .map_err(|source| FoldError::StoredRow { table, key, source })?;
            before.insert(key, row);
        }
        let Folded {
            rows: mut after,
            deltas,
        } = fold_batch::<M>(before.clone(), events)?;
        // Rows written in key order, as concurrent batches lock them.
        after.sort_unstable_by_key(|(id, _)| *id);
        let changed: Vec<&M::Row> = after
            .iter()
            .filter_map(|(id, row)| row.as_ref().filter(|row| before.get(id) != Some(*row)))
            .collect();
        if !changed.is_empty() {
            let rows = serde_json::to_value(&changed)
                .map_err(|source| FoldError::Encode { table, source })?;
            sqlx::query(&self.write)
                .bind(rows)
                .execute(&mut *db)
                .await?;
        }
        if !deltas.is_empty() {
            M::book(db, deltas).await?;
        }
        Ok(())
    }
}

/// A rebuild's fold of a [`ReadModel`].
struct ViewFold<M: ReadModel> {
    row: Option<M::Row>,
    totals: M::Totals,
    deltas: Vec<M::Delta>,
}

impl<M: ReadModel> Fold for ViewFold<M> {
    fn apply(&mut self, event: &Event) -> Result<(), FoldError> {
        M::fold(&mut self.row, event, &mut self.deltas)?;
        for delta in self.deltas.drain(..) {
            M::total(&mut self.totals, delta);
        }
        Ok(())
    }

    fn end_aggregate(&mut self, out: &mut Rows) {
        if let Some(row) = self.row.take() {
            M::copy(&row, out);
        }
    }

    fn end(&mut self, out: &mut Rows) {
        M::copy_totals(std::mem::take(&mut self.totals), out);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::basket_view::BasketView;
    use crate::testing::{History, money};

    #[test]
    fn a_batch_folds_each_aggregate_from_its_stored_row_as_one_by_one() {
        let (mut one, mut two) = (History::new("Basket"), History::new("Basket"));
        let open = |b: &mut History| b.next("BasketOpened", json!({"customer_id": Uuid::now_v7()}));
        let add = |b: &mut History, price| {
            b.next(
                "ItemAdded",
                json!({"product_id": Uuid::now_v7(), "sku": "S", "name": "N",
                       "unit_price": money(price, "EUR"), "quantity": 1}),
            )
        };
        let stored_events = [open(&mut one), add(&mut one, 100)];
        let batch = [
            open(&mut two),
            add(&mut one, 20),
            add(&mut two, 5),
            add(&mut one, 3),
        ];
        // One event at a time, as if each were its own batch.
        let mut expected: HashMap<Uuid, Option<_>> = HashMap::new();
        for event in stored_events.iter().chain(&batch) {
            let row = expected.entry(event.aggregate_uuid()).or_default();
            BasketView::fold(row, event, &mut Vec::new()).expect("folds");
        }
        // The batch, from the row stored before it.
        let mut stored = None;
        for event in &stored_events {
            BasketView::fold(&mut stored, event, &mut Vec::new()).expect("folds");
        }
        let rows = HashMap::from([(one.id, stored.expect("a row"))]);
        let refs: Vec<&Event> = batch.iter().collect();
        let folded = fold_batch::<BasketView>(rows, &refs).expect("folds");
        let ids: Vec<Uuid> = folded.rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [two.id, one.id], "in the order they first appear");
        for (id, row) in folded.rows {
            assert_eq!(row, expected[&id]);
        }
        let totals: Vec<i64> = [one.id, two.id]
            .iter()
            .map(|id| expected[id].as_ref().expect("a row").total_minor)
            .collect();
        assert_eq!(totals, [123, 5]);
    }

    #[test]
    fn one_bad_event_fails_the_whole_batch() {
        let mut basket = History::new("Basket");
        let batch = [
            basket.next("BasketOpened", json!({"customer_id": Uuid::now_v7()})),
            basket.next(
                "ItemAdded",
                json!({"product_id": Uuid::now_v7(), "sku": "S", "name": "N",
                       "unit_price": money(i64::MAX, "EUR"), "quantity": 2}),
            ),
        ];
        let refs: Vec<&Event> = batch.iter().collect();
        assert!(fold_batch::<BasketView>(HashMap::new(), &refs).is_err());
    }

    #[test]
    fn the_statements_read_and_write_the_row_table_by_its_key() {
        let view = View::<crate::sales_daily::SalesDaily>::new();
        assert_eq!(
            view.load,
            "SELECT order_id, to_jsonb(t) FROM sales_daily_orders t WHERE order_id = ANY($1)"
        );
        assert_eq!(
            view.write,
            "INSERT INTO sales_daily_orders (order_id, day, lines) \
             SELECT order_id, day, lines FROM jsonb_populate_recordset(NULL::sales_daily_orders, $1) \
             ON CONFLICT (order_id) DO UPDATE SET day = EXCLUDED.day, lines = EXCLUDED.lines"
        );
    }
}
