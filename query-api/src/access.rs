//! Who may read what.
//!
//! Every request carries an access token: over HTTP in `Authorization:
//! Bearer …`, over WebSocket in `connection_init`'s payload
//! (`{"Authorization": "Bearer …"}`). It is verified before anything runs
//! (see [`crate::http`] and [`crate::ws`]) and the [`Caller`] rides along
//! as request data. The rules:
//! - the catalog (products, `searchProducts`): every caller;
//! - baskets: their own customer, and admins;
//! - orders (`order`, `orderAsOf`, `orders`, `searchOrders`, and the
//!   subscriptions): their own customer, staff and admins; a customer
//!   asking for another's order gets `NOT_FOUND`, exactly as for an id
//!   that does not exist, and `searchOrders` finds only their own;
//! - `salesDaily`: staff and admins; `projections`: admins.

use async_graphql::{Context, ErrorExtensions};
use identity::{Caller, Role};
use uuid::Uuid;

use crate::error::{QueryError, QueryResult};

/// Whose baskets or orders a caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sees {
    Everyone,
    /// Only this customer's.
    Own(Uuid),
}

impl Sees {
    /// Whether an object of `customer` is visible.
    pub(crate) fn sees(self, customer: Uuid) -> bool {
        match self {
            Self::Everyone => true,
            Self::Own(own) => own == customer,
        }
    }
}

/// The request's caller. Every request has one: the door refuses the
/// others.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> QueryResult<&'a Caller> {
    ctx.data_opt::<Caller>()
        .ok_or_else(|| QueryError::Unauthenticated("no bearer token".into()).extend())
}

fn forbidden(what: &str) -> async_graphql::Error {
    QueryError::Forbidden(format!("reading {what} needs another role")).extend()
}

/// Whose baskets the caller reads: an admin everyone's, a customer their
/// own.
pub(crate) fn baskets(ctx: &Context<'_>) -> QueryResult<Sees> {
    let caller = caller(ctx)?;
    if caller.has(Role::Admin) {
        Ok(Sees::Everyone)
    } else if caller.has(Role::Customer) {
        Ok(Sees::Own(caller.subject_id))
    } else {
        Err(forbidden("baskets"))
    }
}

/// Whose orders the caller reads: staff and admins everyone's, a customer
/// their own.
pub(crate) fn orders(ctx: &Context<'_>) -> QueryResult<Sees> {
    let caller = caller(ctx)?;
    if caller.has(Role::Admin) || caller.has(Role::Staff) {
        Ok(Sees::Everyone)
    } else if caller.has(Role::Customer) {
        Ok(Sees::Own(caller.subject_id))
    } else {
        Err(forbidden("orders"))
    }
}

/// For business figures (`salesDaily`): staff and admins.
pub(crate) fn staff(ctx: &Context<'_>, what: &str) -> QueryResult<()> {
    let caller = caller(ctx)?;
    if caller.has(Role::Admin) || caller.has(Role::Staff) {
        Ok(())
    } else {
        Err(forbidden(what))
    }
}

/// For operators' fields (`projections`): admins.
pub(crate) fn admin(ctx: &Context<'_>, what: &str) -> QueryResult<()> {
    if caller(ctx)?.has(Role::Admin) {
        Ok(())
    } else {
        Err(forbidden(what))
    }
}
