//! Replies to residents: made when a case is resolved, referred, needs papers or is
//! escalated — one per answer, or one collective reply for a cluster of reports of the same
//! issue — rendered from a template and queued to every reporter it reaches. The delivery
//! worker (`delivery.rs`) sends them by each reporter's chosen way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use prost::{Message, Name};
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

/// What a batch of events reads and writes about replies: reporters' contacts, cluster
/// membership, replies and their deliveries. Cluster membership is read for the whole batch
/// up front ([`Replies::prefetch`]) and, for anything not foreseen, one at a time when first
/// needed; writes are kept, in order, to be made with a few multi-row statements at the
/// batch's end ([`Replies::flush`]). Everything reads as if each event's writes had been made
/// at once: a contact or a cluster change of an earlier event of the batch counts for a later
/// one. Contact methods are read at the end, once it is known which reporters a reply
/// reaches: only those the batch queues a delivery to, not every member of a cluster.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    /// Clusters stored, by case ("" none).
    stored_cluster: HashMap<String, String>,
    /// Members stored, by cluster.
    stored_members: HashMap<String, BTreeSet<String>>,
    /// Collective replies made by earlier batches, by dedupe key (looked up for the batch's
    /// answers that may go to a whole cluster).
    made_before: HashMap<String, String>,
    /// For each of those replies: the stored members of its cluster it has not reached.
    unreached: HashMap<String, BTreeSet<String>>,
    /// `(reply, case)` pairs checked for a delivery, for cases this batch moved into a cluster
    /// answered before: whether the reply reached them (a report that left and came back).
    joiner_reached: HashMap<(String, String), bool>,
    /// Contacts kept by this batch, the first of each case, in order.
    contacts: Vec<(Contact, Micros)>,
    /// Cases whose contact this batch keeps.
    new_contacts: HashSet<String>,
    /// Clusters set by this batch, by case (the last set).
    clusters: BTreeMap<String, String>,
    /// Replies made by this batch, in order.
    replies: Vec<NewReply>,
    /// Their dedupe keys.
    dedupes: HashSet<String>,
}

#[derive(Debug)]
struct NewReply {
    reply: Reply,
    dedupe: String,
    /// The reports it reaches (cases), in case order: for a collective reply made by an
    /// earlier batch, only those that reply has not reached ([`Replies::made_before`]).
    recipients: Vec<String>,
    /// Whether `recipients` leaves out those an earlier batch's reply reached already.
    unreached_only: bool,
    /// Its `ReplyQueued` event's place among the batch's events.
    event: usize,
}

impl Replies {
    /// Reads, in a few statements for all, what the batch's answers that may go to a whole
    /// cluster need (`answers`: case and trigger): the cases' clusters; the replies earlier
    /// batches made to those clusters for those triggers; and the members of each cluster whose
    /// reply is still to be made. A reply made before is extended only to the members it has
    /// not reached, read when first needed ([`Replies::unreached_members`]), so a large
    /// cluster is not read whole for every report that joins it.
    pub(crate) async fn prefetch(
        &mut self,
        tx: &mut Tx,
        answers: &[(String, Trigger)],
    ) -> Result<(), Error> {
        let ids: Vec<String> = answers
            .iter()
            .map(|(c, _)| c)
            .filter(|c| !self.stored_cluster.contains_key(*c))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !ids.is_empty() {
            let found: HashMap<String, String> = store::replies::clusters_of(tx, &ids)
                .await?
                .into_iter()
                .collect();
            for id in ids {
                let cluster = found.get(&id).cloned().unwrap_or_default();
                self.stored_cluster.insert(id, cluster);
            }
        }
        let wanted: Vec<(String, String)> = answers
            .iter()
            .filter_map(|(case, trigger)| {
                let cluster = self.stored_cluster.get(case)?;
                (!cluster.is_empty())
                    .then(|| (cluster.clone(), format!("{cluster}|{}", trigger.slug())))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let keys: Vec<String> = wanted
            .iter()
            .map(|(_, key)| key.clone())
            .filter(|key| !self.made_before.contains_key(key))
            .collect();
        if !keys.is_empty() {
            self.made_before
                .extend(store::replies::used_dedupes(tx, &keys).await?);
        }
        let clusters: Vec<String> = wanted
            .iter()
            .filter(|(cluster, key)| {
                !self.made_before.contains_key(key) && !self.stored_members.contains_key(cluster)
            })
            .map(|(cluster, _)| cluster.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !clusters.is_empty() {
            let mut members: HashMap<String, BTreeSet<String>> = HashMap::new();
            for (case, cluster) in store::replies::members_of(tx, &clusters).await? {
                members.entry(cluster).or_default().insert(case);
            }
            for cluster in clusters {
                let m = members.remove(&cluster).unwrap_or_default();
                self.stored_members.insert(cluster, m);
            }
        }
        Ok(())
    }

    /// The cluster of a case ("" when none).
    async fn cluster_of(&mut self, tx: &mut Tx, case_id: &str) -> Result<String, Error> {
        if let Some(c) = self.clusters.get(case_id) {
            return Ok(c.clone());
        }
        if !self.stored_cluster.contains_key(case_id) {
            let c = store::replies::cluster_of(tx, case_id).await?;
            self.stored_cluster.insert(case_id.to_string(), c);
        }
        Ok(self
            .stored_cluster
            .get(case_id)
            .cloned()
            .unwrap_or_default())
    }

    /// The members of `cluster` that `reply_id`, made by an earlier batch, has not reached,
    /// in case order: stored members it has no delivery to (unless this batch moved them
    /// out), and the cases this batch moved in, unless it reached them before.
    async fn unreached_members(
        &mut self,
        tx: &mut Tx,
        cluster: &str,
        reply_id: &str,
    ) -> Result<Vec<String>, Error> {
        if !self.unreached.contains_key(reply_id) {
            let m = store::replies::unreached(tx, cluster, reply_id).await?;
            self.unreached
                .insert(reply_id.to_string(), m.into_iter().collect());
        }
        let stored = self.unreached.get(reply_id).cloned().unwrap_or_default();
        let joiners: Vec<String> = self
            .clusters
            .iter()
            .filter(|(case, c)| c.as_str() == cluster && !stored.contains(*case))
            .map(|(case, _)| case.clone())
            .collect();
        let unchecked: Vec<String> = joiners
            .iter()
            .filter(|case| {
                !self
                    .joiner_reached
                    .contains_key(&(reply_id.to_string(), (*case).clone()))
            })
            .cloned()
            .collect();
        if !unchecked.is_empty() {
            let reached = store::replies::reached_among(tx, reply_id, &unchecked).await?;
            for case in unchecked {
                let was = reached.contains(&case);
                self.joiner_reached
                    .insert((reply_id.to_string(), case), was);
            }
        }
        let mut out: BTreeSet<String> = stored
            .into_iter()
            .filter(|case| self.clusters.get(case).is_none_or(|c| c == cluster))
            .collect();
        out.extend(joiners.into_iter().filter(|case| {
            self.joiner_reached
                .get(&(reply_id.to_string(), case.clone()))
                .is_some_and(|reached| !reached)
        }));
        Ok(out.into_iter().collect())
    }

    /// The cases of a cluster, in case order.
    async fn members(&mut self, tx: &mut Tx, cluster: &str) -> Result<Vec<String>, Error> {
        if !self.stored_members.contains_key(cluster) {
            let m = store::replies::members(tx, cluster).await?;
            self.stored_members
                .insert(cluster.to_string(), m.into_iter().collect());
        }
        let mut out: BTreeSet<String> = self
            .stored_members
            .get(cluster)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|case| self.clusters.get(case).is_none_or(|c| c == cluster))
            .collect();
        out.extend(
            self.clusters
                .iter()
                .filter(|(_, c)| c.as_str() == cluster)
                .map(|(case, _)| case.clone()),
        );
        Ok(out.into_iter().collect())
    }

    /// Keeps what is needed to answer a newly submitted case's reporter.
    pub(crate) fn remember_case(&mut self, case: &ipb::Case, now: Micros) {
        let Some(id) = case.name.strip_prefix("cases/") else {
            return;
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
        // Only the first contact of a case is kept (the store's insert does nothing after).
        if self.new_contacts.insert(id.to_string()) {
            self.contacts.push((c, now));
        }
        if !case.cluster.is_empty() {
            self.set_cluster(std::slice::from_ref(&case.name), &case.cluster);
        }
    }

    /// Records cluster membership ("" takes the cases out); `cases` are names ("cases/{id}").
    pub(crate) fn set_cluster(&mut self, cases: &[String], cluster: &str) {
        for id in cases.iter().filter_map(|c| c.strip_prefix("cases/")) {
            self.clusters.insert(id.to_string(), cluster.to_string());
        }
    }

    /// Makes the batch's writes: contacts, cluster membership, and the replies whose dedupe
    /// key no earlier reply used, with their deliveries. A reply made already (by an earlier
    /// batch, or earlier in this one) is not made again: its `ReplyQueued` event is taken out
    /// of `out` — or, for a collective reply whose cluster now has reports the first has not
    /// reached (they joined since it was made), becomes a `ReplyExtended` queuing the first
    /// reply to them. True when anything was queued.
    pub(crate) async fn flush(self, tx: &mut Tx, out: &mut Pending) -> Result<bool, Error> {
        store::replies::put_contacts(tx, &self.contacts).await?;
        let clusters: Vec<(String, String)> = self.clusters.into_iter().collect();
        store::replies::set_clusters(tx, &clusters).await?;
        if self.replies.is_empty() {
            return Ok(false);
        }
        let keys: Vec<String> = self.replies.iter().map(|r| r.dedupe.clone()).collect();
        // The reply made for each dedupe key: by earlier batches, then by this one.
        let mut made = store::replies::used_dedupes(tx, &keys).await?;
        let earlier: Vec<String> = self
            .replies
            .iter()
            .filter(|r| !r.reply.cluster.is_empty() && !r.unreached_only)
            .filter_map(|r| made.get(&r.dedupe).cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut reached = store::replies::reached(tx, &earlier).await?;
        // Who each reply reaches: every recipient of a new one; for one made already, only
        // the reports it has not reached (a collective reply, to whoever joined since).
        let mut drop: HashSet<usize> = HashSet::new();
        let mut plans: Vec<(NewReply, Option<String>, Vec<String>)> = Vec::new();
        for mut r in self.replies {
            let Some(id) = made.get(&r.dedupe).cloned() else {
                made.insert(r.dedupe.clone(), r.reply.id.clone());
                for case in &r.recipients {
                    reached.insert((r.reply.id.clone(), case.clone()));
                }
                let to = std::mem::take(&mut r.recipients);
                plans.push((r, None, to));
                continue;
            };
            let joined: Vec<String> = if r.reply.cluster.is_empty() {
                Vec::new()
            } else {
                std::mem::take(&mut r.recipients)
                    .into_iter()
                    .filter(|case| reached.insert((id.clone(), case.clone())))
                    .collect()
            };
            if joined.is_empty() {
                drop.insert(r.event);
            } else {
                plans.push((r, Some(id), joined));
            }
        }
        // The contacts are written above, so the store answers for this batch's too (the
        // first contact of a case is the one kept).
        let wanted: Vec<String> = plans
            .iter()
            .flat_map(|(_, _, to)| to.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let methods = store::replies::contact_methods(tx, &wanted).await?;
        let mut new: Vec<(Reply, String)> = Vec::new();
        let mut deliveries: Vec<Delivery> = Vec::new();
        for (r, made_before, to) in plans {
            let reply_id = made_before.as_deref().unwrap_or(&r.reply.id);
            let made_now: Vec<Delivery> = to
                .iter()
                .map(|case| {
                    let method = methods.get(case).copied().unwrap_or(0);
                    queued(reply_id, case, method, r.reply.create_time)
                })
                .collect();
            let row = &mut out.rows[r.event];
            let reply = crate::grpc::convert::reply(&r.reply, &made_now);
            if made_before.is_some() {
                row.kind = pb::ReplyExtended::full_name();
                row.payload = pb::ReplyExtended {
                    reply: format!("replies/{reply_id}"),
                    case: format!("cases/{}", r.reply.case_id),
                    deliveries: reply.deliveries,
                }
                .encode_to_vec();
            } else {
                row.payload = pb::ReplyQueued { reply: Some(reply) }.encode_to_vec();
                new.push((r.reply, r.dedupe));
            }
            deliveries.extend(made_now);
        }
        if !drop.is_empty() {
            let mut i = 0;
            out.rows.retain(|_| {
                let keep = !drop.contains(&i);
                i += 1;
                keep
            });
        }
        if !new.is_empty() {
            let rows: Vec<(&Reply, &str)> = new.iter().map(|(r, k)| (r, k.as_str())).collect();
            if store::replies::insert_replies(tx, &rows).await? != rows.len() as u64 {
                // Another transaction answered the same step meanwhile: the batch again.
                return Err(Error::Conflict);
            }
        }
        store::replies::insert_deliveries(tx, &deliveries).await?;
        Ok(!deliveries.is_empty())
    }
}

/// Makes the reply a step of the case calls for, once, and queues it to every reporter it
/// reaches (the whole cluster for a collective answer).
pub(crate) async fn on_answer(
    s: &Step<'_>,
    tx: &mut Tx,
    b: &mut Replies,
    out: &mut Pending,
    clock: &Clock,
    trigger: Trigger,
    detail: &str,
) -> Result<(), Error> {
    // Only an answer to the issue (resolved, referred) goes to the whole cluster.
    let cluster = if trigger.collective() {
        b.cluster_of(tx, &clock.case_id).await?
    } else {
        String::new()
    };
    let collective = !cluster.is_empty();
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
    // Made already in this batch (or, found at its end, by an earlier one): once only. A
    // collective reply is made again all the same, to reach whoever joined the cluster since
    // it was made ([`Replies::flush`] queues the first reply to them instead).
    if b.dedupes.contains(&dedupe) && !collective {
        return Ok(());
    }
    let made_before = if collective {
        b.made_before.get(&dedupe).cloned()
    } else {
        None
    };
    let recipients = match (&made_before, collective) {
        (Some(id), _) => b.unreached_members(tx, &cluster, id).await?,
        (None, true) => b.members(tx, &cluster).await?,
        (None, false) => vec![clock.case_id.clone()],
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
    // The event is written out at the batch's end ([`Replies::flush`]), with the deliveries
    // then known.
    let e = pb::ReplyQueued {
        reply: Some(crate::grpc::convert::reply(&reply, &[])),
    };
    let event = out.rows.len();
    crate::flow::event(out, s.meta, clock, &e, s.now);
    b.dedupes.insert(dedupe.clone());
    b.replies.push(NewReply {
        reply,
        dedupe,
        recipients,
        unreached_only: made_before.is_some(),
        event,
    });
    Ok(())
}

/// A new delivery of a reply to a report, due at once.
fn queued(reply_id: &str, case_id: &str, method: i32, now: Micros) -> Delivery {
    Delivery {
        id: uuid::Uuid::now_v7().to_string(),
        reply_id: reply_id.to_string(),
        case_id: case_id.to_string(),
        method,
        state: DeliveryState::Queued,
        attempts: 0,
        next_attempt_time: now,
        last_error: String::new(),
        delivered_time: 0,
        appointment: String::new(),
        update_time: now,
        version: 1,
    }
}
