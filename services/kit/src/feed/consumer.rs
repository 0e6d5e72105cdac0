//! Following another service's feed and applying each event exactly once.
//!
//! Delivery is at least once; the effect is exactly once because a consumer applies a batch
//! and stores its cursor in **one transaction of its own database**. Only one replica of a
//! consumer applies a feed at a time: it holds a lease row in its database, and every apply
//! transaction re-checks and extends the lease first (a fence), so a replica that lost its
//! lease while paused can never commit a stale batch.

use std::{future::Future, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, service::Interceptor, transport::Channel};

use crate::{
    db::{Backend, Db, Lane, Tx},
    error::StoreError,
    time::Clock,
};
use minqing_proto::minqing::events::v1::{self as pb, event_feed_client::EventFeedClient};

/// What a consumer does with events.
pub trait Apply: Send + Sync + 'static {
    /// Applies `events` (in feed order) inside `tx`. The consumer commits `tx` together with
    /// its new cursor; an error rolls both back and the batch is delivered again.
    fn apply(
        &self,
        tx: &mut Tx,
        events: &[pb::Event],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Reads done for a batch before its transaction begins, handed to
    /// [`Apply::apply_prepared`]. On SQLite every writer shares one connection, so a
    /// consumer whose batch needs many reads can make them here, through the read pool, and
    /// hold the writer only for what must be read under it and for its writes. What is read
    /// here may be a moment old when applied: use it only where that is harmless (candidates
    /// to look at again under the transaction), never for a decision that needs the latest.
    fn prepare(
        &self,
        _events: &[pb::Event],
    ) -> impl Future<Output = anyhow::Result<Prepared>> + Send {
        async { Ok(Prepared::default()) }
    }

    /// [`Apply::apply`] with what [`Apply::prepare`] read; by default ignores it.
    fn apply_prepared(
        &self,
        tx: &mut Tx,
        events: &[pb::Event],
        _prepared: Prepared,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.apply(tx, events)
    }
}

/// What [`Apply::prepare`] read, for the same consumer's [`Apply::apply_prepared`].
#[derive(Default)]
pub struct Prepared {
    value: Option<Box<dyn std::any::Any + Send>>,
    nothing: bool,
}

impl Prepared {
    /// Wraps a consumer's reads.
    pub fn new<T: Send + 'static>(value: T) -> Self {
        Self {
            value: Some(Box::new(value)),
            nothing: false,
        }
    }

    /// The batch changes nothing (its reads showed so): [`Apply::apply_prepared`] is not
    /// called, and the consumer only moves its cursor past it, without waiting for that to
    /// be durable. Lost in a crash, the cursor is older and the batch is read again — and,
    /// by then perhaps changing something, applied as usual.
    pub fn nothing_to_apply() -> Self {
        Self {
            value: None,
            nothing: true,
        }
    }

    /// Whether [`Prepared::nothing_to_apply`] made it.
    pub fn is_nothing_to_apply(&self) -> bool {
        self.nothing
    }

    /// The reads, if they are a `T`.
    pub fn take<T: Send + 'static>(self) -> Option<T> {
        self.value.and_then(|b| b.downcast::<T>().ok()).map(|b| *b)
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (&self.value, self.nothing) {
            (_, true) => "Prepared(nothing to apply)",
            (Some(_), false) => "Prepared(..)",
            (None, false) => "Prepared(none)",
        })
    }
}

/// A span for handling one event, continuing the trace of the request that caused it: events
/// a consumer writes while in it carry that trace on, so one trace follows a case across
/// services.
pub fn event_span(consumer: &str, event: &pb::Event) -> tracing::Span {
    let span = tracing::info_span!(
        "apply_event",
        otel.name = %format!("{consumer} {}", event.kind),
        otel.kind = "consumer",
        event.kind = %event.kind,
        event.subject = %event.subject,
        event.source = %event.source,
    );
    crate::telemetry::set_parent_from_traceparent(&span, &event.traceparent, &event.tracestate);
    span
}

/// Where the feed comes from.
#[derive(Debug, Clone)]
pub enum FeedSource {
    /// Another service's `EventFeed`, over gRPC.
    Grpc {
        /// A channel to the producing service.
        channel: Channel,
        /// A bearer token with the service role.
        token: String,
    },
    /// A service's own feed, read straight from its database.
    Local(Db),
}

/// How a consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consumer's name, unique within its database (e.g. `routing-from-intake`).
    pub name: String,
    /// Event kinds wanted; empty for all.
    pub kinds: Vec<String>,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Largest batch applied in one transaction.
    pub max_batch: i32,
    /// This replica's identity.
    pub holder: String,
    /// How long to gather further events after the first of a batch before applying them in
    /// one transaction. Each apply is a durable commit: under load, gathering for a few
    /// milliseconds turns hundreds of small commits a second into a few large ones.
    pub linger: Duration,
    /// The least time from the start of one batch to the start of the next while events keep
    /// coming (zero: no pacing). A batch whose first event arrives sooner after the previous
    /// batch gathers until then, so a busy feed is applied in a few large batches a second
    /// instead of many small ones; after a quiet spell the first event is applied at once
    /// (only the linger applies). For consumers nobody waits on within a fraction of a
    /// second (figures, replies to residents); each batch has a cost of its own whatever its
    /// size (its transaction, its lease check and cursor, the reads it makes for the whole
    /// batch, the rows it rewrites once per batch).
    pub pace: Duration,
    /// The lane of the consumer's database its transactions run in ([`Db::lane`]), naming
    /// the kinds of event they append: readers of that database's feed wanting none of
    /// those kinds then do not wait for its batches. `None`: its transactions are like any
    /// other of the service's, and every reader of the feed waits for them.
    pub lane: Option<Lane>,
}

impl ConsumerOptions {
    /// Defaults for `name`: all kinds, 15 s lease, batches of 256, a random holder id.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kinds: Vec::new(),
            lease_ttl: Duration::from_secs(15),
            max_batch: 256,
            holder: uuid::Uuid::new_v4().to_string(),
            linger: Duration::from_millis(10),
            pace: Duration::ZERO,
            lane: None,
        }
    }
}

/// A consumer of one feed.
pub struct Consumer<A> {
    db: Db,
    source: FeedSource,
    apply: A,
    opts: ConsumerOptions,
    /// Batches applied (or moved past) so far: a session that made progress before failing
    /// starts the retry backoff afresh.
    batches: std::sync::atomic::AtomicU64,
    /// The cursor past batches that held none of the kinds wanted, not yet stored: it is
    /// stored with the next applied batch, at the next lease renewal, or on the way out,
    /// rather than a commit each (a feed busy with other kinds sends many such batches, and
    /// reading them again after a crash finds nothing to apply again).
    unsaved: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
enum End {
    #[error("another replica holds the lease")]
    NotHolder,
    #[error("the lease was lost")]
    LostLease,
    #[error("the feed stream ended")]
    StreamEnded,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("feed call failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("applying events failed: {0:#}")]
    Apply(anyhow::Error),
}

impl<A: Apply> Consumer<A> {
    /// A consumer applying `source`'s events with `apply`, keeping its state in `db`.
    pub fn new(db: Db, source: FeedSource, apply: A, opts: ConsumerOptions) -> Self {
        Self {
            db,
            source,
            apply,
            opts,
            batches: std::sync::atomic::AtomicU64::new(0),
            unsaved: std::sync::Mutex::new(None),
        }
    }

    /// A transaction of the consumer's database, in its lane if it has one.
    async fn begin(&self) -> Result<Tx, StoreError> {
        match &self.opts.lane {
            Some(lane) => self.db.begin_in(lane).await,
            None => self.db.begin().await,
        }
    }

    fn take_unsaved(&self) -> Option<String> {
        self.unsaved.lock().map_or(None, |mut u| u.take())
    }

    /// Runs until `shutdown` is cancelled: takes the lease when free, follows the feed,
    /// applies, and retries with backoff after any failure. Releases the lease on the way out.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let before = self.batches.load(std::sync::atomic::Ordering::Relaxed);
            let result = self.session(&shutdown).await;
            if self.batches.load(std::sync::atomic::Ordering::Relaxed) != before {
                backoff = Duration::from_millis(100);
            }
            let wait = match result {
                Ok(()) => break,
                Err(End::NotHolder) => self.opts.lease_ttl / 3,
                Err(err @ (End::LostLease | End::StreamEnded)) => {
                    tracing::info!(consumer = %self.opts.name, "{err}; resubscribing");
                    Duration::from_millis(100)
                }
                Err(err) => {
                    tracing::warn!(consumer = %self.opts.name, error = %err, "feed consumer failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {},
                () = shutdown.cancelled() => break,
            }
        }
        if let Err(err) = self.release().await {
            tracing::debug!(consumer = %self.opts.name, error = %err, "could not release lease");
        }
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<(), End> {
        if !self.try_acquire().await? {
            return Err(End::NotHolder);
        }
        let after = self.load_cursor().await?;
        let mut stream: BoxStream<'static, Result<pb::SubscribeResponse, tonic::Status>> =
            match &self.source {
                FeedSource::Grpc { channel, token } => {
                    let mut client =
                        EventFeedClient::with_interceptor(channel.clone(), BearerToken::new(token))
                            .max_decoding_message_size(64 << 20);
                    let request = pb::SubscribeRequest {
                        after,
                        kinds: self.opts.kinds.clone(),
                        max_batch: self.opts.max_batch,
                    };
                    tokio::select! {
                        r = client.subscribe(request) => r?.into_inner().boxed(),
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
                FeedSource::Local(db) => {
                    let after = super::Cursor::parse(&after).ok_or_else(|| {
                        End::Rpc(tonic::Status::data_loss(format!(
                            "stored cursor {after:?} is not a cursor"
                        )))
                    })?;
                    super::server::local_stream(
                        db.clone(),
                        after,
                        self.opts.kinds.clone(),
                        i64::from(self.opts.max_batch),
                        shutdown.clone(),
                    )
                    .boxed()
                }
            };
        let mut renew = tokio::time::interval(self.opts.lease_ttl / 3);
        renew.tick().await;
        // When the last batch with events began (for the pace).
        let mut last: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(batch) => {
                        let (batch, ended) = self.gather(batch?, &mut stream, last).await?;
                        if !batch.events.is_empty() {
                            last = Some(tokio::time::Instant::now());
                        }
                        self.apply_batch(batch).await?;
                        if ended {
                            return Err(End::StreamEnded);
                        }
                    }
                    None => return Err(End::StreamEnded),
                },
                _ = renew.tick() => {
                    let mut tx = self.begin().await?;
                    if !self.fence(tx.conn()).await? {
                        return Err(End::LostLease);
                    }
                    if let Some(cursor) = self.take_unsaved() {
                        self.store_cursor(tx.conn(), &cursor).await?;
                    }
                    tx.commit().await?;
                }
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Adds to `first` whatever else arrives within the linger, and until the pace allows the
    /// next batch after the one that began at `last`, up to four full batches. Returns the
    /// gathered batch and whether the stream ended meanwhile.
    async fn gather(
        &self,
        mut first: pb::SubscribeResponse,
        stream: &mut BoxStream<'static, Result<pb::SubscribeResponse, tonic::Status>>,
        last: Option<tokio::time::Instant>,
    ) -> Result<(pb::SubscribeResponse, bool), End> {
        let now = tokio::time::Instant::now();
        let mut deadline = now + self.opts.linger;
        if let Some(last) = last {
            deadline = deadline.max(last + self.opts.pace);
        }
        if deadline <= now || first.events.is_empty() {
            return Ok((first, false));
        }
        let cap = (self.opts.max_batch.max(1) as usize) * 4;
        while first.events.len() < cap {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => break,
                Ok(None) => return Ok((first, true)),
                Ok(Some(more)) => {
                    let more = more?;
                    first.events.extend(more.events);
                    first.cursor = more.cursor;
                }
            }
        }
        Ok((first, false))
    }

    async fn apply_batch(&self, batch: pb::SubscribeResponse) -> Result<(), End> {
        if batch.events.is_empty() {
            if let Ok(mut unsaved) = self.unsaved.lock() {
                *unsaved = Some(batch.cursor);
            }
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let prepared = self
            .apply
            .prepare(&batch.events)
            .await
            .map_err(End::Apply)?;
        let read = started.elapsed();
        // Whatever is stored next is past the unsaved cursor.
        self.take_unsaved();
        if prepared.is_nothing_to_apply() {
            self.advance(&batch.cursor).await?;
            tracing::debug!(
                consumer = %self.opts.name,
                events = batch.events.len(),
                prepare_micros = read.as_micros() as u64,
                advance_micros = (started.elapsed() - read).as_micros() as u64,
                "moved past a batch that changes nothing"
            );
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let began = started.elapsed() - read;
        if !self.fence(tx.conn()).await? {
            return Err(End::LostLease);
        }
        self.apply
            .apply_prepared(&mut tx, &batch.events, prepared)
            .await
            .map_err(End::Apply)?;
        self.store_cursor(tx.conn(), &batch.cursor).await?;
        let applied = started.elapsed();
        tx.commit().await?;
        tracing::debug!(
            consumer = %self.opts.name,
            events = batch.events.len(),
            prepare_micros = read.as_micros() as u64,
            begin_micros = began.as_micros() as u64,
            apply_micros = (applied - began - read).as_micros() as u64,
            commit_micros = (started.elapsed() - applied).as_micros() as u64,
            "applied a batch"
        );
        if let Some(last) = batch.events.last() {
            crate::telemetry::record_feed_lag(&self.opts.name, last.create_time.as_ref());
        }
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Moves the cursor past a batch that changes nothing, in a transaction that does not
    /// wait to be durable: on PostgreSQL an asynchronous commit, on SQLite the writer with
    /// `synchronous = NORMAL` for this one commit. Either way a crash can lose only the
    /// newest such commits, never a later durable one (both write their logs in order), and
    /// losing one only means reading its events again.
    async fn advance(&self, cursor: &str) -> Result<(), End> {
        let mut writer = self.db.relaxed_writer().await?;
        let mut tx = sqlx::Connection::begin(writer.conn()?)
            .await
            .map_err(StoreError::from)?;
        if let Some(lane) = &self.opts.lane {
            lane.enter(&mut tx).await?;
        }
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        if !self.fence(&mut tx).await? {
            return Err(End::LostLease);
        }
        self.store_cursor(&mut tx, cursor).await?;
        tx.commit().await.map_err(StoreError::from)?;
        writer.restore().await?;
        Ok(())
    }

    async fn store_cursor(&self, tx: &mut AnyConnection, cursor: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consumer_cursors (name, cursor, update_time) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, update_time = excluded.update_time",
        )
        .bind(&self.opts.name)
        .bind(cursor)
        .bind(Clock::System.now_micros())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn load_cursor(&self) -> Result<String, StoreError> {
        let row = sqlx::query("SELECT cursor FROM consumer_cursors WHERE name = $1")
            .bind(&self.opts.name)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            None => String::new(),
        })
    }

    fn lease_expiry(&self) -> i64 {
        Clock::System.now_micros() + self.opts.lease_ttl.as_micros() as i64
    }

    async fn try_acquire(&self) -> Result<bool, StoreError> {
        let now = Clock::System.now_micros();
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO consumer_leases (name, holder, expire_time) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expire_time = excluded.expire_time \
             WHERE consumer_leases.expire_time < $4 OR consumer_leases.holder = excluded.holder",
        )
        .bind(&self.opts.name)
        .bind(&self.opts.holder)
        .bind(self.lease_expiry())
        .bind(now)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Extends the lease inside `tx`; false when this replica no longer holds it.
    async fn fence(&self, tx: &mut AnyConnection) -> Result<bool, StoreError> {
        let now = Clock::System.now_micros();
        let done = sqlx::query(
            "UPDATE consumer_leases SET expire_time = $3 \
             WHERE name = $1 AND holder = $2 AND expire_time >= $4",
        )
        .bind(&self.opts.name)
        .bind(&self.opts.holder)
        .bind(self.lease_expiry())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(cursor) = self.take_unsaved()
            && self.fence(tx.conn()).await?
        {
            self.store_cursor(tx.conn(), &cursor).await?;
        }
        sqlx::query("UPDATE consumer_leases SET expire_time = 0 WHERE name = $1 AND holder = $2")
            .bind(&self.opts.name)
            .bind(&self.opts.holder)
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }
}

/// Adds `authorization: Bearer <token>` and the current trace context to every call.
#[derive(Clone)]
pub struct BearerToken {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// An interceptor for `token` (an empty or malformed token sends no header).
    pub fn new(token: &str) -> Self {
        Self {
            header: format!("Bearer {token}").parse().ok(),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        crate::telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}
