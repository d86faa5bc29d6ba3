//! JWTs from an identity provider (`--jwt-key`): HS256 with a shared
//! secret, or RS256/ES256 with the provider's public key. Claims: `sub`
//! (the caller's name), `role`, `exp`, and `queues` for workers.

use super::{Caller, Role};
use crate::api::ApiError;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub key_file: PathBuf,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    role: String,
    #[serde(default)]
    queues: Option<Vec<String>>,
}

impl JwtVerifier {
    pub fn new(cfg: &JwtConfig) -> Result<JwtVerifier, String> {
        let path = cfg.key_file.display();
        let bytes = std::fs::read(&cfg.key_file).map_err(|e| format!("--jwt-key {path}: {e}"))?;
        // A PEM file is a public key; anything else is an HS256 secret.
        let (key, alg) = if bytes.starts_with(b"-----BEGIN") {
            if let Ok(k) = DecodingKey::from_rsa_pem(&bytes) {
                (k, Algorithm::RS256)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&bytes) {
                (k, Algorithm::ES256)
            } else {
                return Err(format!(
                    "--jwt-key {path}: neither an RSA nor an EC (P-256) public key in PEM"
                ));
            }
        } else {
            let secret = String::from_utf8_lossy(&bytes).trim().to_string();
            if secret.len() < 32 {
                return Err(format!(
                    "--jwt-key {path}: an HS256 secret must be at least 32 bytes"
                ));
            }
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        };
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        match &cfg.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        if let Some(i) = &cfg.issuer {
            validation.set_issuer(&[i]);
        }
        Ok(JwtVerifier { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthenticated(format!("invalid JWT: {e}")))?;
        let c = data.claims;
        let role = Role::parse(&c.role).ok_or_else(|| {
            ApiError::Unauthenticated(format!(
                "JWT role {:?} is not one of admin, writer, reader, worker",
                c.role
            ))
        })?;
        Ok(Caller {
            name: c.sub,
            role: Some(role),
            queues: c.queues.filter(|_| role == Role::Worker),
        })
    }
}
