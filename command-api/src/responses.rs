//! How a command's outcome is answered over HTTP.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::commands::{Outcome, Resource};

/// A command was accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The aggregate's id.
    pub id: Uuid,
    /// The aggregate's version after the command; also in `ETag`.
    pub version: usize,
    /// Pass this to the read side to see at least this write.
    pub consistency_token: String,
}

/// A basket was checked out into a new order.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutAccepted {
    /// The new order's id; also in `Location`.
    pub order_id: Uuid,
    pub order_version: usize,
    pub basket_id: Uuid,
    pub basket_version: usize,
    pub consistency_token: String,
}

fn collection(resource: Resource) -> &'static str {
    match resource {
        Resource::Product => "products",
        Resource::Basket => "baskets",
        Resource::Order => "orders",
    }
}

fn etag(version: usize) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn location(resource: Resource, id: Uuid) -> HeaderValue {
    HeaderValue::from_str(&format!("/{}/{id}", collection(resource)))
        .unwrap_or(HeaderValue::from_static("/"))
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Self::Accepted {
                resource,
                id,
                version,
                consistency_token,
                created,
            } => {
                let body = Json(CommandAccepted {
                    id,
                    version,
                    consistency_token,
                });
                if created {
                    let headers = [
                        (header::LOCATION, location(resource, id)),
                        (header::ETAG, etag(version)),
                    ];
                    (StatusCode::CREATED, headers, body).into_response()
                } else {
                    (StatusCode::OK, [(header::ETAG, etag(version))], body).into_response()
                }
            }
            Self::CheckedOut {
                order_id,
                order_version,
                basket_id,
                basket_version,
                consistency_token,
            } => {
                let headers = [
                    (header::LOCATION, location(Resource::Order, order_id)),
                    (header::ETAG, etag(order_version)),
                ];
                let body = CheckoutAccepted {
                    order_id,
                    order_version,
                    basket_id,
                    basket_version,
                    consistency_token,
                };
                (StatusCode::CREATED, headers, Json(body)).into_response()
            }
        }
    }
}
