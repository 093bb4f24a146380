use axum::extract::State;
use domain::ProductId;
use domain::text::{Description, ProductName, ShortText, Sku};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommandHeaderParams, NoBody};
use crate::auth::Authenticated;
use crate::commands::Outcome;
use crate::commands::catalog::NewProduct;
use crate::error::{ApiError, CommandErrors};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::input::{self, Fields, PriceInput};
use crate::responses::CommandAccepted;
use crate::startup::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_product))
        .routes(routes!(change_price))
        .routes(routes!(adjust_stock))
        .routes(routes!(discontinue))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterProduct {
    /// Unique across the catalog; letters, digits, `-`, `_`, `.`; stored
    /// upper-case.
    #[schema(
        example = "MUG-BLUE-01",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$"
    )]
    sku: String,
    #[schema(
        example = "Blue mug",
        min_length = 1,
        max_length = 200,
        pattern = "\\S"
    )]
    name: String,
    #[serde(default)]
    #[schema(max_length = 5000)]
    description: String,
    price: PriceInput,
    /// Units on hand.
    #[schema(minimum = 0, maximum = 4_294_967_295_u64)]
    initial_stock: u32,
}

/// Registers a product.
#[utoipa::path(post, path = "/products", tag = "products", params(CommandHeaderParams),
    request_body = RegisterProduct,
    responses((status = 201, description = "Registered", body = CommandAccepted,
        headers(("Location" = String, description = "/products/{id}"), ("ETag" = String, description = "version")),
        links(("ChangePrice" = (operation_id = "change_price", parameters(("id" = "$response.body#/id")))), ("AdjustStock" = (operation_id = "adjust_stock", parameters(("id" = "$response.body#/id")))), ("Discontinue" = (operation_id = "discontinue", parameters(("id" = "$response.body#/id")))))),
        CommandErrors))]
async fn register_product(
    State(app): State<AppState>,
    who: Authenticated,
    headers: CommandHeaders,
    body: ApiJson<RegisterProduct>,
) -> Result<Outcome, ApiError> {
    let scope = who.staff_scope()?;
    let input = &body.value;
    let mut fields = Fields::default();
    let sku = fields.check("sku", Sku::parse(&input.sku));
    let name = fields.check("name", ProductName::parse(&input.name));
    let description = fields.check("description", Description::parse(&input.description));
    let price = input.price.parse(&mut fields, "price");
    let (Some(sku), Some(name), Some(description), Some(price)) = (sku, name, description, price)
    else {
        return Err(fields.into_error());
    };
    let product = NewProduct {
        sku,
        name,
        description,
        price,
        initial_stock: input.initial_stock,
    };
    Ok(app
        .commands
        .register_product(&headers.context(&who, scope, body.fingerprint), product)
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    /// In the currency the product was registered with.
    price: PriceInput,
}

/// Changes a product's price.
#[utoipa::path(post, path = "/products/{id}/price", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id"), CommandHeaderParams),
    request_body = ChangePrice,
    responses((status = 200, description = "Price changed", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn change_price(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<ProductId>,
    headers: CommandHeaders,
    body: ApiJson<ChangePrice>,
) -> Result<Outcome, ApiError> {
    let scope = who.staff_scope()?;
    let mut fields = Fields::default();
    let Some(price) = body.value.price.parse(&mut fields, "price") else {
        return Err(fields.into_error());
    };
    Ok(app
        .commands
        .change_price(&headers.context(&who, scope, body.fingerprint), id, price)
        .await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    /// Units to add (positive) or remove (negative); never below the units
    /// reserved.
    #[schema(example = 25)]
    delta: i64,
    #[schema(
        example = "delivery from supplier",
        min_length = 1,
        max_length = 200,
        pattern = "\\S"
    )]
    reason: String,
}

/// Adjusts a product's stock on hand.
#[utoipa::path(post, path = "/products/{id}/stock", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id"), CommandHeaderParams),
    request_body = AdjustStock,
    responses((status = 200, description = "Stock adjusted", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn adjust_stock(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<ProductId>,
    headers: CommandHeaders,
    body: ApiJson<AdjustStock>,
) -> Result<Outcome, ApiError> {
    let scope = who.staff_scope()?;
    let reason = input::one("reason", ShortText::parse(&body.value.reason))?;
    Ok(app
        .commands
        .adjust_stock(
            &headers.context(&who, scope, body.fingerprint),
            id,
            body.value.delta,
            reason,
        )
        .await?)
}

/// Takes a product off sale.
#[utoipa::path(post, path = "/products/{id}/discontinue", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id"), CommandHeaderParams),
    request_body(content = Option<NoBody>, description = "Empty, or `{}`"),
    responses((status = 200, description = "Discontinued", body = CommandAccepted,
        headers(("ETag" = String, description = "version"))), CommandErrors))]
async fn discontinue(
    State(app): State<AppState>,
    who: Authenticated,
    ApiPath(id): ApiPath<ProductId>,
    headers: CommandHeaders,
    body: ApiJson<NoBody>,
) -> Result<Outcome, ApiError> {
    let scope = who.staff_scope()?;
    Ok(app
        .commands
        .discontinue(&headers.context(&who, scope, body.fingerprint), id)
        .await?)
}
