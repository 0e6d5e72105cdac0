//! Tokens over real gRPC: who may call what.

use minqing_kit::{backend_tests, config::ServerConfig, db::Backend};
use minqing_proto::minqing::{
    auth::v1::{self as pb, tokens_client::TokensClient},
    events::v1::{SubscribeRequest, event_feed_client::EventFeedClient},
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Harness, authed};

async fn tokens_guard_every_call(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let channel = h.channel().await;
    let mut tokens = TokensClient::new(channel.clone());
    let mut feed = EventFeedClient::new(channel.clone());

    // No token: UNAUTHENTICATED.
    let err = feed
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A token nobody issued: UNAUTHENTICATED.
    let err = feed
        .subscribe(authed(SubscribeRequest::default(), "mq_not-a-real-token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A malformed header: UNAUTHENTICATED.
    let mut req = tonic::Request::new(SubscribeRequest::default());
    req.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(
        feed.subscribe(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // The admin creates a volunteer token: it authenticates but may not read feeds.
    let created = tokens
        .create_token(authed(
            pb::CreateTokenRequest {
                principal: "volunteer-17".into(),
                role: pb::Role::Volunteer as i32,
                ..Default::default()
            },
            &h.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("mq_"));
    let volunteer = created.secret.clone();
    let err = feed
        .subscribe(authed(SubscribeRequest::default(), &volunteer))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // ...nor manage tokens.
    let err = tokens
        .list_tokens(authed(pb::ListTokensRequest::default(), &volunteer))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // WhoAmI tells it who it is.
    let me = tokens
        .who_am_i(authed(pb::WhoAmIRequest {}, &volunteer))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.principal, "volunteer-17");
    assert_eq!(me.role, pb::Role::Volunteer as i32);

    // A service token may read the feed.
    let (_, service) = h.tokens.issue_service_token("routing").await.unwrap();
    feed.subscribe(authed(SubscribeRequest::default(), &service))
        .await
        .unwrap();

    // Secrets are stored hashed: the secret appears nowhere in the store.
    let listed = tokens
        .list_tokens(authed(pb::ListTokensRequest::default(), &h.admin_token))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tokens.iter().any(|t| t.principal == "volunteer-17"));
    let rows: Vec<(String,)> = sqlx::query_as("SELECT secret_hash FROM tokens")
        .fetch_all(h.tokens.db().pool())
        .await
        .unwrap();
    assert!(
        rows.iter()
            .all(|(hash,)| hash != &volunteer && hash.len() == 64)
    );

    // Revoked: refused from then on.
    let name = created.token.unwrap().name;
    let revoked = tokens
        .revoke_token(authed(
            pb::RevokeTokenRequest { name: name.clone() },
            &h.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    let err = tokens
        .who_am_i(authed(pb::WhoAmIRequest {}, &volunteer))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Revoking an unknown token: NOT_FOUND.
    let err = tokens
        .revoke_token(authed(
            pb::RevokeTokenRequest {
                name: "tokens/nope".into(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The bootstrap admin token is created once only.
    assert!(h.tokens.ensure_admin().await.unwrap().is_none());
    h.stop().await;
}

async fn bad_token_requests_get_field_violations(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let mut tokens = TokensClient::new(h.channel().await);
    let err = tokens
        .create_token(authed(
            pb::CreateTokenRequest {
                principal: String::new(),
                role: pb::Role::PartnerUnit as i32,
                place_scope: "Not A Code!".into(),
                ttl_seconds: -5,
                ..Default::default()
            },
            &h.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let bad = err.get_details_bad_request().expect("field violations");
    let mut fields: Vec<_> = bad
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["place_scope", "principal", "ttl_seconds", "unit_scope"]
    );
    let err = tokens
        .create_token(authed(
            pb::CreateTokenRequest {
                principal: "x".into(),
                role: 99,
                ..Default::default()
            },
            &h.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Nothing was written by refused requests.
    let listed = tokens
        .list_tokens(authed(
            pb::ListTokensRequest {
                include_inactive: true,
                ..Default::default()
            },
            &h.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1, "only the bootstrap admin token");
    h.stop().await;
}

async fn health_and_reflection_need_no_token(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let channel = h.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "minqing.events.v1.EventFeed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"minqing.events.v1.EventFeed"), "{names:?}");
    assert!(names.contains(&"minqing.auth.v1.Tokens"), "{names:?}");

    // Shutdown flips health to NOT_SERVING before the server stops.
    h.shutdown.cancel();
    minqing_kit::testing::eventually(
        std::time::Duration::from_secs(5),
        "health reports NOT_SERVING or the server is gone",
        || {
            let mut health = health.clone();
            async move {
                match health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    Ok(r) => {
                        r.into_inner().status
                            == tonic_health::pb::health_check_response::ServingStatus::NotServing
                                as i32
                    }
                    Err(_) => true,
                }
            }
        },
    )
    .await;
    let _ = h.server.await;
}

backend_tests!(
    tokens_guard_every_call,
    bad_token_requests_get_field_violations,
    health_and_reflection_need_no_token,
);
