//! Replies to residents: made when a case is resolved, referred, needs papers or is
//! escalated — one per answer, or one collective reply for a cluster of reports of the same
//! issue — rendered from a template and queued to every reporter it reaches. The delivery
//! worker (`delivery.rs`) sends them by each reporter's chosen way.

use serde::{Deserialize, Serialize};

use crate::{
    clock::{Clock, Place},
    error::Error,
    flow::{Pending, Step},
    store,
};
use minqing_kit::{db::Tx, time::Micros};
use minqing_proto::minqing::{intake::v1 as ipb, supervision::v1 as pb};

/// What a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// Resolved, with the result.
    Resolved,
    /// Referred to the competent body.
    Referred,
    /// Papers are missing.
    NeedsPapers,
    /// Reported up for approval.
    Escalated,
}

impl Trigger {
    /// The wire value.
    pub fn wire(self) -> i32 {
        match self {
            Trigger::Resolved => pb::ReplyTrigger::Resolved as i32,
            Trigger::Referred => pb::ReplyTrigger::Referred as i32,
            Trigger::NeedsPapers => pb::ReplyTrigger::NeedsPapers as i32,
            Trigger::Escalated => pb::ReplyTrigger::Escalated as i32,
        }
    }

    /// Its template's name.
    pub fn slug(self) -> &'static str {
        match self {
            Trigger::Resolved => "resolved",
            Trigger::Referred => "referred",
            Trigger::NeedsPapers => "needs_papers",
            Trigger::Escalated => "escalated",
        }
    }

    /// Whether a cluster gets one reply for all its reports (the outcome), rather
    /// than each case its own (a step of one resident's case).
    fn collective(self) -> bool {
        matches!(self, Trigger::Resolved | Trigger::Referred)
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Its id.
    pub id: String,
    /// The case it answers.
    pub case_id: String,
    /// The cluster answered collectively ("clusters/{id}"), or "".
    pub cluster: String,
    /// What it answers.
    pub trigger: Trigger,
    /// The rendered message.
    pub text: String,
    /// When made.
    pub create_time: Micros,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// To send.
    Queued,
    /// Delivered.
    Delivered,
    /// Every try failed.
    Failed,
    /// Waiting for an appointed visit.
    AwaitingVisit,
    /// Nobody to answer.
    Undeliverable,
}

impl DeliveryState {
    /// The wire (and stored) value.
    pub fn wire(self) -> i32 {
        match self {
            DeliveryState::Queued => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Failed => 3,
            DeliveryState::AwaitingVisit => 4,
            DeliveryState::Undeliverable => 5,
        }
    }

    /// From the stored value.
    pub fn from_wire(v: i64) -> Option<Self> {
        [
            DeliveryState::Queued,
            DeliveryState::Delivered,
            DeliveryState::Failed,
            DeliveryState::AwaitingVisit,
            DeliveryState::Undeliverable,
        ]
        .into_iter()
        .find(|s| i64::from(s.wire()) == v)
    }
}

/// A reply's way to one reporter.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its id.
    pub id: String,
    /// The reply.
    pub reply_id: String,
    /// The reporter's case.
    pub case_id: String,
    /// The contact method (0 until known).
    pub method: i32,
    /// Where it stands.
    pub state: DeliveryState,
    /// Tries made.
    pub attempts: i32,
    /// When to try next.
    pub next_attempt_time: Micros,
    /// Why the last try failed.
    pub last_error: String,
    /// When delivered (0 until then).
    pub delivered_time: Micros,
    /// The appointment carrying it ("" when none).
    pub appointment: String,
    /// Last change.
    pub update_time: Micros,
    /// Row version.
    pub version: i64,
}

/// An appointed visit.
#[derive(Debug, Clone)]
pub struct Appointment {
    /// Its id.
    pub id: String,
    /// The delivery it carries.
    pub delivery_id: String,
    /// The resident's case.
    pub case_id: String,
    /// The grid whose worker visits.
    pub grid: String,
    /// Its community.
    pub community: String,
    /// Whether recorded.
    pub done: bool,
    /// When set.
    pub create_time: Micros,
    /// When visited (0 until then).
    pub visit_time: Micros,
    /// Who recorded it.
    pub visited_by: String,
    /// What was said.
    pub outcome: String,
}

/// A reporter's contact, as intake took it.
#[derive(Debug, Clone)]
pub struct Contact {
    /// The case.
    pub case_id: String,
    /// Anonymous: nobody to answer.
    pub anonymous: bool,
    /// Chosen way (minqing.type.v1.ContactMethod).
    pub method: i32,
    /// Told by an appointed visit.
    pub needs_visit: bool,
    /// Name.
    pub name: String,
    /// Phone.
    pub phone: String,
    /// Postal address.
    pub postal_address: String,
    /// Online address.
    pub online_address: String,
    /// When a visit suits.
    pub visit_note: String,
    /// Who recorded the case (the principal of intake's token).
    pub recorded_by: String,
    /// Where the case is.
    pub place: Place,
}

/// Keeps what is needed to answer a newly submitted case's reporter.
pub async fn remember_case(tx: &mut Tx, case: &ipb::Case, now: Micros) -> Result<(), Error> {
    let Some(id) = case.name.strip_prefix("cases/") else {
        return Ok(());
    };
    let reporter = case.reporter.clone().unwrap_or_default();
    let contact = reporter.contact.unwrap_or_default();
    let place = case.place.clone().unwrap_or_default();
    let c = Contact {
        case_id: id.to_string(),
        anonymous: reporter.anonymous,
        method: contact.preferred_method,
        needs_visit: contact.needs_appointed_visit,
        name: contact.name,
        phone: contact.phone,
        postal_address: contact.postal_address,
        online_address: contact.online_address,
        visit_note: contact.visit_note,
        recorded_by: case.recorded_by.clone(),
        place: Place {
            district: place.district,
            street: place.street,
            community: place.community,
            grid: place.grid,
            building: place.building,
        },
    };
    store::replies::put_contact(tx, &c, now).await?;
    if !case.cluster.is_empty() {
        store::replies::set_cluster(tx, std::slice::from_ref(&case.name), &case.cluster).await?;
    }
    Ok(())
}

/// Records cluster membership.
pub async fn set_cluster(tx: &mut Tx, cases: &[String], cluster: &str) -> Result<(), Error> {
    store::replies::set_cluster(tx, cases, cluster).await?;
    Ok(())
}

/// Makes the reply a step of the case calls for, once, and queues it to every reporter it
/// reaches (the whole cluster for a collective answer).
pub(crate) async fn on_answer(
    s: &Step<'_>,
    tx: &mut Tx,
    out: &mut Pending,
    clock: &Clock,
    trigger: Trigger,
    detail: &str,
) -> Result<(), Error> {
    let cluster = store::replies::cluster_of(tx, &clock.case_id).await?;
    let collective = trigger.collective() && !cluster.is_empty();
    let dedupe = if collective {
        format!("{cluster}|{}", trigger.slug())
    } else if trigger.collective() {
        format!("cases/{}|{}", clock.case_id, trigger.slug())
    } else {
        // Papers or an escalation may be asked for more than once: one reply each time.
        format!(
            "cases/{}|{}|{}",
            clock.case_id,
            trigger.slug(),
            clock.generation
        )
    };
    let recipients = if collective {
        store::replies::members(tx, &cluster).await?
    } else {
        vec![clock.case_id.clone()]
    };
    let text = s.ctx.templates.render(
        trigger,
        &crate::templates::Fields {
            case: format!("cases/{}", clock.case_id),
            unit: clock.unit.clone(),
            detail: detail.to_string(),
            reports: recipients.len(),
        },
    );
    let reply = Reply {
        id: uuid::Uuid::now_v7().to_string(),
        case_id: clock.case_id.clone(),
        cluster: if collective { cluster } else { String::new() },
        trigger,
        text,
        create_time: s.now,
    };
    if !store::replies::insert_reply(tx, &reply, &dedupe).await? {
        return Ok(());
    }
    let mut deliveries = Vec::new();
    for case_id in recipients {
        let method = store::replies::contact(tx.conn(), &case_id)
            .await?
            .map_or(0, |c| c.method);
        let d = Delivery {
            id: uuid::Uuid::now_v7().to_string(),
            reply_id: reply.id.clone(),
            case_id,
            method,
            state: DeliveryState::Queued,
            attempts: 0,
            next_attempt_time: s.now,
            last_error: String::new(),
            delivered_time: 0,
            appointment: String::new(),
            update_time: s.now,
            version: 1,
        };
        store::replies::insert_delivery(tx, &d).await?;
        deliveries.push(d);
    }
    let e = pb::ReplyQueued {
        reply: Some(crate::grpc::convert::reply(&reply, &deliveries)),
    };
    crate::flow::event(out, s.meta, clock, &e, s.now);
    s.ctx.deliveries_ready.notify_one();
    Ok(())
}
