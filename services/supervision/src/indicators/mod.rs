//! Indicators, reports for deputies, public disclosure and hot spots — all computed from the
//! event feeds. Three consumers (intake's and routing's feeds over gRPC, supervision's own
//! from its database) keep each case's facts (`ind_cases`) and the rollups made from them
//! (`ind_rollup`), each batch with its cursor in one transaction. A rebuild reads the three
//! feeds again from their first events and must arrive at the same rows.

pub mod facts;
pub mod hotspot;
pub mod period;
pub mod query;
pub mod rebuild;
pub mod rollup;

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

use crate::app::Ctx;
use facts::Facts;
use minqing_kit::{
    db::Tx,
    feed::{Apply, Consumer, ConsumerOptions, FeedSource},
    service::{ServiceEnv, peer_channel},
};
use minqing_proto::minqing::events::v1::Event;

/// `[supervision.indicators]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndicatorsConfig {
    /// Reports of one category in one place within the window that make a hot spot.
    pub hotspot_threshold: u32,
    /// The hot-spot window, in hours.
    pub hotspot_window_hours: u32,
}

impl Default for IndicatorsConfig {
    fn default() -> Self {
        Self {
            hotspot_threshold: 5,
            hotspot_window_hours: 72,
        }
    }
}

impl IndicatorsConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=10_000).contains(&self.hotspot_threshold) {
            return Err("supervision.indicators.hotspot_threshold must be 2 to 10000".into());
        }
        if !(1..=24 * 366).contains(&self.hotspot_window_hours) {
            return Err("supervision.indicators.hotspot_window_hours must be 1 to 8784".into());
        }
        Ok(())
    }
}

/// The three feeds indicators follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Intake's: cases received, withdrawn.
    Intake,
    /// Routing's: units, deadlines, answers.
    Routing,
    /// Supervision's own: overdue escalations, ratings.
    Supervision,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 3] = [Source::Intake, Source::Routing, Source::Supervision];

    /// The consumer's name (its cursor and lease).
    pub fn consumer(self) -> &'static str {
        match self {
            Source::Intake => "indicators-from-intake",
            Source::Routing => "indicators-from-routing",
            Source::Supervision => "indicators-from-supervision",
        }
    }

    /// The kinds it reads.
    pub fn kinds(self) -> Vec<String> {
        match self {
            Source::Intake => facts::intake_kinds(),
            Source::Routing => facts::routing_kinds(),
            Source::Supervision => facts::supervision_kinds(),
        }
    }
}

/// Applies one feed's events.
pub struct FeedApply {
    ctx: Arc<Ctx>,
    /// Taken by the three consumers in turn: they write the same rollup rows and facts, and
    /// on PostgreSQL concurrent batches would wait on each other's row locks (or deadlock).
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Apply for FeedApply {
    async fn apply(&self, tx: &mut Tx, events: &[Event]) -> anyhow::Result<()> {
        let _turn = self.turn.lock().await;
        serialize(tx).await?;
        let hot = Some((&self.ctx.config.indicators, self.ctx.clock.now_micros()));
        apply_events(tx, events, hot).await
    }
}

/// On PostgreSQL, waits until no other transaction that changes the facts and rollups (another
/// of the three consumers, another replica's, or a rebuild) is open, and keeps them out until
/// this one ends. The in-process turn alone is not enough: it is released before the consumer
/// commits, so the next consumer could read a case's facts before the previous change to them
/// committed and overwrite it (a lost update, seen as figures that never arrive). SQLite's one
/// writer already serializes these transactions.
pub async fn serialize(tx: &mut Tx) -> Result<(), minqing_kit::error::StoreError> {
    if tx.backend() == minqing_kit::db::Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7101776001)")
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// Applies `events` to the facts and rollups in `tx`; with `hot`, looks for hot spots among
/// the newly received cases (the rebuild does not: problems once raised stay raised).
///
/// Batch-wise: the facts of every case the batch is about are read with one statement, the
/// events applied in memory in order, each changed case written once (multi-row upserts) and
/// the rollups changed once. Hot spots are looked for at each newly received case, in event
/// order, with the cases the batch changed before it as they were at that point (the
/// unwritten facts are handed to [`hotspot::check`]) and the open hot spots read once for the
/// batch and kept in memory ([`hotspot::Open`]), so a batch raises and grows the same hot
/// spots as one event at a time.
pub async fn apply_events(
    tx: &mut Tx,
    events: &[Event],
    hot: Option<(&IndicatorsConfig, i64)>,
) -> anyhow::Result<()> {
    let mut cases: Vec<(&Event, String)> = Vec::with_capacity(events.len());
    for event in events {
        match facts::event_case(event) {
            Ok(Some(id)) => cases.push((event, id)),
            Ok(None) => {}
            Err(err) => {
                // A payload that cannot be read never will be: skip it rather than stop.
                tracing::warn!(kind = %event.kind, id = %event.id, error = %err, "indicators skip an unreadable event");
            }
        }
    }
    if cases.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<String> = cases.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    let before = facts::load_many(tx, &ids).await?;
    // The hot spots the cases the batch may receive could join, read at once.
    let mut open = match hot {
        Some((cfg, _)) => {
            let received: Vec<Facts> = cases
                .iter()
                .filter_map(|(event, id)| {
                    let mut f = Facts {
                        case_id: id.clone(),
                        ..Facts::default()
                    };
                    matches!(facts::apply(&mut f, event), Ok(true)).then_some(f)
                })
                .collect();
            hotspot::Open::load(tx, cfg, &received).await?
        }
        None => hotspot::Open::default(),
    };
    // The cases touched so far, as they are now (none written yet).
    let mut now: HashMap<String, Facts> = HashMap::with_capacity(ids.len());
    for (event, id) in cases {
        let touched = now.remove(&id);
        let was_touched = touched.is_some();
        let mut f = touched.unwrap_or_else(|| {
            before.get(&id).cloned().unwrap_or_else(|| Facts {
                case_id: id.clone(),
                ..Facts::default()
            })
        });
        let received = match facts::apply(&mut f, event) {
            Ok(received) => received,
            Err(err) => {
                // Nothing of it applied (payloads are decoded before anything changes).
                tracing::warn!(kind = %event.kind, id = %event.id, error = %err, "indicators skip an unreadable event");
                if was_touched {
                    now.insert(id, f);
                }
                continue;
            }
        };
        if received && let Some((cfg, at)) = hot {
            hotspot::check(tx, cfg, &f, &now, &mut open, at).await?;
        }
        now.insert(id, f);
    }
    open.write(tx).await?;
    // Written in id order: two writers lock the rows in the same order.
    let mut changed: Vec<&Facts> = now
        .values()
        .filter(|f| before.get(&f.case_id) != Some(*f))
        .collect();
    changed.sort_by(|a, b| a.case_id.cmp(&b.case_id));
    facts::save_many(tx, changed).await?;
    let mut deltas = rollup::Deltas::default();
    for (id, f) in &now {
        deltas.change(before.get(id), f);
    }
    deltas.write(tx).await?;
    Ok(())
}

/// Starts the three consumers.
pub fn spawn(
    ctx: &Arc<Ctx>,
    env: &ServiceEnv,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut tasks = Vec::new();
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    for source in Source::ALL {
        let feed = match source {
            Source::Intake => FeedSource::Grpc {
                channel: peer_channel(&env.peer("intake", &ctx.config.intake_url))?,
                token: env.service_token.clone(),
            },
            Source::Routing => FeedSource::Grpc {
                channel: peer_channel(&env.peer("routing", &ctx.config.routing_url))?,
                token: env.service_token.clone(),
            },
            Source::Supervision => FeedSource::Local(ctx.db.clone()),
        };
        let mut opts = ConsumerOptions::new(source.consumer());
        opts.kinds = source.kinds();
        opts.pace = env.common.storage.background_pace();
        let consumer = Consumer::new(
            ctx.db.clone(),
            feed,
            FeedApply {
                ctx: ctx.clone(),
                turn: turn.clone(),
            },
            opts,
        );
        let shutdown = env.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            consumer.run(shutdown).await;
            Ok(())
        }));
    }
    Ok(tasks)
}

/// The `Indicators` gRPC service, with the feeds its rebuild reads.
pub fn indicators_server(
    ctx: &Arc<Ctx>,
    env: &ServiceEnv,
) -> minqing_proto::minqing::supervision::v1::indicators_server::IndicatorsServer<
    crate::grpc::indicators::IndicatorsApi,
> {
    let intake = peer_channel(&env.peer("intake", &ctx.config.intake_url));
    let routing = peer_channel(&env.peer("routing", &ctx.config.routing_url));
    let feeds = match (intake, routing) {
        (Ok(intake), Ok(routing)) => Some(rebuild::Feeds {
            intake,
            routing,
            token: env.service_token.clone(),
        }),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "indicators cannot be rebuilt: a feed's address is not valid");
            None
        }
    };
    minqing_proto::minqing::supervision::v1::indicators_server::IndicatorsServer::new(
        crate::grpc::indicators::IndicatorsApi {
            ctx: ctx.clone(),
            feeds,
        },
    )
}

/// Runs supervision's migrations on `db` (for tools such as the indicators benchmark).
pub async fn migrate(db: &minqing_kit::db::Db) -> anyhow::Result<()> {
    db.migrate(&crate::store::MIGRATIONS).await?;
    Ok(())
}
