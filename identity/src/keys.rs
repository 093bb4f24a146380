//! The issuer's published signing keys (its JWKS), and which algorithms
//! each may verify.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One signing key: its id, the algorithms it verifies, and the key.
pub(crate) struct Key {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub decoding: DecodingKey,
}

/// The keys of one JWKS document that may verify tokens.
#[derive(Default)]
pub(crate) struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// The signing keys of a JWKS document. Keys for encryption
    /// (`use: enc`), symmetric keys and keys this service cannot read are
    /// left out: a JWKS is public, so a symmetric key in it would let
    /// anyone sign.
    pub fn parse(document: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)
            .map_err(|error| format!("the key set is not a JWKS document: {error}"))?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| {
                let jwk: Jwk = serde_json::from_value(value).ok()?;
                Key::from_jwk(&jwk)
            })
            .collect();
        Ok(Self { keys })
    }

    /// The key with id `kid`, or the only key when the token names none.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }

    /// The key ids, to tell whether a fetch changed the set.
    pub fn ids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref()).collect()
    }
}

/// The asymmetric algorithms a token may be signed with.
pub(crate) fn asymmetric(algorithm: Algorithm) -> bool {
    !matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => return None,
        };
        // A key that names its algorithm verifies that one only.
        let algorithms = match jwk.common.key_algorithm {
            None => by_type,
            Some(named) => {
                let named = signing_algorithm(named)?;
                by_type.into_iter().filter(|a| *a == named).collect()
            }
        };
        if algorithms.is_empty() {
            return None;
        }
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self {
            kid: jwk.common.key_id.clone(),
            algorithms,
            decoding,
        })
    }
}

/// The JWS algorithm a JWK's `alg` names, if it is a signing one.
fn signing_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
