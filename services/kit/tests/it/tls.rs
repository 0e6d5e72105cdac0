//! How a PostgreSQL store reaches a server on this machine: without TLS when the URL names
//! a loopback address and says nothing about TLS (the traffic never leaves the machine, and
//! TLS was 10–15 % of the suite's CPU), with it when the URL asks, and as the URL says when
//! the server refuses connections without TLS.

use minqing_kit::{
    db::{Backend, Db, DbOptions},
    testing::TestDatabase,
};
use sqlx::Row;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Whether the connection a query runs on uses TLS.
async fn uses_tls(db: &Db) -> bool {
    sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get::<bool, _>(0)
}

/// Whether the server accepts TLS at all.
async fn server_has_tls(db: &Db) -> bool {
    let on: String = sqlx::query("SHOW ssl")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    on == "on"
}

fn with_query(url: &str, pair: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{pair}")
}

async fn connect(t: &TestDatabase, name: &str, url: String) -> Db {
    Db::connect(&DbOptions::new(name, Some(url), t.data_path()))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_url_silent_about_tls_connects_without_it() {
    let Some(t) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let url = t.postgres_url.clone().unwrap();
    let parsed = url::Url::parse(&url).unwrap();
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let silent = !parsed
        .query_pairs()
        .any(|(k, _)| k.starts_with("ssl") || k == "host");
    assert!(
        loopback && silent,
        "the PostgreSQL tests run against a server on this machine: {url}"
    );

    let plain = connect(&t, "plain", url.clone()).await;
    assert!(!uses_tls(&plain).await, "loopback, no sslmode: no TLS");
    // The feed's listener, a connection of its own beside the pool, goes the same way.
    let shutdown = tokio_util::sync::CancellationToken::new();
    minqing_kit::feed::spawn_postgres_bridge(&plain, shutdown.clone());
    minqing_kit::testing::eventually(
        std::time::Duration::from_secs(10),
        "the feed listener connected",
        || async {
            let (all, tls): (i64, i64) = {
                let row = sqlx::query(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                     JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.datname = current_database() AND a.query LIKE 'LISTEN%'",
                )
                .fetch_one(plain.pool())
                .await
                .unwrap();
                (row.get(0), row.get(1))
            };
            all == 1 && tls == 0
        },
    )
    .await;
    shutdown.cancel();
    if server_has_tls(&plain).await {
        let asked = connect(&t, "asked", with_query(&url, "sslmode=require")).await;
        assert!(uses_tls(&asked).await, "sslmode=require is honoured");
        let preferred = connect(&t, "preferred", with_query(&url, "sslmode=prefer")).await;
        assert!(
            uses_tls(&preferred).await,
            "an explicit sslmode=prefer is too"
        );
    }
}

/// A stand-in for a server whose `pg_hba.conf` allows only TLS on loopback: a connection that
/// opens with PostgreSQL's SSLRequest is passed to the real server; one that starts in plain
/// is closed at once.
async fn tls_only_proxy(upstream: String) -> std::net::SocketAddr {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if client.read_exact(&mut first).await.is_err() || first != SSL_REQUEST {
                    return;
                }
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                if server.write_all(&first).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_plain_connections_is_reached_as_the_url_says() {
    let Some(t) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let mut url = url::Url::parse(t.postgres_url.as_deref().unwrap()).unwrap();
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let proxy = tls_only_proxy(upstream).await;
    url.set_port(Some(proxy.port())).unwrap();

    let direct = connect(&t, "direct", t.postgres_url.clone().unwrap()).await;
    if !server_has_tls(&direct).await {
        // Without TLS on the server nothing can get through a TLS-only door: the store must
        // say so rather than hang or pretend.
        let refused =
            Db::connect(&DbOptions::new("refused", Some(url.into()), t.data_path())).await;
        assert!(refused.is_err());
        return;
    }
    let db = connect(&t, "through", url.into()).await;
    assert!(
        uses_tls(&db).await,
        "reached over TLS, as sslmode's default allows"
    );
    let one: i64 = sqlx::query("SELECT 1::BIGINT")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}
