//! Overload and size limits: refused quickly and clearly, the server stays up, nothing written.

use std::time::Duration;

use minqing_kit::{config::ServerConfig, db::Backend};
use minqing_proto::minqing::auth::v1::{self as pb, tokens_client::TokensClient};
use tonic::Code;

use crate::harness::{Harness, authed};

/// SQLite has one writer: holding it makes token creation wait, which fills the server's
/// single concurrency slot; a second call is then shed at once, and the first is cut off by
/// the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_are_shed_and_slow_calls_time_out() {
    let config = ServerConfig {
        concurrency_limit: 1,
        request_timeout_ms: 700,
        ..ServerConfig::default()
    };
    let h = Harness::start(Backend::Sqlite, config).await.unwrap();
    let mut tokens = TokensClient::new(h.channel().await);
    let hold = h.tokens.db().begin().await.unwrap();
    let request = || {
        authed(
            pb::CreateTokenRequest {
                principal: "p".into(),
                role: pb::Role::Volunteer as i32,
                ..Default::default()
            },
            &h.admin_token,
        )
    };
    let mut slow_client = tokens.clone();
    let slow_req = request();
    let slow = tokio::spawn(async move { slow_client.create_token(slow_req).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let shed = tokens.create_token(request()).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once"
    );
    let timed_out = slow.await.unwrap().unwrap_err();
    assert_eq!(timed_out.code(), Code::Cancelled, "{timed_out:?}");
    drop(hold);

    // The server is still up and answers normally.
    tokens.create_token(request()).await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused() {
    let config = ServerConfig {
        max_message_bytes: 64 * 1024,
        ..ServerConfig::default()
    };
    let h = Harness::start(Backend::Sqlite, config).await.unwrap();
    let mut tokens = TokensClient::new(h.channel().await);
    let err = tokens
        .create_token(authed(
            pb::CreateTokenRequest {
                principal: "p".into(),
                role: pb::Role::Volunteer as i32,
                description: "x".repeat(100 * 1024),
                ..Default::default()
            },
            &h.admin_token,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let listed = tokens
        .list_tokens(authed(pb::ListTokensRequest::default(), &h.admin_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1, "nothing written");
    h.stop().await;
}
