//! `minqing up` and `minqing serve`: start services, print where they listen, stop cleanly.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::{cli::ServerArgs, services::Service};
use minqing_kit::{
    auth::TokenStore,
    config::Settings,
    db::{Db, DbOptions},
    service::{ServiceEnv, Started, bind, redact_url},
    time::Clock,
};

/// The file the first admin token is written to, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

fn load_settings(args: &ServerArgs) -> Result<Settings, minqing_kit::config::ConfigError> {
    let mut settings = Settings::load(
        args.config.as_deref(),
        std::env::vars(),
        crate::services::SECTIONS,
    )?;
    // Flags win over the file and the environment.
    if let Some(dir) = &args.data_dir {
        settings.common.data_dir = dir.clone();
    }
    if let Some(url) = &args.database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(minqing_kit::config::ConfigError::Invalid {
                section: None,
                message: "--database-url must be a postgres:// URL".into(),
            });
        }
        settings.common.database_url = url.clone();
    }
    Ok(settings)
}

/// `minqing up`: every service in one process.
pub async fn up(args: ServerArgs) -> anyhow::Result<()> {
    run(Service::ALL, &args, "minqing").await
}

/// `minqing serve <service>…`: the services named, each once, in start order.
pub async fn serve(services: Vec<Service>, args: ServerArgs) -> anyhow::Result<()> {
    let list: Vec<Service> = Service::ALL
        .iter()
        .copied()
        .filter(|s| services.contains(s))
        .collect();
    let name = match list.as_slice() {
        [one] => one.name(),
        _ => "minqing",
    };
    run(&list, &args, name).await
}

fn write_admin_token(dir: &Path, secret: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join(ADMIN_TOKEN_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(path)
}

async fn run(list: &[Service], args: &ServerArgs, telemetry_name: &str) -> anyhow::Result<()> {
    let settings = load_settings(args)?;
    let listens = list
        .iter()
        .map(|s| s.check(&settings).map(|addr| (*s, addr)))
        .collect::<Result<Vec<_>, _>>()?;
    let telemetry = minqing_kit::telemetry::init(telemetry_name, &settings.common.log)?;
    let common = settings.common.clone();
    std::fs::create_dir_all(&common.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            common.data_dir.display()
        )
    })?;

    let postgres = Some(common.database_url.clone()).filter(|u| !u.is_empty());
    let mut auth_opts = DbOptions::new("auth", postgres.clone(), common.data_dir.clone());
    auth_opts.max_connections = 4;
    let auth_db = Db::connect(&auth_opts).await.with_context(|| {
        format!(
            "cannot open the token store ({})",
            postgres
                .as_deref()
                .map(redact_url)
                .unwrap_or_else(|| "SQLite".into())
        )
    })?;
    let tokens = TokenStore::open(auth_db.clone())
        .await
        .context("migrating the token store")?;
    let admin = match tokens.ensure_admin().await? {
        Some(secret) => {
            let path = write_admin_token(&common.data_dir, &secret)?;
            AdminToken::Fresh(secret, path)
        }
        None => AdminToken::Existing(common.data_dir.join(ADMIN_TOKEN_FILE)),
    };
    let (service_token_id, service_token) = tokens.issue_service_token(telemetry_name).await?;

    let mut listeners = Vec::new();
    for (service, addr) in &listens {
        listeners.push((*service, bind(*addr).await?));
    }
    let ops_listener = bind(common.http_listen).await?;
    let peers: BTreeMap<String, String> = listeners
        .iter()
        .map(|(s, l)| Ok((s.name().to_string(), format!("http://{}", l.local_addr()?))))
        .collect::<std::io::Result<_>>()?;

    let shutdown = CancellationToken::new();
    let env = ServiceEnv {
        common: common.clone(),
        tokens: tokens.clone(),
        shutdown: shutdown.clone(),
        clock: Clock::System,
        service_token,
        peers,
    };
    let mut started: Vec<Started> = Vec::new();
    for (service, listener) in listeners {
        match service.start(&env, &settings, listener).await {
            Ok(s) => started.push(s),
            Err(err) => {
                shutdown.cancel();
                return Err(err.context(format!("starting {}", service.name())));
            }
        }
    }
    let ops_addr = ops_listener.local_addr()?;
    let mut dbs: Vec<Db> = started.iter().map(|s| s.db.clone()).collect();
    dbs.push(auth_db.clone());
    let ops = tokio::spawn(minqing_kit::http::serve_ops(
        ops_listener,
        Some(telemetry.registry()),
        dbs,
        shutdown.clone(),
    ));

    banner(
        &started,
        ops_addr,
        &admin,
        postgres.as_deref(),
        &common.data_dir,
    );

    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)> = started
        .iter_mut()
        .flat_map(|s| {
            let name = s.name;
            s.tasks.drain(..).map(move |t| (name, t))
        })
        .collect();
    let failed = tokio::select! {
        () = stop_signal() => None,
        (result, index, _) = futures::future::select_all(tasks.iter_mut().map(|(_, t)| t)) => {
            Some((index, result))
        }
    };
    shutdown.cancel();
    let mut outcome = Ok(());
    if let Some((index, result)) = failed {
        let name = tasks[index].0;
        outcome = Err(match result {
            Ok(Ok(())) => anyhow::anyhow!("{name} stopped unexpectedly"),
            Ok(Err(err)) => err.context(format!("{name} failed")),
            Err(join) => anyhow::anyhow!("{name} panicked: {join}"),
        });
        tasks.remove(index);
    }
    eprintln!("minqing: stopping (draining calls in flight)…");
    let grace = Duration::from_millis(common.server.shutdown_grace_ms) + Duration::from_secs(5);
    let drain = futures::future::join_all(tasks.into_iter().map(|(_, t)| t));
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("some tasks did not stop within the grace period");
    }
    let _ = ops.await;
    if let Err(err) = tokens.revoke(&service_token_id).await {
        tracing::warn!(error = %err, "could not revoke this process's service token");
    }
    for s in &started {
        s.db.close().await;
    }
    auth_db.close().await;
    telemetry.shutdown();
    eprintln!("minqing: stopped");
    outcome
}

enum AdminToken {
    Fresh(String, std::path::PathBuf),
    Existing(std::path::PathBuf),
}

fn banner(
    started: &[Started],
    ops: std::net::SocketAddr,
    admin: &AdminToken,
    postgres: Option<&str>,
    data_dir: &Path,
) {
    let store = match postgres {
        Some(url) => format!("PostgreSQL at {}", redact_url(url)),
        None => format!("embedded SQLite in {}", data_dir.display()),
    };
    say!("Minqing is up ({store}).");
    say!("");
    for s in started {
        let apis = Service::ALL
            .iter()
            .find(|x| x.name() == s.name)
            .map(|x| x.apis())
            .unwrap_or_default();
        say!("  {:<12} grpc://{}   {}", s.name, s.addr, apis);
    }
    say!(
        "  {:<12} http://{ops}/metrics   http://{ops}/healthz   http://{ops}/readyz",
        "ops"
    );
    say!(
        "  {:<12} every server also has grpc.health.v1, reflection, minqing.events.v1.EventFeed,",
        ""
    );
    say!(
        "  {:<12} minqing.audit.v1.Audit and minqing.auth.v1.Tokens",
        ""
    );
    say!("");
    match admin {
        AdminToken::Fresh(secret, path) => {
            say!("  admin token  {secret}");
            say!(
                "               (generated now, stored hashed; a copy is in {})",
                path.display()
            );
        }
        AdminToken::Existing(path) => {
            say!(
                "  admin token  generated at first start; a copy is in {}",
                path.display()
            );
        }
    }
    say!("");
    say!("Try:  minqing catalogue list");
    say!("      minqing case list");
    say!("Press Ctrl-C to stop.");
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
