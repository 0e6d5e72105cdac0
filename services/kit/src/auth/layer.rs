//! The tower layer that turns `authorization: Bearer …` into a [`Caller`].

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{Caller, TokenStore};
use crate::error::unauthenticated;

/// Verifies bearer tokens; see the module docs of [`crate::auth`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    store: TokenStore,
}

impl AuthLayer {
    /// Verifies against `store`.
    pub fn new(store: TokenStore) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            store: self.store.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    store: TokenStore,
}

/// What the `authorization` header holds.
enum Bearer<'a> {
    Absent,
    Malformed,
    Token(&'a str),
}

fn bearer<B>(req: &http::Request<B>) -> Bearer<'_> {
    let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let Ok(value) = value.to_str() else {
        return Bearer::Malformed;
    };
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Bearer::Token(token.trim())
        }
        _ => Bearer::Malformed,
    }
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The readied service handles this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            let caller = match bearer(&req) {
                Bearer::Absent => Caller(None),
                Bearer::Malformed => {
                    return Ok(unauthenticated(
                        "the authorization header must be `Bearer <token>`",
                    )
                    .into_http());
                }
                Bearer::Token(secret) => match store.verify(secret).await {
                    Ok(Some(principal)) => Caller(Some(principal)),
                    Ok(None) => {
                        return Ok(
                            unauthenticated("the token is unknown, expired or revoked").into_http()
                        );
                    }
                    Err(err) => return Ok(err.to_status("verifying the token").into_http()),
                },
            };
            if let Some(p) = &caller.0 {
                tracing::Span::current().record("principal", p.actor());
            }
            req.extensions_mut().insert(caller);
            inner.call(req).await
        })
    }
}
