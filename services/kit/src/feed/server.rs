//! `minqing.events.v1.EventFeed`: replay from a cursor, then follow live.

use std::{collections::HashSet, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::store::{Cursor, read_after, to_proto};
use crate::{
    audit::AuditLog,
    auth::{Role, caller},
    db::Db,
    error::FieldViolations,
};
use minqing_proto::minqing::events::v1::{
    self as pb,
    event_feed_server::{EventFeed, EventFeedServer},
};

/// When no commit signal arrives, look anyway this often (covers a lost notification).
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// When committed events wait behind an older, still-running transaction, look again after
/// this at the latest.
const HELD_BACK_RETRY: Duration = Duration::from_millis(5);

/// Serves one service's feed.
#[derive(Debug, Clone)]
pub struct EventFeedService {
    db: Db,
    shutdown: CancellationToken,
    audit: Option<AuditLog>,
}

impl EventFeedService {
    /// Serves `db`'s feed until `shutdown` is cancelled (open streams then end).
    pub fn new(db: Db, shutdown: CancellationToken) -> Self {
        Self {
            db,
            shutdown,
            audit: None,
        }
    }

    /// Records each subscription in `audit`: for feeds whose events carry personal data.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The tonic service, with the request size limit applied.
    pub fn into_server(self, max_message_bytes: usize) -> EventFeedServer<Self> {
        EventFeedServer::new(self).max_decoding_message_size(max_message_bytes)
    }
}

struct Subscription {
    after: Cursor,
    kinds: HashSet<String>,
    max_batch: i64,
}

fn validate(req: pb::SubscribeRequest) -> Result<Subscription, Status> {
    let mut v = FieldViolations::new();
    let after = Cursor::parse(&req.after);
    v.check(after.is_none(), "after", "not a cursor from this feed");
    v.check(
        !(0..=1000).contains(&req.max_batch),
        "max_batch",
        "must be 0 to 1000",
    );
    v.check(req.kinds.len() > 200, "kinds", "at most 200 kinds");
    for (i, kind) in req.kinds.iter().enumerate() {
        v.check(
            kind.is_empty() || kind.len() > 200,
            format!("kinds[{i}]"),
            "must be 1 to 200 characters",
        );
    }
    v.finish()?;
    Ok(Subscription {
        after: after.unwrap_or_default(),
        kinds: req.kinds.into_iter().collect(),
        max_batch: if req.max_batch == 0 {
            256
        } else {
            i64::from(req.max_batch)
        },
    })
}

#[tonic::async_trait]
impl EventFeed for EventFeedService {
    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = caller(&request)?
            .require(&[Role::Service, Role::CityAdmin])?
            .clone();
        let sub = validate(request.into_inner())?;
        if let Some(audit) = &self.audit {
            audit
                .record(
                    &principal,
                    crate::audit::READ_PERSONAL_DATA,
                    &format!("feeds/{}", self.db.name()),
                    &format!("minqing.events.v1.EventFeed/Subscribe after {}", sub.after),
                )
                .await;
        }
        Ok(Response::new(spawn_follow(
            self.db.clone(),
            sub,
            self.shutdown.clone(),
        )))
    }
}

/// The feed of `db` after `after`, read directly (for a service following its own feed).
pub(crate) fn local_stream(
    db: Db,
    after: Cursor,
    kinds: Vec<String>,
    max_batch: i64,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<pb::SubscribeResponse, Status>> {
    spawn_follow(
        db,
        Subscription {
            after,
            kinds: kinds.into_iter().collect(),
            max_batch,
        },
        shutdown,
    )
}

fn spawn_follow(
    db: Db,
    sub: Subscription,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<pb::SubscribeResponse, Status>> {
    // A small buffer: a slow subscriber holds back only its own reader task.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(follow(db, sub, tx, shutdown));
    ReceiverStream::new(rx)
}

async fn follow(
    db: Db,
    sub: Subscription,
    out: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    shutdown: CancellationToken,
) {
    let mut commits = db.commits();
    let mut cursor = sub.after;
    let source = db.name().to_string();
    loop {
        // Mark the signal seen *before* reading, so a commit during the read is not missed.
        commits.borrow_and_update();
        let batch = match read_after(&db, cursor, sub.max_batch).await {
            Ok(batch) => batch,
            Err(err) => {
                let _ = out.send(Err(err.to_status("reading the event feed"))).await;
                return;
            }
        };
        if let Some(last) = batch.events.last() {
            let full = batch.events.len() as i64 == sub.max_batch;
            cursor = last.cursor;
            let events: Vec<_> = batch
                .events
                .into_iter()
                .filter(|e| sub.kinds.is_empty() || sub.kinds.contains(&e.kind))
                .map(|e| to_proto(e, &source))
                .collect();
            let response = pb::SubscribeResponse {
                events,
                cursor: cursor.to_string(),
            };
            tokio::select! {
                sent = out.send(Ok(response)) => if sent.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            if full {
                continue;
            }
        }
        // Held back: the older transaction's own commit normally wakes us; the short timer
        // covers one that wrote no event (or ran in another process).
        let wait = if batch.held_back {
            HELD_BACK_RETRY
        } else {
            FALLBACK_POLL
        };
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {},
            () = out.closed() => return,
            () = shutdown.cancelled() => return,
        }
    }
}
