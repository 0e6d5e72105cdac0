//! Needs from cases: a consumer of routing's feed turns each case routed as suitable for
//! neighbours or volunteers (`minqing.routing.v1.CaseRouted` with `volunteer_suitable`) into a
//! need on its community's menu, once per case; a case whose routing is cancelled (withdrawn)
//! has its need cancelled. Exactly once: the consumer's cursor commits with the needs.

use std::sync::Arc;

use prost::{Message, Name};

use crate::{
    domain::{ClaimPolicy, Need, NeedSource, NeedSpec, NeedState, SkillRequirement, Urgency},
    grpc::{convert, validate},
    ops::{self, Ctx},
    store::{self, Inserted},
};
use minqing_kit::{
    db::Tx,
    error::FieldViolations,
    feed::Apply,
    time::{Micros, from_timestamp},
};
use minqing_proto::minqing::{
    events::v1 as events_pb, matching::v1 as pb, routing::v1 as routing_pb,
};

/// The consumer's name (its cursor and lease), and the actor of what it does.
pub const CONSUMER: &str = "matching-from-routing";
const ACTOR: &str = "system:matching-from-routing";

/// The event kinds it follows.
pub fn kinds() -> Vec<String> {
    vec![
        routing_pb::CaseRouted::full_name(),
        routing_pb::RoutingCancelled::full_name(),
    ]
}

/// Turns routing's events into needs.
#[derive(Debug, Clone)]
pub struct FromRouting {
    /// Matching's state.
    pub ctx: Arc<Ctx>,
}

impl Apply for FromRouting {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        for event in events {
            let Some(payload) = &event.payload else {
                continue;
            };
            let span = minqing_kit::feed::event_span(CONSUMER, event);
            let _entered = span.enter();
            let now = event
                .create_time
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or_else(|| self.ctx.clock.now_micros());
            if event.kind == routing_pb::CaseRouted::full_name() {
                let routed = routing_pb::CaseRouted::decode(payload.value.as_slice())?;
                drop(_entered);
                self.routed(tx, &routed, &event.id, now).await?;
            } else if event.kind == routing_pb::RoutingCancelled::full_name() {
                let cancelled = routing_pb::RoutingCancelled::decode(payload.value.as_slice())?;
                drop(_entered);
                let case = cancelled
                    .route
                    .as_ref()
                    .map(|r| r.case.clone())
                    .unwrap_or_default();
                self.cancelled(tx, &case, &cancelled.reason, now).await?;
            }
        }
        Ok(())
    }
}

impl FromRouting {
    /// The need a routed case becomes, or why it cannot be one.
    pub fn need_for(
        &self,
        routed: &routing_pb::CaseRouted,
        event_id: &str,
        now: Micros,
    ) -> Result<Need, String> {
        let cfg = &self.ctx.config;
        let facts = routed
            .route
            .as_ref()
            .and_then(|r| r.facts.clone())
            .unwrap_or_default();
        let case = if routed.case.is_empty() {
            facts.case.clone()
        } else {
            routed.case.clone()
        };
        if !case.starts_with("cases/") {
            return Err(format!("no case name in the event ({case:?})"));
        }
        let mut v = FieldViolations::new();
        let place = validate::place(&mut v, "place", &self.ctx.gazetteer, &facts.place);
        let location = validate::location(
            &mut v,
            "place.location",
            &facts.place.as_ref().and_then(|p| p.location),
        );
        let Some(place) = place else {
            return Err(format!(
                "the case's place does not resolve: {:?}",
                v.violations()
            ));
        };
        let category = if routed.category.is_empty() {
            facts.category.clone()
        } else {
            routed.category.clone()
        };
        let skills = cfg
            .category_skills
            .get(&category)
            .map(|s| {
                s.iter()
                    .map(|k| SkillRequirement {
                        skill: k.clone(),
                        credential_required: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let effort = cfg.case_need_effort_minutes;
        let default_end = now + i64::from(cfg.case_need_window_hours) * 3_600_000_000;
        // Due by the case's deadline, when that leaves room for the work.
        let end = routed
            .due_time
            .as_ref()
            .and_then(from_timestamp)
            .filter(|due| *due >= now + i64::from(effort) * 60_000_000 + 3_600_000_000)
            .unwrap_or(default_end)
            .min(now + 90 * 86_400_000_000);
        let title: String = if routed.title.is_empty() {
            facts.title.clone()
        } else {
            routed.title.clone()
        };
        let description: String = if routed.description.is_empty() {
            facts.description.clone()
        } else {
            routed.description.clone()
        };
        let title: String = title.trim().chars().take(200).collect();
        let state = if cfg.publish_case_needs {
            NeedState::Open
        } else {
            NeedState::Draft
        };
        Ok(Need {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: case.clone(),
            source: NeedSource::Case,
            case: Some(case),
            spec: NeedSpec {
                title: if title.is_empty() {
                    "Help requested by a resident".into()
                } else {
                    title
                },
                description: description.trim().chars().take(4_000).collect(),
                address: facts
                    .place
                    .as_ref()
                    .map(|p| p.address.chars().take(500).collect())
                    .unwrap_or_default(),
                place,
                location,
                category,
                skills,
                languages: vec![],
                start: now,
                end,
                effort_minutes: effort,
                people_needed: 1,
                claim_policy: ClaimPolicy::FirstCome,
                open_to: vec![],
                party_members_only: false,
                urgency: Urgency::from_wire(facts.urgency).unwrap_or(Urgency::Normal),
            },
            state,
            menu: None,
            people_accepted: 0,
            people_pending: 0,
            people_done: 0,
            posted_by: ACTOR.into(),
            create_time: now,
            update_time: now,
            publish_time: (state == NeedState::Open).then_some(now),
            cancel_reason: String::new(),
            version: 1,
        })
        .map(|mut n: Need| {
            // The source event's id is kept on the NeedPosted event, not in the need.
            let _ = event_id;
            n.spec.title = n.spec.title.trim().to_string();
            n
        })
    }

    async fn routed(
        &self,
        tx: &mut Tx,
        routed: &routing_pb::CaseRouted,
        event_id: &str,
        now: Micros,
    ) -> anyhow::Result<()> {
        if !routed.volunteer_suitable {
            return Ok(());
        }
        let need = match self.need_for(routed, event_id, now) {
            Ok(n) => n,
            Err(why) => {
                // A case matching cannot place stays with its handling unit; it must not stop
                // the feed.
                tracing::warn!(event = %event_id, "routed case not made a need: {why}");
                return Ok(());
            }
        };
        // One need per case: re-routings of the same case (rejections, transfers) find it.
        match store::needs::insert(tx, &need, "").await? {
            Inserted::New => {
                let event = pb::NeedPosted {
                    need: Some(convert::need(&need)),
                    source_event: event_id.to_string(),
                };
                ops::emit(tx, ACTOR, &need.name(), &event, now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tracing::info!(need = %need.id, case = ?need.case, "need made from a routed case");
            }
            Inserted::Existing { .. } => {}
        }
        Ok(())
    }

    async fn cancelled(
        &self,
        tx: &mut Tx,
        case: &str,
        reason: &str,
        now: Micros,
    ) -> anyhow::Result<()> {
        let f = store::needs::Filter {
            case: Some(case.to_string()),
            ..Default::default()
        };
        for mut need in store::needs::list(tx.conn(), &f, 10).await? {
            if matches!(need.state, NeedState::Done | NeedState::Cancelled) {
                continue;
            }
            let reason = format!("the case's routing was cancelled: {reason}");
            // The volunteers whose offers end here are reloaded by the pool, which follows
            // matching's own feed, once this commits.
            ops::cancel_need(tx, &mut need, &reason, "the case was withdrawn", ACTOR, now)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }
}
