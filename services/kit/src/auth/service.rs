//! `minqing.auth.v1.Tokens`: managing tokens over gRPC (city admins only).

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{NewToken, Role, TokenRecord, TokenStore, caller};
use crate::{
    error::{FieldViolations, not_found},
    time::to_timestamp,
};
use minqing_proto::minqing::auth::v1::{
    self as pb,
    tokens_server::{Tokens, TokensServer},
};

/// Serves token management from a [`TokenStore`].
#[derive(Debug, Clone)]
pub struct TokensService {
    store: TokenStore,
}

impl TokensService {
    /// Serves `store`.
    pub fn new(store: TokenStore) -> Self {
        Self { store }
    }

    /// The tonic service.
    pub fn into_server(self, max_message_bytes: usize) -> TokensServer<Self> {
        TokensServer::new(self).max_decoding_message_size(max_message_bytes)
    }
}

fn to_proto(r: TokenRecord) -> pb::Token {
    pb::Token {
        name: format!("tokens/{}", r.id),
        principal: r.principal,
        role: r.role.to_proto() as i32,
        place_scope: r.place_scope,
        unit_scope: r.unit_scope,
        create_time: Some(to_timestamp(r.create_time)),
        expire_time: r.expire_time.map(to_timestamp),
        revoke_time: r.revoke_time.map(to_timestamp),
        description: r.description,
    }
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

fn validate(req: pb::CreateTokenRequest) -> Result<NewToken, Status> {
    let mut v = FieldViolations::new();
    let principal = req.principal.trim().to_string();
    v.check(
        principal.is_empty() || principal.chars().count() > 200,
        "principal",
        "must be 1 to 200 characters",
    );
    v.check(
        principal.chars().any(char::is_control),
        "principal",
        "must not contain control characters",
    );
    let role = Role::from_proto(req.role);
    if role.is_none() {
        v.add("role", "must be a known role other than ROLE_UNSPECIFIED");
    }
    v.check(
        !req.place_scope.is_empty() && !is_code(&req.place_scope),
        "place_scope",
        "must be a place code (lowercase letters, digits, '-', '_', '.'; up to 64)",
    );
    v.check(
        !req.unit_scope.is_empty() && !is_code(&req.unit_scope),
        "unit_scope",
        "must be a unit id (lowercase letters, digits, '-', '_', '.'; up to 64)",
    );
    if role == Some(Role::PartnerUnit) && req.unit_scope.is_empty() {
        v.add("unit_scope", "required for ROLE_PARTNER_UNIT");
    }
    v.check(
        !(0..=10 * 365 * 86_400).contains(&req.ttl_seconds),
        "ttl_seconds",
        "must be 0 (no expiry) to ten years",
    );
    v.check(
        req.description.chars().count() > 500,
        "description",
        "at most 500 characters",
    );
    v.finish()?;
    Ok(NewToken {
        principal,
        role: role.unwrap_or(Role::Volunteer),
        place_scope: req.place_scope,
        unit_scope: req.unit_scope,
        description: req.description,
        ttl: (req.ttl_seconds > 0).then(|| Duration::from_secs(req.ttl_seconds as u64)),
    })
}

fn token_id(name: &str) -> Result<&str, Status> {
    name.strip_prefix("tokens/")
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .ok_or_else(|| crate::error::invalid_field("name", "must be tokens/{id}"))
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        caller(&request)?.require(&[])?;
        let spec = validate(request.into_inner())?;
        let (record, secret) = self
            .store
            .create(spec)
            .await
            .map_err(|e| e.to_status("creating a token"))?;
        tracing::info!(token = %record.id, principal = %record.principal, role = record.role.slug(), "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(to_proto(record)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        caller(&request)?.require(&[])?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        v.check(
            !(0..=500).contains(&req.page_size),
            "page_size",
            "must be 0 to 500",
        );
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(token_id(&req.page_token).map_err(|_| {
                crate::error::invalid_field("page_token", "not a token from a previous page")
            })?)
        };
        v.finish()?;
        let limit = if req.page_size == 0 {
            100
        } else {
            i64::from(req.page_size)
        };
        let mut records = self
            .store
            .list(req.include_inactive, limit + 1, after)
            .await
            .map_err(|e| e.to_status("listing tokens"))?;
        let next_page_token = if records.len() as i64 > limit {
            records.truncate(limit as usize);
            records
                .last()
                .map(|r| format!("tokens/{}", r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListTokensResponse {
            tokens: records.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        caller(&request)?.require(&[])?;
        let name = request.into_inner().name;
        let id = token_id(&name)?;
        match self
            .store
            .revoke(id)
            .await
            .map_err(|e| e.to_status("revoking a token"))?
        {
            Some(record) => {
                tracing::info!(token = %record.id, "token revoked");
                Ok(Response::new(to_proto(record)))
            }
            None => Err(not_found("token", &name)),
        }
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let principal = caller(&request)?;
        let record = self
            .store
            .get(&principal.token_id)
            .await
            .map_err(|e| e.to_status("reading a token"))?
            .ok_or_else(|| not_found("token", &principal.token_id))?;
        Ok(Response::new(to_proto(record)))
    }
}
