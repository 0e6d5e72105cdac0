//! The dispatcher: follows intake's feed and routes every submitted case, resumes cases
//! waiting for papers when the papers arrive, and cancels the routing of withdrawn cases.
//! Each batch is applied in one transaction with the consumer's cursor, so each event takes
//! effect exactly once; decisions are made in memory, so a batch costs only its writes.

use std::sync::Arc;

use prost::{Message, Name};

use crate::{
    app::App,
    convert,
    domain::{AssignmentState, Channel, Disposition, RouteState},
    flow::{self, Coordination, Emit, FlowError},
    knowledge::Knowledge,
    liaison_store, store,
};
use minqing_kit::{
    db::Tx,
    feed::{Apply, EventMeta},
    time::Micros,
};
use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as ipb, routing::v1 as pb};

/// The consumer's name (its cursor and lease in routing's database).
pub const CONSUMER: &str = "routing-from-intake";

/// The intake event kinds routing follows.
pub fn kinds() -> Vec<String> {
    vec![
        ipb::CaseSubmitted::full_name(),
        ipb::CaseSupplemented::full_name(),
        ipb::CaseWithdrawn::full_name(),
    ]
}

/// Applies intake's events.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// Shared state.
    pub app: Arc<App>,
}

impl Apply for Dispatcher {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let knowledge = self.app.knowledge.get().await?;
        // Which of the batch's cases are routed already, in one query (a replay after a
        // crash between commit and acknowledgement cannot happen with the cursor in the same
        // transaction, but a case must never be routed twice whatever the feed does).
        let ids: Vec<String> = events
            .iter()
            .filter(|e| e.kind == ipb::CaseSubmitted::full_name())
            .filter_map(|e| e.subject.strip_prefix("cases/").map(str::to_owned))
            .collect();
        let mut routed = store::routed_among(tx, &ids).await?;
        // New cases' writes wait here and are made together, a multi-row statement per table;
        // they are flushed before any event that reads routes, so it sees them.
        let mut writes = flow::Writes::default();
        for event in events {
            let Some(payload) = &event.payload else {
                continue;
            };
            let meta = EventMeta {
                actor: format!("system:{CONSUMER}"),
                traceparent: event.traceparent.clone(),
                tracestate: event.tracestate.clone(),
            };
            let now = self.app.clock.now_micros();
            if event.kind == ipb::CaseSubmitted::full_name() {
                let e = ipb::CaseSubmitted::decode(payload.value.as_slice())?;
                // A case submitted twice in one batch is routed once.
                if let Some(case) = e.case
                    && routed.insert(case.name.trim_start_matches("cases/").to_string())
                {
                    self.submitted(tx, &mut writes, &case, &knowledge, now, &meta)
                        .await?;
                }
            } else if event.kind == ipb::CaseSupplemented::full_name() {
                let e = ipb::CaseSupplemented::decode(payload.value.as_slice())?;
                if let Some(id) = e.case.as_ref().and_then(|c| c.name.strip_prefix("cases/")) {
                    writes.flush(tx).await.map_err(flow_err)?;
                    self.papers_arrived(tx, id, &knowledge, now, &meta).await?;
                }
            } else if event.kind == ipb::CaseWithdrawn::full_name() {
                let e = ipb::CaseWithdrawn::decode(payload.value.as_slice())?;
                if let Some(id) = e.case.as_ref().and_then(|c| c.name.strip_prefix("cases/")) {
                    writes.flush(tx).await.map_err(flow_err)?;
                    self.withdrawn(tx, id, &e.reason, now, &meta).await?;
                }
            }
        }
        let decided = started.elapsed();
        writes.flush(tx).await.map_err(flow_err)?;
        tracing::debug!(
            events = events.len(),
            micros = started.elapsed().as_micros() as u64,
            before_writes_micros = decided.as_micros() as u64,
            "dispatched a batch"
        );
        Ok(())
    }
}

fn flow_err(e: FlowError) -> anyhow::Error {
    anyhow::Error::new(e)
}

impl Dispatcher {
    async fn submitted(
        &self,
        tx: &mut Tx,
        writes: &mut flow::Writes,
        case: &ipb::Case,
        knowledge: &Knowledge,
        now: Micros,
        meta: &EventMeta,
    ) -> anyhow::Result<()> {
        let Some((mut facts, contact)) = convert::facts_from_case(case) else {
            return Ok(());
        };
        if let Some(item) = knowledge.items.get(&facts.category) {
            facts.volunteer_suitable = item.volunteer_suitable;
            facts.category_name = item.name.clone();
        }
        if facts.channel == Channel::LiaisonStation && !facts.liaison_station.is_empty() {
            liaison_store::insert_station_case(
                tx,
                &facts.case_id,
                &facts.liaison_station,
                &facts.deputy,
                &facts.title,
                &facts.category,
                facts.submit_time,
            )
            .await?;
        }
        let outcome = self.app.decide(&facts, &[], knowledge, now);
        tracing::info!(
            case = %facts.case_id,
            rule = %outcome.decision.rule,
            unit = %outcome.decision.unit,
            disposition = outcome.decision.disposition.slug(),
            "case routed"
        );
        let mut route = flow::new_route(facts, contact, now);
        let mut emits = Vec::new();
        let assignment = flow::prepare_assignment(
            &self.app,
            tx,
            &mut route,
            outcome,
            Coordination::First,
            pb::RouteCause::Submitted,
            "",
            now,
            meta,
            &mut emits,
            &mut writes.events,
        )
        .await
        .map_err(flow_err)?;
        writes.assignments.push(assignment);
        writes.finish_new(route, emits, now, meta);
        Ok(())
    }

    async fn papers_arrived(
        &self,
        tx: &mut Tx,
        case_id: &str,
        knowledge: &Knowledge,
        now: Micros,
        meta: &EventMeta,
    ) -> anyhow::Result<()> {
        let Some(mut route) = store::get_route(tx.conn(), case_id).await? else {
            return Ok(());
        };
        if route.state != RouteState::AwaitingPapers {
            return Ok(());
        }
        let Some(mut a) = store::get_assignment(tx.conn(), &route.current_assignment).await? else {
            return Ok(());
        };
        let limit = if route.time_limit_working_days > 0 {
            route.time_limit_working_days as u32
        } else {
            knowledge
                .items
                .get(&route.facts.category)
                .map_or(self.app.config.default_time_limit_working_days, |i| {
                    i.time_limit_working_days
                })
        };
        let due = self.app.local.add_working_days(now, limit);
        let version = route.version;
        route.disposition = Disposition::Committed;
        route.state = if a.accept_time.is_some() {
            RouteState::InProgress
        } else {
            RouteState::Assigned
        };
        route.missing_documents.clear();
        route.due_time = Some(due);
        route.time_limit_working_days = limit as i32;
        route.clock_start_time = Some(now);
        a.state = if a.accept_time.is_some() {
            AssignmentState::Accepted
        } else {
            AssignmentState::Pending
        };
        a.disposition = Disposition::Committed;
        a.missing_documents.clear();
        a.due_time = Some(due);
        a.version += 1;
        store::update_assignment(tx, &a).await?;
        let emits = vec![
            Emit::Desk(
                a.clone(),
                pb::DeskItemKind::Updated,
                "the papers arrived: handling resumes".into(),
            ),
            Emit::Resumed(a),
        ];
        flow::finish(tx, &mut route, Some(version), emits, now, meta)
            .await
            .map_err(flow_err)
    }

    async fn withdrawn(
        &self,
        tx: &mut Tx,
        case_id: &str,
        reason: &str,
        now: Micros,
        meta: &EventMeta,
    ) -> anyhow::Result<()> {
        let Some(mut route) = store::get_route(tx.conn(), case_id).await? else {
            return Ok(());
        };
        if !route.state.is_open() {
            return Ok(());
        }
        let version = route.version;
        let mut emits = Vec::new();
        flow::end_current(
            tx,
            &route,
            AssignmentState::Cancelled,
            "the resident withdrew the case",
            now,
            &mut emits,
        )
        .await
        .map_err(flow_err)?;
        route.state = RouteState::Cancelled;
        route.due_time = None;
        emits.push(Emit::Cancelled(reason.to_string()));
        flow::finish(tx, &mut route, Some(version), emits, now, meta)
            .await
            .map_err(flow_err)
    }
}

#[cfg(test)]
mod tests {
    //! A batch of intake's events applied in one transaction (the new cases written with
    //! multi-row statements) leaves the same routes, assignments, desks and feed as the same
    //! events applied one transaction each.

    use std::sync::Arc;

    use prost::{Message, Name};
    use serde::Deserialize;
    use sqlx::Row;

    use super::Dispatcher;
    use crate::{
        app::App,
        config::RoutingConfig,
        domain::Level,
        import,
        knowledge::{Item, Knowledge, KnowledgeCache, PlaceInfo},
        rules::{RuleSet, SAMPLE},
        store,
    };
    use minqing_kit::{
        backend_tests,
        db::{Backend, Db},
        feed::Apply,
        testing::TestDatabase,
        time::{Clock, to_timestamp},
    };
    use minqing_proto::minqing::{
        events::v1 as events_pb, intake::v1 as ipb, routing::v1 as pb, r#type::v1 as tpb,
    };

    #[derive(Deserialize)]
    struct Places {
        city: City,
        place: Vec<P>,
    }
    #[derive(Deserialize)]
    struct City {
        code: String,
    }
    #[derive(Deserialize)]
    struct P {
        code: String,
        level: String,
        parent: String,
        name: String,
    }
    #[derive(Deserialize)]
    struct Catalogue {
        item: Vec<I>,
    }
    #[derive(Deserialize)]
    struct I {
        id: String,
        name: String,
        time_limit_working_days: u32,
        required_documents: Vec<String>,
        volunteer_suitable: bool,
    }

    /// The sample city and catalogue, as intake serves them.
    fn knowledge() -> Knowledge {
        let places: Places = toml::from_str(include_str!("../../intake/data/places.toml")).unwrap();
        let catalogue: Catalogue =
            toml::from_str(include_str!("../../intake/data/catalogue.toml")).unwrap();
        let mut k = Knowledge {
            city: places.city.code,
            ..Default::default()
        };
        for p in places.place {
            let level = match p.level.as_str() {
                "district" => Level::District,
                "street" => Level::Street,
                "community" => Level::Community,
                "grid" => Level::Grid,
                _ => Level::Building,
            };
            k.places.insert(
                p.code,
                PlaceInfo {
                    level,
                    parent: p.parent,
                    name: p.name,
                },
            );
        }
        for i in catalogue.item {
            k.items.insert(
                i.id,
                Item {
                    name: i.name,
                    time_limit_working_days: i.time_limit_working_days,
                    required_documents: i.required_documents,
                    default_disposition: None,
                    volunteer_suitable: i.volunteer_suitable,
                },
            );
        }
        k
    }

    async fn dispatcher(t: &TestDatabase, clock: &Clock) -> (Db, Dispatcher) {
        let db = t.db("routing", &store::MIGRATIONS).await;
        let now = clock.now_micros();
        let rules = RuleSet::parse(SAMPLE, "builtin:sample", now, None).unwrap();
        let app = Arc::new(App::new(
            db.clone(),
            rules,
            KnowledgeCache::fixed(knowledge()),
            clock.clone(),
            RoutingConfig::default(),
        ));
        crate::grpc::seed(
            &app,
            "test:seed",
            import::parse_toml(import::SAMPLE_UNITS).unwrap(),
        )
        .await
        .unwrap();
        app.refresh_directory().await.unwrap();
        (db, Dispatcher { app })
    }

    fn event<M: Message + Name>(subject: &str, m: &M) -> events_pb::Event {
        events_pb::Event {
            kind: M::full_name(),
            subject: subject.into(),
            actor: "window_staff:window-07".into(),
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", M::full_name()),
                value: m.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    /// A submitted case at the sample city's first building.
    fn submitted(id: &str, category: &str, urgency: tpb::Urgency, now: i64) -> events_pb::Event {
        let case = ipb::Case {
            name: format!("cases/{id}"),
            category: category.into(),
            channel: tpb::Channel::Hotline as i32,
            urgency: urgency as i32,
            title: format!("title {id}"),
            description: format!("description {id}"),
            place: Some(tpb::Place {
                district: "620102".into(),
                street: "620102001".into(),
                community: "620102001001".into(),
                grid: "620102001001-g01".into(),
                building: "620102001001-g01-b01".into(),
                ..Default::default()
            }),
            reporter: Some(ipb::Reporter {
                anonymous: false,
                contact: Some(tpb::Contact {
                    name: "张桂兰".into(),
                    phone: "13909310001".into(),
                    ..Default::default()
                }),
            }),
            create_time: Some(to_timestamp(now)),
            ..Default::default()
        };
        event(&case.name.clone(), &ipb::CaseSubmitted { case: Some(case) })
    }

    /// Every disposition the sample rules give, a case submitted twice, and a case that is
    /// supplemented and another withdrawn in the same batch as their submission.
    fn mixed(now: i64) -> Vec<events_pb::Event> {
        use tpb::Urgency::{Emergency, Normal};
        let mut events = vec![
            submitted("c01", "onsite-environment-02", Normal, now), // committed, the grid
            submitted("c02", "onsite-environment-05", Normal, now), // escalated
            submitted("c03", "onsite-environment-11", Normal, now), // referred
            submitted("c04", "onsite-environment-06", Emergency, now), // an emergency line
            submitted("c05", "errand-assistance-01", Normal, now),  // supplement
            submitted("c06", "onsite-care-01", Normal, now),
            submitted("c07", "no-such-category", Normal, now),
            submitted("c01", "onsite-environment-02", Normal, now), // again
            submitted("c08", "onsite-environment-02", Normal, now),
        ];
        events.push(event(
            "cases/c05",
            &ipb::CaseSupplemented {
                case: Some(ipb::Case {
                    name: "cases/c05".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        events.push(event(
            "cases/c08",
            &ipb::CaseWithdrawn {
                case: Some(ipb::Case {
                    name: "cases/c08".into(),
                    ..Default::default()
                }),
                reason: "fixed itself".into(),
            },
        ));
        events.push(submitted("c09", "onsite-environment-05", Normal, now));
        events
    }

    /// What the dispatcher left, without ids and positions: routes, assignments, desk items,
    /// and the feed (each event's kind, subject, and for `CaseRouted` its unit and
    /// disposition).
    async fn snapshot(db: &Db) -> Vec<String> {
        let mut out = Vec::new();
        for row in sqlx::query(
            "SELECT case_id, state, disposition, handling_unit, coordinating_unit, version \
             FROM routes ORDER BY case_id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            out.push(format!(
                "route {} state {} disposition {} handling {} coordinating {} version {}",
                row.get::<String, _>(0),
                row.get::<i64, _>(1),
                row.get::<i64, _>(2),
                row.get::<String, _>(3),
                row.get::<String, _>(4),
                row.get::<i64, _>(5)
            ));
        }
        for row in sqlx::query(
            "SELECT case_id, unit_id, state, overdue FROM assignments ORDER BY case_id, id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            out.push(format!(
                "assignment {} unit {} state {} overdue {}",
                row.get::<String, _>(0),
                row.get::<String, _>(1),
                row.get::<i64, _>(2),
                row.get::<i64, _>(3)
            ));
        }
        let desk_order = match db.backend() {
            Backend::Postgres => "txid, seq",
            Backend::Sqlite => "seq",
        };
        for row in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT unit_id, kind, note, payload FROM desk_items ORDER BY {desk_order}"
        )))
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            let a = pb::Assignment::decode(row.get::<Vec<u8>, _>(3).as_slice()).unwrap();
            out.push(format!(
                "desk {} kind {} note {} case {} state {}",
                row.get::<String, _>(0),
                row.get::<i64, _>(1),
                row.get::<String, _>(2),
                a.case,
                a.state
            ));
        }
        let events = minqing_kit::testing::whole_feed(db).await;
        for e in events {
            if e.kind == pb::CaseRouted::full_name() {
                let r = pb::CaseRouted::decode(e.payload.as_slice()).unwrap();
                out.push(format!(
                    "event {} {} unit {} disposition {} state {}",
                    e.kind,
                    e.subject,
                    r.unit,
                    r.disposition,
                    r.route.map_or(0, |r| r.state)
                ));
            } else {
                out.push(format!("event {} {}", e.kind, e.subject));
            }
        }
        out
    }

    async fn a_batch_writes_what_one_by_one_writes(backend: Backend) {
        let (Some(one), Some(each)) = (
            TestDatabase::new(backend).await,
            TestDatabase::new(backend).await,
        ) else {
            return;
        };
        let clock = Clock::manual("2026-11-23T02:00:00Z".parse().unwrap());
        let now = clock.now_micros();
        let events = mixed(now);

        let (batch_db, batch) = dispatcher(&one, &clock).await;
        let mut tx = batch_db.begin().await.unwrap();
        batch.apply(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();

        let (single_db, single) = dispatcher(&each, &clock).await;
        for e in &events {
            let mut tx = single_db.begin().await.unwrap();
            single
                .apply(&mut tx, std::slice::from_ref(e))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }

        let (b, s) = (snapshot(&batch_db).await, snapshot(&single_db).await);
        assert_eq!(b, s);
        // The mix is what it claims to be: every disposition, the duplicate routed once, the
        // papers resumed, the withdrawal cancelled.
        let text = b.join("\n");
        for disposition in [
            tpb::Disposition::Committed,
            tpb::Disposition::Escalated,
            tpb::Disposition::Referred,
            tpb::Disposition::Emergency,
            tpb::Disposition::Supplement,
        ] {
            assert!(
                text.contains(&format!("disposition {}", disposition as i32)),
                "{disposition:?} in\n{text}"
            );
        }
        assert_eq!(
            b.iter()
                .filter(|l| l.starts_with("event minqing.routing.v1.CaseRouted cases/c01"))
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("event minqing.routing.v1.CaseResumed cases/c05"),
            "{text}"
        );
        assert!(
            text.contains("event minqing.routing.v1.RoutingCancelled cases/c08"),
            "{text}"
        );
        assert!(text.contains("route c09"), "{text}");
        batch_db.close().await;
        single_db.close().await;
    }

    backend_tests!(a_batch_writes_what_one_by_one_writes);
}
