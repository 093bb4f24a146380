use axum::extract::State;
use domain::OrderId;
use domain::text::ShortText;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommandHeaderParams, NoBody};
use crate::auth::Authenticated;
use crate::commands::Outcome;
use crate::error::{ApiError, CommandErrors};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::input::{self, Fields, MoneyInput};
use crate::responses::CommandAccepted;
use crate::startup::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pay))
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .routes(routes!(cancel))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pay {
    #[schema(
        example = "psp-7f3a9",
        min_length = 1,
        max_length = 200,
        pattern = "\\S"
    )]
    payment_reference: String,
    /// Must equal the order total.
    amount: MoneyInput,
}

/// Records an order's payment.
#[utoipa::path(post, path = "/orders/{id}/pay", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id"), CommandHeaderParams),
    request_body = Pay,
    responses((status = 200, description = "Paid", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn pay(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<OrderId>,
    headers: CommandHeaders,
    body: ApiJson<Pay>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    let mut fields = Fields::default();
    let reference = fields.check(
        "payment_reference",
        ShortText::parse(&body.value.payment_reference),
    );
    let amount = body.value.amount.parse(&mut fields, "amount");
    let (Some(reference), Some(amount)) = (reference, amount) else {
        return Err(fields.into_error());
    };
    Ok(app
        .commands
        .pay(
            &headers.context(&who, scope, body.fingerprint),
            id,
            reference,
            amount,
        )
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    #[schema(
        example = "1Z999AA10123456784",
        min_length = 1,
        max_length = 200,
        pattern = "\\S"
    )]
    tracking_number: String,
}

/// Ships a paid order; its reserved stock leaves the warehouse.
#[utoipa::path(post, path = "/orders/{id}/ship", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id"), CommandHeaderParams),
    request_body = Ship,
    responses((status = 200, description = "Shipped", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn ship(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<OrderId>,
    headers: CommandHeaders,
    body: ApiJson<Ship>,
) -> Result<Outcome, ApiError> {
    let scope = who.staff_scope()?;
    let tracking = input::one(
        "tracking_number",
        ShortText::parse(&body.value.tracking_number),
    )?;
    Ok(app
        .commands
        .ship(
            &headers.context(&who, scope, body.fingerprint),
            id,
            tracking,
        )
        .await?)
}

/// Records that a shipped order was delivered.
#[utoipa::path(post, path = "/orders/{id}/deliver", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id"), CommandHeaderParams),
    request_body(content = Option<NoBody>, description = "Empty, or `{}`"),
    responses((status = 200, description = "Delivered", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn deliver(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<OrderId>,
    headers: CommandHeaders,
    body: ApiJson<NoBody>,
) -> Result<Outcome, ApiError> {
    let scope = who.staff_scope()?;
    Ok(app
        .commands
        .deliver(&headers.context(&who, scope, body.fingerprint), id)
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    #[schema(
        example = "customer changed their mind",
        min_length = 1,
        max_length = 200,
        pattern = "\\S"
    )]
    reason: String,
}

/// Cancels an order before it ships, releasing its reserved stock.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id"), CommandHeaderParams),
    request_body = Cancel,
    responses((status = 200, description = "Cancelled", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn cancel(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<OrderId>,
    headers: CommandHeaders,
    body: ApiJson<Cancel>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    let reason = input::one("reason", ShortText::parse(&body.value.reason))?;
    Ok(app
        .commands
        .cancel(&headers.context(&who, scope, body.fingerprint), id, reason)
        .await?)
}
