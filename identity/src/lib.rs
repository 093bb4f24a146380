//! Who is calling: the subject, client and roles of an OpenID Connect
//! access token, verified against the keys its issuer publishes.
//!
//! eshop never sees a password. It trusts one issuer, named by a URL
//! ([`IdentityConfig`]); [`Verifier`] finds the issuer's keys through its
//! discovery document, caches them, and turns a bearer token into a
//! [`Caller`] or a [`Rejection`] that says why.

mod caller;
mod config;
mod keys;
mod verifier;

pub use caller::{Caller, Role, Roles};
pub use config::IdentityConfig;
pub use verifier::{Rejection, Unavailable, Verifier, VerifyError};
