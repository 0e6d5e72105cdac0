//! Cross-replica wake-ups on PostgreSQL: each replica announces its commits with `NOTIFY`
//! and listens for the others'. Local readers are woken directly by the commit itself; this
//! only shortens the wait for commits made by another process.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// Coalesce announcements: at most one NOTIFY per this interval per replica.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

/// Starts the announcer and listener for `db` (PostgreSQL only; does nothing on SQLite).
pub fn spawn_postgres_bridge(db: &Db, shutdown: CancellationToken) {
    let Some(url) = db.connection_url().map(str::to_owned) else {
        return;
    };
    let channel = format!("minqing_feed_{}", db.name());
    let origin = uuid::Uuid::new_v4().simple().to_string();
    tokio::spawn(announce(
        db.clone(),
        channel.clone(),
        origin.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(listen(db.clone(), url, channel, origin, shutdown));
}

async fn announce(db: Db, channel: String, origin: String, shutdown: CancellationToken) {
    let mut commits = db.local_commits();
    loop {
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        // Outside any transaction, so no commit waits on PostgreSQL's notification lock.
        if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&channel)
            .bind(&origin)
            .execute(db.pool())
            .await
        {
            tracing::debug!(error = %err, "feed announcement failed; peers fall back to polling");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

async fn listen(db: Db, url: String, channel: String, origin: String, shutdown: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(err) => {
                tracing::debug!(error = %err, "feed listener cannot connect; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        if let Err(err) = listener.listen(&channel).await {
            tracing::debug!(error = %err, "feed listener cannot LISTEN; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                () = shutdown.cancelled() => return,
            };
            match next {
                // Our own announcements need no wake-up: local readers were woken already.
                Ok(Some(n)) if n.payload() == origin => {}
                Ok(Some(_)) => db.signal_remote_commit(),
                // The connection was lost and re-established: notifications may have been
                // missed, so wake readers to look.
                Ok(None) => db.signal_remote_commit(),
                Err(err) => {
                    tracing::debug!(error = %err, "feed listener failed; reconnecting");
                    db.signal_remote_commit();
                    break;
                }
            }
        }
    }
}
