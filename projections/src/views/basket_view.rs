use async_trait::async_trait;
use domain::basket::BasketEvent;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::exact_sum::ExactSum;
use crate::event::{Event, Payload};
use crate::projector::Projection;
use crate::replay::{Fold, Rows, Table};

const TABLES: &[Table] = &[Table {
    name: "basket_view",
    columns: &[
        "basket_id",
        "customer_id",
        "status",
        "currency",
        "lines",
        "total_minor",
        "item_count",
        "order_id",
        "opened_at",
        "updated_at",
        "version",
    ],
    key: &["basket_id"],
    in_snapshot: true,
}];

/// `basket_view`: one row per basket with its lines, line totals and total.
pub struct BasketView;

/// A line as the view stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    product_id: uuid::Uuid,
    sku: String,
    name: String,
    unit_price_minor: i64,
    quantity: i64,
    /// Set where the totals are computed: by PostgreSQL in the live
    /// statement ([`PRICED`]), by [`priced`] in a rebuild.
    line_total_minor: i64,
}

/// The lines (`$2`) with their totals, the basket's total and its item
/// count, as the live statement computes them.
///
/// PostgreSQL does the live arithmetic: its `bigint` products are checked,
/// and its sums are `numeric`, checked again when stored in a `bigint`, so
/// a figure that would overflow fails the statement (SQLSTATE 22003) and the
/// event is dead-lettered, never stored wrapped or saturated. The domain
/// bounds prices, quantities and lines so that a basket total stays below
/// 4.95 × 10^15 minor units; only events stored before those bounds can get
/// there.
const PRICED: &str = "SELECT \
       coalesce(jsonb_agg(l.line || jsonb_build_object('line_total_minor', \
         (l.line->>'unit_price_minor')::bigint * (l.line->>'quantity')::bigint) ORDER BY l.n), '[]') AS lines, \
       coalesce(sum((l.line->>'unit_price_minor')::bigint * (l.line->>'quantity')::bigint), 0) AS total, \
       coalesce(sum((l.line->>'quantity')::bigint), 0) AS items \
     FROM jsonb_array_elements($2) WITH ORDINALITY AS l(line, n)";

#[async_trait]
impl Projection for BasketView {
    fn name(&self) -> &'static str {
        "basket_view"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Basket"]
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<BasketFold>::default()
    }

    async fn apply(&self, db: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
        let Payload::Basket(change) = &event.payload else {
            return Ok(());
        };
        let (id, version, at) = (
            event.aggregate_uuid(),
            event.envelope.aggregatesequence,
            event.envelope.time,
        );
        if let BasketEvent::BasketOpened { customer_id } = change {
            sqlx::query(
                "INSERT INTO basket_view (basket_id, customer_id, status, lines, total_minor, item_count, \
                   opened_at, updated_at, version) VALUES ($1, $2, 'open', '[]', 0, 0, $3, $3, $4)",
            )
            .bind(id)
            .bind(customer_id.as_uuid())
            .bind(at)
            .bind(version)
            .execute(db)
            .await?;
            return Ok(());
        }
        // The other changes edit the lines: read them, change them, write
        // them back with the totals (the row is locked for the transaction).
        let row =
            sqlx::query("SELECT lines, currency FROM basket_view WHERE basket_id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *db)
                .await?;
        let mut lines: Vec<Line> =
            serde_json::from_value(row.try_get("lines")?).unwrap_or_default();
        let mut currency: Option<String> = row.try_get("currency")?;
        let (status, order_id) = edit(&mut lines, &mut currency, change);
        sqlx::query(&format!(
            "UPDATE basket_view SET lines = priced.lines, currency = $3, total_minor = priced.total, \
               item_count = priced.items, status = $4, order_id = coalesce($5, order_id), version = $6, \
               updated_at = $7 FROM ({PRICED}) AS priced WHERE basket_id = $1"
        ))
        .bind(id)
        .bind(serde_json::to_value(&lines).unwrap_or_default())
        .bind(currency)
        .bind(status)
        .bind(order_id)
        .bind(version)
        .bind(at)
        .execute(db)
        .await?;
        Ok(())
    }
}

/// What a change other than opening does to the lines and currency; the
/// basket's status and order after it.
fn edit(
    lines: &mut Vec<Line>,
    currency: &mut Option<String>,
    change: &BasketEvent,
) -> (&'static str, Option<uuid::Uuid>) {
    let mut status = "open";
    let mut order_id = None;
    match change {
        BasketEvent::BasketOpened { .. } => {}
        BasketEvent::ItemAdded {
            product_id,
            sku,
            name,
            unit_price,
            quantity,
        } => {
            lines.push(Line {
                product_id: *product_id.as_uuid(),
                sku: sku.to_string(),
                name: name.to_string(),
                unit_price_minor: unit_price.minor,
                quantity: i64::from(*quantity),
                line_total_minor: 0,
            });
            currency.get_or_insert_with(|| unit_price.currency.to_string());
        }
        BasketEvent::ItemQuantityChanged {
            product_id,
            quantity,
        } => {
            if let Some(line) = lines
                .iter_mut()
                .find(|l| l.product_id == *product_id.as_uuid())
            {
                line.quantity = i64::from(*quantity);
            }
        }
        BasketEvent::ItemRemoved { product_id } => {
            lines.retain(|l| l.product_id != *product_id.as_uuid())
        }
        BasketEvent::BasketCleared {} => lines.clear(),
        BasketEvent::BasketCheckedOut { order_id: placed } => {
            status = "checked_out";
            order_id = Some(*placed.as_uuid());
        }
    }
    if lines.is_empty() && status == "open" {
        *currency = None;
    }
    (status, order_id)
}

/// Sets each line's total; the basket's total and item count, as
/// [`PRICED`] computes them. A line total beyond `bigint` leaves the
/// basket's total out of range, which fails the rebuild's COPY as the live
/// statement fails.
fn priced(lines: &mut [Line]) -> (ExactSum, ExactSum) {
    let (mut total, mut items) = (ExactSum::default(), ExactSum::default());
    for line in lines {
        let mut line_total = ExactSum::default();
        line_total.add_product(line.unit_price_minor, line.quantity);
        match line_total.value() {
            Some(value) => line.line_total_minor = value,
            None => total.overflow(),
        }
        total.add_product(line.unit_price_minor, line.quantity);
        items.add(i128::from(line.quantity));
    }
    (total, items)
}

/// A `basket_view` row.
struct BasketRow {
    basket_id: uuid::Uuid,
    customer_id: uuid::Uuid,
    status: &'static str,
    currency: Option<String>,
    lines: Vec<Line>,
    order_id: Option<uuid::Uuid>,
    opened_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    version: i64,
}

#[derive(Default)]
struct BasketFold {
    basket: Option<BasketRow>,
}

impl Fold for BasketFold {
    fn apply(&mut self, event: &Event) {
        let Payload::Basket(change) = &event.payload else {
            return;
        };
        let (version, at) = (event.envelope.aggregatesequence, event.envelope.time);
        if let BasketEvent::BasketOpened { customer_id } = change {
            if self.basket.is_none() {
                self.basket = Some(BasketRow {
                    basket_id: event.aggregate_uuid(),
                    customer_id: *customer_id.as_uuid(),
                    status: "open",
                    currency: None,
                    lines: Vec::new(),
                    order_id: None,
                    opened_at: at,
                    updated_at: at,
                    version,
                });
            }
            return;
        }
        let Some(basket) = &mut self.basket else {
            return;
        };
        let (status, order_id) = edit(&mut basket.lines, &mut basket.currency, change);
        basket.status = status;
        basket.order_id = order_id.or(basket.order_id);
        basket.version = version;
        basket.updated_at = at;
    }

    fn end_aggregate(&mut self, out: &mut Rows) {
        if let Some(mut b) = self.basket.take() {
            let (total, items) = priced(&mut b.lines);
            let lines = serde_json::to_value(&b.lines).unwrap_or_default();
            out.row(
                0,
                &[
                    &b.basket_id,
                    &b.customer_id,
                    &b.status,
                    &b.currency,
                    &lines,
                    &total,
                    &items,
                    &b.order_id,
                    &b.opened_at,
                    &b.updated_at,
                    &b.version,
                ],
            );
        }
    }
}
