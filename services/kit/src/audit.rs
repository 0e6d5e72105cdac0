//! The audit log: every read of personal data is recorded in the serving service's own
//! database (`audit_log`), and served to city admins by `minqing.audit.v1.Audit`.
//!
//! Recording must not cost a durable commit per read, and must not lose entries: handlers hand
//! entries to a bounded queue (waiting when it is full, never dropping), and one writer task
//! stores them in batches, one transaction per batch; at shutdown it drains the queue first.

use std::time::Duration;

use sqlx::Row;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Principal, caller},
    db::Db,
    error::{FieldViolations, StoreError},
    time::{Clock, Micros, from_timestamp, to_timestamp},
};
use minqing_proto::minqing::audit::v1::{
    self as pb,
    audit_server::{Audit, AuditServer},
};

/// What was done with personal data.
pub const READ_PERSONAL_DATA: &str = "read_personal_data";

/// Entries queued before recorders wait.
const QUEUE: usize = 4_096;
/// Entries stored in one transaction at most.
const BATCH: usize = 512;

#[derive(Debug)]
struct Entry {
    id: String,
    time: Micros,
    actor: String,
    action: &'static str,
    resource: String,
    detail: String,
}

/// Records audit entries; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Entry>,
    clock: Clock,
}

impl AuditLog {
    /// Starts the writer for `db`. It stops after `shutdown`, once the queue is drained.
    pub fn start(
        db: Db,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<anyhow::Result<()>>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(db, rx, shutdown));
        (Self { queue, clock }, writer)
    }

    /// Records that `principal` did `action` to `resource` (`detail`: the RPC or context).
    pub async fn record(
        &self,
        principal: &Principal,
        action: &'static str,
        resource: &str,
        detail: &str,
    ) {
        let entry = Entry {
            id: uuid::Uuid::now_v7().to_string(),
            time: self.clock.now_micros(),
            actor: principal.actor(),
            action,
            resource: resource.to_string(),
            detail: detail.to_string(),
        };
        // Waits while the queue is full: an access is never served unrecorded... except after
        // shutdown, when the writer is gone and the process is stopping anyway.
        if self.queue.send(entry).await.is_err() {
            tracing::warn!(resource, "audit entry after shutdown not recorded");
        }
    }
}

async fn write(
    db: Db,
    mut rx: mpsc::Receiver<Entry>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            () = shutdown.cancelled() => {
                // Drain whatever was queued before stopping.
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    store(&db, &mut batch).await;
                }
                return Ok(());
            }
        };
        if received == 0 {
            return Ok(());
        }
        store(&db, &mut batch).await;
    }
}

/// Stores a batch, retrying transient failures so entries are not lost.
async fn store(db: &Db, batch: &mut Vec<Entry>) {
    let mut wait = Duration::from_millis(50);
    loop {
        match try_store(db, batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(err) => {
                tracing::warn!(error = %crate::error::chain(&err), entries = batch.len(), "audit entries not stored yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn try_store(db: &Db, batch: &[Entry]) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    for e in batch {
        sqlx::query(
            "INSERT INTO audit_log (id, time, actor, action, resource, detail) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&e.id)
        .bind(e.time)
        .bind(&e.actor)
        .bind(e.action)
        .bind(&e.resource)
        .bind(&e.detail)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await
}

/// Serves a service's audit log.
#[derive(Debug, Clone)]
pub struct AuditService {
    db: Db,
}

impl AuditService {
    /// Serves `db`'s audit log.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tonic service.
    pub fn into_server(self, max_message_bytes: usize) -> AuditServer<Self> {
        AuditServer::new(self).max_decoding_message_size(max_message_bytes)
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        caller(&request)?.require(&[])?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        v.check(
            !(0..=1000).contains(&req.page_size),
            "page_size",
            "must be 0 to 1000",
        );
        v.check(
            req.resource.len() > 300,
            "resource",
            "at most 300 characters",
        );
        v.check(req.actor.len() > 300, "actor", "at most 300 characters");
        let mut bound = |field: &str, ts: &Option<prost_types::Timestamp>| match ts {
            None => None,
            Some(ts) => {
                let t = from_timestamp(ts);
                v.check(t.is_none(), field, "not a valid timestamp");
                t
            }
        };
        let after = bound("after", &req.after);
        let before = bound("before", &req.before);
        let below = match req.page_token.strip_prefix("auditEntries/") {
            Some(id) if uuid::Uuid::parse_str(id).is_ok() => id.to_string(),
            _ if req.page_token.is_empty() => String::new(),
            _ => {
                v.add("page_token", "not a token from a previous page");
                String::new()
            }
        };
        v.finish()?;
        let limit = if req.page_size == 0 {
            100
        } else {
            i64::from(req.page_size)
        };
        let rows = sqlx::query(
            "SELECT id, time, actor, action, resource, detail FROM audit_log \
             WHERE ($1 = '' OR resource = $1) AND ($2 = '' OR actor = $2) \
               AND time >= $3 AND time < $4 AND ($5 = '' OR id < $5) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(&req.resource)
        .bind(&req.actor)
        .bind(after.unwrap_or(i64::MIN))
        .bind(before.unwrap_or(i64::MAX))
        .bind(&below)
        .bind(limit + 1)
        .fetch_all(self.db.pool())
        .await
        .map_err(|e| StoreError::from(e).to_status("reading the audit log"))?;
        let mut entries = rows
            .iter()
            .map(|r| {
                Ok(pb::AuditEntry {
                    name: format!("auditEntries/{}", r.try_get::<String, _>(0)?),
                    time: Some(to_timestamp(r.try_get(1)?)),
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    resource: r.try_get(4)?,
                    detail: r.try_get(5)?,
                    source: self.db.name().to_string(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| StoreError::from(e).to_status("reading the audit log"))?;
        let next_page_token = if entries.len() as i64 > limit {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries,
            next_page_token,
        }))
    }
}
