use axum::extract::State;
use domain::{BasketId, CustomerId, ProductId};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CommandHeaderParams, NoBody};
use crate::auth::{Authenticated, Scope};
use crate::commands::Outcome;
use crate::error::{ApiError, CommandErrors};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::input::{AddressInput, Fields};
use crate::responses::{CheckoutAccepted, CommandAccepted};
use crate::startup::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_basket))
        .routes(routes!(add_item, clear_basket))
        .routes(routes!(change_quantity, remove_item))
        .routes(routes!(checkout))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenBasket {
    /// The basket's customer: the caller (the token's subject) when
    /// absent. A customer may name only themself; an admin anyone.
    customer_id: Option<Uuid>,
}

/// Opens a basket for the calling customer (or, for an admin, for the
/// customer named).
#[utoipa::path(post, path = "/baskets", tag = "baskets", params(CommandHeaderParams),
    request_body = OpenBasket,
    responses((status = 201, description = "Opened", body = CommandAccepted,
        headers(("Location" = String, description = "/baskets/{id}"), ("ETag" = String, description = "version")),
        links(("AddItem" = (operation_id = "add_item", parameters(("id" = "$response.body#/id")))), ("ClearBasket" = (operation_id = "clear_basket", parameters(("id" = "$response.body#/id")))), ("Checkout" = (operation_id = "checkout", parameters(("id" = "$response.body#/id")))))),
        CommandErrors))]
async fn open_basket(
    State(app): State<AppState>,
    who: Authenticated,
    headers: CommandHeaders,
    body: ApiJson<OpenBasket>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    let named = body.value.customer_id.map(CustomerId::from_uuid);
    let customer = match (scope, named) {
        (Scope::Own(own), Some(named)) if named != own => {
            return Err(ApiError::Forbidden(
                "a customer opens baskets for themself: customer_id must be yours, or left out"
                    .into(),
            ));
        }
        (Scope::Own(own), _) => own,
        (Scope::Any, named) => named.unwrap_or_else(|| who.customer_id()),
    };
    Ok(app
        .commands
        .open_basket(&headers.context(&who, scope, body.fingerprint), customer)
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    product_id: Uuid,
    /// 1 to 99 units per line (added to what the basket already holds).
    #[schema(minimum = 1, maximum = 99)]
    quantity: u32,
}

/// Adds a product to a basket (or more of it).
#[utoipa::path(post, path = "/baskets/{id}/items", tag = "baskets",
    params(("id" = Uuid, Path, description = "Basket id"), CommandHeaderParams),
    request_body = AddItem,
    responses((status = 200, description = "Added", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn add_item(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<BasketId>,
    headers: CommandHeaders,
    body: ApiJson<AddItem>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    let product_id = ProductId::from_uuid(body.value.product_id);
    let ctx = headers.context(&who, scope, body.fingerprint);
    Ok(app
        .commands
        .add_item(&ctx, id, product_id, body.value.quantity)
        .await?)
}

/// Empties a basket.
#[utoipa::path(delete, path = "/baskets/{id}/items", tag = "baskets",
    params(("id" = Uuid, Path, description = "Basket id"), CommandHeaderParams),
    responses((status = 200, description = "Cleared", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn clear_basket(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<BasketId>,
    headers: CommandHeaders,
    body: ApiJson<NoBody>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    Ok(app
        .commands
        .clear_basket(&headers.context(&who, scope, body.fingerprint), id)
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuantity {
    #[schema(minimum = 1, maximum = 99)]
    quantity: u32,
}

/// Sets the quantity of a product in a basket.
#[utoipa::path(put, path = "/baskets/{id}/items/{product_id}", tag = "baskets",
    params(("id" = Uuid, Path, description = "Basket id"), ("product_id" = Uuid, Path, description = "Product id"),
        CommandHeaderParams),
    request_body = ChangeQuantity,
    responses((status = 200, description = "Quantity set", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn change_quantity(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath((id, product_id)): ApiPath<(BasketId, ProductId)>,
    headers: CommandHeaders,
    body: ApiJson<ChangeQuantity>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    let ctx = headers.context(&who, scope, body.fingerprint);
    Ok(app
        .commands
        .change_quantity(&ctx, id, product_id, body.value.quantity)
        .await?)
}

/// Removes a product from a basket.
#[utoipa::path(delete, path = "/baskets/{id}/items/{product_id}", tag = "baskets",
    params(("id" = Uuid, Path, description = "Basket id"), ("product_id" = Uuid, Path, description = "Product id"),
        CommandHeaderParams),
    responses((status = 200, description = "Removed", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn remove_item(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath((id, product_id)): ApiPath<(BasketId, ProductId)>,
    headers: CommandHeaders,
    body: ApiJson<NoBody>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    Ok(app
        .commands
        .remove_item(
            &headers.context(&who, scope, body.fingerprint),
            id,
            product_id,
        )
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    shipping_address: AddressInput,
}

/// Checks a basket out: reserves stock for every line and places an order
/// at the current prices, all or nothing.
#[utoipa::path(post, path = "/baskets/{id}/checkout", tag = "baskets",
    params(("id" = Uuid, Path, description = "Basket id"), CommandHeaderParams),
    request_body = Checkout,
    responses((status = 201, description = "Order placed", body = CheckoutAccepted,
        headers(("Location" = String, description = "/orders/{order_id}"), ("ETag" = String, description = "order version")),
        links(("Pay" = (operation_id = "pay", parameters(("id" = "$response.body#/order_id")))), ("Ship" = (operation_id = "ship", parameters(("id" = "$response.body#/order_id")))), ("Deliver" = (operation_id = "deliver", parameters(("id" = "$response.body#/order_id")))), ("Cancel" = (operation_id = "cancel", parameters(("id" = "$response.body#/order_id")))))),
        CommandErrors))]
async fn checkout(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<BasketId>,
    headers: CommandHeaders,
    body: ApiJson<Checkout>,
) -> Result<Outcome, ApiError> {
    let scope = who.shopper_scope()?;
    let mut fields = Fields::default();
    let Some(address) = body
        .value
        .shipping_address
        .parse(&mut fields, "shipping_address")
    else {
        return Err(fields.into_error());
    };
    Ok(app
        .commands
        .checkout(&headers.context(&who, scope, body.fingerprint), id, address)
        .await?)
}
