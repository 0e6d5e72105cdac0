//! The shape every service has, so the same code runs as its own process
//! (`minqing serve <service>`), inside `minqing up`, and in tests.
//!
//! A service crate exposes `start(env, config, listener) -> Started`: it opens its database,
//! runs its migrations, starts its consumers and serves gRPC on the given listener (bound by
//! the caller, so tests use port 0 and `up` can print every address before starting).

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::{
    auth::TokenStore,
    config::CommonConfig,
    db::{Db, DbOptions},
    server::ServeContext,
    time::Clock,
};

/// What a service gets from the process that runs it.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    /// Shared settings.
    pub common: CommonConfig,
    /// Where tokens are verified.
    pub tokens: TokenStore,
    /// Cancelled to shut everything down.
    pub shutdown: CancellationToken,
    /// The clock (a manual one in tests).
    pub clock: Clock,
    /// A service-role token for calling other services (their event feeds).
    pub service_token: String,
    /// Where the other services of the suite listen (`http://host:port`), by name; filled
    /// by `minqing up` with the addresses it bound. Services fall back to their own config.
    pub peers: std::collections::BTreeMap<String, String>,
}

impl ServiceEnv {
    /// Opens the service's database: its own URL if set, else the common one, else SQLite
    /// under the data directory.
    pub async fn open_db(
        &self,
        name: &str,
        database_url: Option<&str>,
        max_connections: Option<u32>,
    ) -> anyhow::Result<Db> {
        let url = database_url
            .filter(|u| !u.is_empty())
            .or(Some(self.common.database_url.as_str()).filter(|u| !u.is_empty()));
        let mut opts = DbOptions::new(name, url.map(str::to_owned), self.common.data_dir.clone());
        opts.max_connections = max_connections.unwrap_or(self.common.storage.max_connections);
        opts.acquire_timeout = Duration::from_millis(self.common.storage.acquire_timeout_ms);
        opts.sqlite_synchronous = self.common.storage.sqlite_synchronous;
        let db = Db::connect(&opts).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the {name} database ({}): {e}",
                url.map(redact_url).unwrap_or_else(|| "SQLite".into())
            )
        })?;
        crate::feed::spawn_postgres_bridge(&db, self.shutdown.clone());
        Ok(db)
    }

    /// The address of the peer service `name`: from `peers`, else `configured`.
    pub fn peer(&self, name: &str, configured: &str) -> String {
        self.peers
            .get(name)
            .cloned()
            .unwrap_or_else(|| configured.to_string())
    }

    /// The context for serving gRPC.
    pub fn serve_context(&self) -> ServeContext {
        ServeContext {
            config: self.common.server.clone(),
            tokens: self.tokens.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// A started service.
#[derive(Debug)]
pub struct Started {
    /// Its name.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database (for readiness checks).
    pub db: Db,
    /// Its server and background tasks; they end after shutdown.
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// A lazily connecting channel to another service at `url` (`http://host:port`).
pub fn peer_channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("invalid peer address {url}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Binds a listener for a service.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::server::bind(addr).await
}

/// A URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
