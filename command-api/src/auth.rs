//! Who is calling, and what they may do.
//!
//! Every command carries `Authorization: Bearer <access token>` from the
//! issuer at `OIDC_ISSUER_URL`; [`Authenticated`] verifies it (keys
//! cached, no round trip to the issuer per request). A missing or bad
//! token is `401` with `WWW-Authenticate` (RFC 6750), an issuer whose keys
//! cannot be had is `503`, and nothing is appended either way.
//!
//! The rules, by the token's roles:
//! - the catalog (register, price, stock, discontinue), shipping and
//!   delivery: `staff` or `admin`;
//! - opening a basket: a `customer`, for themself (the basket's customer
//!   is the token's subject), or an `admin` for anyone;
//! - changing and checking out a basket, paying and cancelling an order:
//!   the basket's or order's own customer, or an `admin`. Someone else's
//!   basket or order answers exactly as an id that does not exist (`404`):
//!   ids leak nothing.
//!
//! A role the operation needs and the token lacks is `403`.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use domain::CustomerId;
use identity::{Caller, Rejection, Role, VerifyError};

use crate::error::ApiError;
use crate::startup::AppState;

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let token = match (values.next(), values.next()) {
            (None, _) => return Err(ApiError::Unauthenticated(Rejection::Missing)),
            (Some(_), Some(_)) => return Err(ApiError::Unauthenticated(Rejection::Malformed)),
            (Some(value), None) => value
                .to_str()
                .map_err(|_| Rejection::Malformed)
                .and_then(identity::bearer)
                .map_err(ApiError::Unauthenticated)?,
        };
        match state.verifier.verify(token).await {
            Ok(caller) => Ok(Self(caller)),
            Err(VerifyError::Rejected(rejection)) => Err(ApiError::Unauthenticated(rejection)),
            Err(VerifyError::Unavailable(unavailable)) => {
                tracing::warn!(error = %unavailable, "a token could not be checked");
                Err(ApiError::IdentityUnavailable)
            }
        }
    }
}

/// Whose baskets and orders a command may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Anyone's (an admin).
    Any,
    /// Only this customer's.
    Own(CustomerId),
}

impl Authenticated {
    /// The caller as a customer: their own customer id.
    #[must_use]
    pub fn customer_id(&self) -> CustomerId {
        CustomerId::from_uuid(self.0.subject_id)
    }

    /// For the catalog, shipping and delivery: everyone's.
    ///
    /// # Errors
    /// `403` without the `staff` or `admin` role.
    pub fn staff_scope(&self) -> Result<Scope, ApiError> {
        if self.0.has(Role::Staff) || self.0.has(Role::Admin) {
            Ok(Scope::Any)
        } else {
            Err(ApiError::Forbidden(
                "this operation needs the staff role".into(),
            ))
        }
    }

    /// For baskets, payment and cancellation: an admin's are anyone's, a
    /// customer's their own.
    ///
    /// # Errors
    /// `403` without the `customer` or `admin` role.
    pub fn shopper_scope(&self) -> Result<Scope, ApiError> {
        if self.0.has(Role::Admin) {
            Ok(Scope::Any)
        } else if self.0.has(Role::Customer) {
            Ok(Scope::Own(self.customer_id()))
        } else {
            Err(ApiError::Forbidden(
                "this operation needs the customer role".into(),
            ))
        }
    }
}
