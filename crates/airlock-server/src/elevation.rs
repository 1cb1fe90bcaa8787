//! Elevation claims as JWTs (RFC 7519) signed with EdDSA over Ed25519
//! (RFC 8037), and the key published as a JWK Set at
//! `/.well-known/jwks.json`: an application verifies a claim with its
//! ordinary JWT library and Airlock's issuer, without calling Airlock on
//! every action. What a claim says and who may have one is the core's
//! (`airlock_core::elevation`); the key is its own (not the audit
//! checkpoints'), so either can be rotated alone.

use airlock_core::elevation::Claim;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer;
pub use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::ElevationSettings;

/// Signs claims and publishes the key that checks them.
pub struct ElevationSigner {
    key: SigningKey,
    /// RFC 7638 thumbprint of the public key: the `kid` of header and JWK.
    kid: String,
    settings: ElevationSettings,
}

impl ElevationSigner {
    pub fn new(key: SigningKey, settings: ElevationSettings) -> ElevationSigner {
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        // The required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        ElevationSigner { key, kid, settings }
    }

    pub fn settings(&self) -> &ElevationSettings {
        &self.settings
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK Set applications verify claims with.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }

    /// The claim as a compact JWS. Times are whole seconds, `exp` rounded
    /// down so the token never outlives the grant.
    pub fn sign(&self, claim: &Claim) -> String {
        let seconds = |t: airlock_core::Timestamp| t.unix_millis().div_euclid(1000);
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let mut payload = json!({
            "iss": self.settings.issuer,
            "sub": claim.principal.as_str(),
            "iat": seconds(claim.issued_at),
            "nbf": seconds(claim.issued_at),
            "exp": seconds(claim.expires_at),
            "jti": claim.id,
            "entitlement": claim.entitlement.as_str(),
            "request": claim.request.as_str(),
            "break_glass": claim.break_glass,
        });
        if let (Some(aud), Some(map)) = (&claim.audience, payload.as_object_mut()) {
            map.insert("aud".to_owned(), Value::String(aud.clone()));
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
    use ed25519_dalek::{Signature, Verifier};

    fn signer() -> ElevationSigner {
        ElevationSigner::new(
            SigningKey::from_bytes(&[7; 32]),
            ElevationSettings {
                issuer: "https://airlock.test".to_owned(),
                lifetime: std::time::Duration::from_secs(300),
                key: "unused".into(),
            },
        )
    }

    #[test]
    fn a_claim_is_a_jws_the_published_key_verifies() {
        let signer = signer();
        let claim = Claim {
            id: "c1".to_owned(),
            principal: UserId::parse("alice").unwrap(),
            entitlement: EntitlementId::parse("db-admin").unwrap(),
            request: RequestId::parse("req1").unwrap(),
            break_glass: false,
            audience: Some("billing".to_owned()),
            issued_at: Timestamp::from_unix_millis(1_700_000_000_500),
            expires_at: Timestamp::from_unix_millis(1_700_000_300_999),
        };
        let token = signer.sign(&claim);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["sub"], "alice");
        assert_eq!(payload["aud"], "billing");
        assert_eq!(payload["iat"], 1_700_000_000);
        assert_eq!(payload["exp"], 1_700_000_300);
        let jwk = &signer.jwks()["keys"][0];
        assert_eq!(jwk["kid"], signer.kid());
        let x: [u8; 32] = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
            .try_into()
            .unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        key.verify(signed.as_bytes(), &Signature::from_bytes(&signature))
            .unwrap();
    }

    /// RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        let d = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let signer = ElevationSigner::new(
            SigningKey::from_bytes(&d.try_into().unwrap()),
            signer().settings,
        );
        assert_eq!(signer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
