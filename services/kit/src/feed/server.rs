//! `minqing.events.v1.EventFeed`: replay from a cursor, then follow live.

use std::{collections::HashSet, time::Duration};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    horizon::Pass,
    store::{Cursor, StoredEvent, read_kinds_after_passing, to_proto},
    tail::TailBatch,
};
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

/// When no batch of the shared tail arrives, read the database anyway this often (covers a
/// tail reader that stopped, or a commit whose wake-up was lost).
const LIVE_CHECK: Duration = Duration::from_secs(5);

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

/// Follows `db`'s feed for one subscriber: reads the database itself while behind (the kinds
/// filtered there), then takes the batches of the shared tail ([`super::tail`]); falls back
/// to reading when a batch does not join up with its cursor, when it lagged, or when no batch
/// came for [`LIVE_CHECK`].
async fn follow(
    db: Db,
    sub: Subscription,
    out: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    shutdown: CancellationToken,
) {
    let mut kinds: Vec<String> = sub.kinds.iter().cloned().collect();
    kinds.sort();
    let source = db.name().to_string();
    let mut cursor = sub.after;
    // The lanes whose transactions this subscriber need not wait for, as it wants none of
    // what they write; its reads and the tail it takes both pass them.
    let pass = db.passable(&kinds);
    // Taken before the first read: every batch the tail reads after that read is received.
    let mut tail = super::tail::subscribe(&db, &pass);
    loop {
        match catch_up(
            &db,
            &sub,
            &kinds,
            &pass,
            &mut cursor,
            &out,
            &source,
            &shutdown,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                let _ = out.send(Err(err.to_status("reading the event feed"))).await;
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = tail.recv() => next,
                () = tokio::time::sleep(LIVE_CHECK) => break,
                () = out.closed() => return,
                () = shutdown.cancelled() => return,
            };
            match next {
                Ok(batch) => {
                    if batch.to <= cursor {
                        continue;
                    }
                    if batch.from > cursor {
                        // Events between the cursor and this batch were not received here.
                        break;
                    }
                    if !deliver(&batch, &sub, &mut cursor, &out, &source, &shutdown).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => {
                    tail = super::tail::subscribe(&db, &pass);
                    break;
                }
            }
        }
    }
}

/// Reads the database from `cursor` until a read comes back short. `Ok(false)` when the
/// stream ended (the subscriber left or the server shuts down).
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    db: &Db,
    sub: &Subscription,
    kinds: &[String],
    pass: &Pass,
    cursor: &mut Cursor,
    out: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    source: &str,
    shutdown: &CancellationToken,
) -> Result<bool, crate::error::StoreError> {
    loop {
        let (batch, next) =
            read_kinds_after_passing(db, *cursor, kinds, sub.max_batch, pass).await?;
        let full = batch.events.len() as i64 >= sub.max_batch;
        if next > *cursor {
            *cursor = next;
            let response = pb::SubscribeResponse {
                events: batch
                    .events
                    .into_iter()
                    .map(|e| to_proto(e, source))
                    .collect(),
                cursor: cursor.to_string(),
            };
            tokio::select! {
                sent = out.send(Ok(response)) => if sent.is_err() { return Ok(false) },
                () = shutdown.cancelled() => return Ok(false),
            }
        }
        if !full {
            // Events held back behind an older transaction come with the tail's batches.
            return Ok(true);
        }
    }
}

/// Sends the events of a shared batch after `cursor` that the subscriber wants, at most
/// `max_batch` a response, and moves `cursor` to the batch's end (an empty response says so
/// when none is wanted). False when the stream ended.
async fn deliver(
    batch: &TailBatch,
    sub: &Subscription,
    cursor: &mut Cursor,
    out: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    source: &str,
    shutdown: &CancellationToken,
) -> bool {
    let wanted: Vec<_> = batch
        .events
        .iter()
        .filter(|e| e.cursor > *cursor && (sub.kinds.is_empty() || sub.kinds.contains(&e.kind)))
        .collect();
    let size = usize::try_from(sub.max_batch).unwrap_or(1).max(1);
    let mut chunks: Vec<&[&StoredEvent]> = wanted.chunks(size).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let end = match chunk.last() {
            Some(last) if i + 1 < count => last.cursor,
            _ => batch.to,
        };
        *cursor = end;
        let response = pb::SubscribeResponse {
            events: chunk
                .iter()
                .map(|e| to_proto((*e).clone(), source))
                .collect(),
            cursor: end.to_string(),
        };
        tokio::select! {
            sent = out.send(Ok(response)) => if sent.is_err() { return false },
            () = shutdown.cancelled() => return false,
        }
    }
    true
}
