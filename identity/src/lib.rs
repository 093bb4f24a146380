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
pub use config::{DEFAULT_ISSUER_URL, IdentityConfig};
pub use verifier::{Rejection, Unavailable, Verifier, VerifyError};

/// The token of an `Authorization` header's value: `Bearer <token>`, the
/// scheme in any case (RFC 6750).
///
/// # Errors
/// [`Rejection::Malformed`] for another scheme or no token.
pub fn bearer(value: &str) -> Result<&str, Rejection> {
    let (scheme, token) = value.trim().split_once(' ').ok_or(Rejection::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Rejection::Malformed);
    }
    Ok(token)
}

/// The RFC 6750 `WWW-Authenticate` challenge for a refused token: no error
/// code when there was no token at all, `invalid_token` with the reason
/// otherwise (never the token itself).
#[must_use]
pub fn challenge(rejection: &Rejection) -> String {
    match rejection {
        Rejection::Missing => r#"Bearer realm="eshop""#.to_owned(),
        other => format!(
            r#"Bearer realm="eshop", error="invalid_token", error_description="{}""#,
            other.to_string().replace(['"', '\\'], "'")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_scheme_with_a_token_gives_one() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(bearer("bearer  abc"), Ok("abc"));
        assert_eq!(bearer("Basic YWxpY2U6c2VjcmV0"), Err(Rejection::Malformed));
        assert_eq!(bearer("Bearer "), Err(Rejection::Malformed));
        assert_eq!(bearer("abc.def.ghi"), Err(Rejection::Malformed));
    }

    #[test]
    fn a_challenge_names_the_reason_and_only_when_a_token_came() {
        assert_eq!(challenge(&Rejection::Missing), r#"Bearer realm="eshop""#);
        assert_eq!(
            challenge(&Rejection::Expired),
            r#"Bearer realm="eshop", error="invalid_token", error_description="the token has expired""#
        );
        let quoted = challenge(&Rejection::Algorithm("\"HS256\"".into()));
        assert!(
            quoted.ends_with(r#"error_description="tokens signed with 'HS256' are not accepted""#),
            "{quoted}"
        );
    }
}
