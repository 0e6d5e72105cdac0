//! The delivery worker: sends queued replies by each reporter's chosen way, with retries and
//! backoff; hands replies for residents who need an appointed visit to their grid worker
//! (delivered when the visit is recorded); marks anonymous reports undeliverable.
//!
//! A send happens outside any transaction (an outlet is a network call); the outcomes of a
//! sweep (up to 64 due deliveries) are then written together, each with the delivery's
//! version check and its event, in one transaction. A crash between the sends and that commit
//! sends the sweep's messages again on restart: delivery is at least once, and the delivery id
//! travels with each message as an idempotency key so receivers can drop the repeat.

use std::{sync::Arc, time::Duration};

use prost::Name;
use tokio_util::sync::CancellationToken;

use crate::{
    app::Ctx,
    error::Error,
    outlets::{Outgoing, method_slug},
    replies::{Appointment, Delivery, DeliveryState},
    store,
};
use minqing_kit::{
    db::Tx,
    feed::{self, EventMeta, EventRow},
    time::Micros,
};
use minqing_proto::minqing::supervision::v1 as pb;

const ACTOR: &str = "system:supervision-replies";
const BATCH: i64 = 64;

/// What one try of a due delivery came to. The outcomes of a sweep are written together,
/// in one transaction: one commit (and one wake-up of the feed's readers) per sweep rather
/// than per message.
enum Outcome {
    /// Written already (an appointed visit, with its appointment).
    Written,
    /// Sent or not, the delivery as it now stands, to be written with its event if it
    /// reached a final state (`why` explains a failure).
    Write(Delivery, String),
}

/// Runs until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let tick = Duration::from_millis(ctx.config.timer_tick_ms);
    loop {
        let now = ctx.clock.now_micros();
        let due = match store::replies::due_deliveries(ctx.db.pool(), now, BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading queued replies failed");
                Vec::new()
            }
        };
        let full = due.len() as i64 == BATCH;
        let acted = match sweep(&ctx, due).await {
            Ok(acted) => acted,
            Err(e) => {
                tracing::warn!(error = %e, "replies could not be recorded; they are tried again");
                0
            }
        };
        if full && acted > 0 {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {},
            () = ctx.deliveries_ready.notified() => {},
            () = shutdown.cancelled() => return,
        }
    }
}

/// Tries each of `due` and writes what became of them in one transaction; how many were
/// acted on. The reporters' contacts and the replies are read for the whole sweep at once. A
/// crash before the commit sends the sweep's messages again on restart (at least once, as
/// the module says).
async fn sweep(ctx: &Ctx, due: Vec<Delivery>) -> Result<usize, Error> {
    if due.is_empty() {
        return Ok(0);
    }
    let ids = |f: fn(&Delivery) -> &String| -> Vec<String> {
        let set: std::collections::BTreeSet<&String> = due.iter().map(f).collect();
        set.into_iter().cloned().collect()
    };
    let contacts = store::replies::contacts(ctx.db.pool(), &ids(|d| &d.case_id)).await?;
    let replies = store::replies::replies_by_id(ctx.db.pool(), &ids(|d| &d.reply_id)).await?;
    let mut acted = 0;
    let mut writes = Vec::new();
    for d in due {
        // The reporter's contact has not come through intake's feed yet (routing's feed can
        // run ahead of intake's): no failed attempt and no back-off; the delivery stays due
        // and goes out on a later tick, as soon as the contact arrives.
        let (Some(contact), Some(reply)) = (contacts.get(&d.case_id), replies.get(&d.reply_id))
        else {
            continue;
        };
        match deliver(ctx, d, contact, reply).await {
            Ok(Outcome::Written) => acted += 1,
            Ok(Outcome::Write(d, why)) => {
                acted += 1;
                writes.push((d, why));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a reply could not be recorded; it is tried again")
            }
        }
    }
    if writes.is_empty() {
        return Ok(acted);
    }
    let mut tx = ctx.db.begin().await?;
    record(&mut tx, writes).await?;
    tx.commit().await?;
    Ok(acted)
}

/// The wait before try `attempts + 1`: the base doubled each time, at most an hour.
pub fn backoff(base_seconds: u64, attempts: i32) -> Micros {
    let factor = 1_u64 << attempts.clamp(0, 16);
    let seconds = base_seconds.saturating_mul(factor).min(3_600);
    i64::try_from(seconds).unwrap_or(3_600) * 1_000_000
}

async fn deliver(
    ctx: &Ctx,
    mut d: Delivery,
    contact: &crate::replies::Contact,
    reply: &crate::replies::Reply,
) -> Result<Outcome, Error> {
    d.method = contact.method;
    if contact.anonymous {
        let why = "an anonymous report".to_string();
        return Ok(finish(ctx, d, DeliveryState::Undeliverable, why));
    }
    if contact.needs_visit {
        appoint(ctx, d, contact, &reply.text).await?;
        return Ok(Outcome::Written);
    }
    let address = match method_slug(contact.method) {
        "phone" => contact.phone.clone(),
        "letter" => contact.postal_address.clone(),
        "online" => contact.online_address.clone(),
        _ => String::new(),
    };
    let message = Outgoing {
        delivery: d.id.clone(),
        reply: format!("replies/{}", d.reply_id),
        case: format!("cases/{}", d.case_id),
        method: method_slug(contact.method).to_string(),
        name: contact.name.clone(),
        address,
        text: reply.text.clone(),
    };
    d.attempts += 1;
    Ok(
        match ctx.outlets.for_method(contact.method).send(&message).await {
            Ok(()) => finish(ctx, d, DeliveryState::Delivered, String::new()),
            Err(e) => retry(ctx, d, e),
        },
    )
}

/// A failed send: due again after the back-off, or failed for good after the last try.
fn retry(ctx: &Ctx, mut d: Delivery, why: String) -> Outcome {
    let now = ctx.clock.now_micros();
    if d.attempts >= i32::try_from(ctx.config.reply_max_attempts).unwrap_or(6) {
        return finish(ctx, d, DeliveryState::Failed, why);
    }
    if d.attempts == 0 {
        d.attempts = 1;
    }
    d.next_attempt_time = now + backoff(ctx.config.reply_retry_seconds, d.attempts - 1);
    d.last_error = why;
    d.update_time = now;
    Outcome::Write(d, String::new())
}

/// A delivery in its final `state`.
fn finish(ctx: &Ctx, mut d: Delivery, state: DeliveryState, why: String) -> Outcome {
    let now = ctx.clock.now_micros();
    d.state = state;
    d.update_time = now;
    if state == DeliveryState::Delivered {
        d.delivered_time = now;
    } else {
        d.last_error = why.clone();
    }
    Outcome::Write(d, why)
}

/// Writes a sweep's deliveries, each with its version check and, in a final state, its
/// event. One changed meanwhile is left as it is (it is not written, and has no event).
async fn record(tx: &mut Tx, writes: Vec<(Delivery, String)>) -> Result<(), Error> {
    let deliveries: Vec<Delivery> = writes.iter().map(|(d, _)| d.clone()).collect();
    let written = store::replies::update_deliveries(tx, &deliveries).await?;
    let meta = EventMeta::current(ACTOR);
    let mut rows = Vec::new();
    for (d, why) in writes {
        if !written.contains(&d.id) {
            continue;
        }
        let now = d.update_time;
        let subject = format!("cases/{}", d.case_id);
        match d.state {
            DeliveryState::Delivered => {
                let e = pb::ReplyDelivered {
                    reply: format!("replies/{}", d.reply_id),
                    case: subject.clone(),
                    method: d.method,
                    attempts: d.attempts,
                };
                rows.push(EventRow::new(&meta, &subject, &e, now));
            }
            DeliveryState::Failed | DeliveryState::Undeliverable => {
                let e = pb::ReplyFailed {
                    reply: format!("replies/{}", d.reply_id),
                    case: subject.clone(),
                    state: d.state.wire(),
                    reason: why,
                };
                rows.push(EventRow::new(&meta, &subject, &e, now));
            }
            DeliveryState::Queued | DeliveryState::AwaitingVisit => {}
        }
    }
    feed::append_rows(tx, rows).await?;
    Ok(())
}

async fn appoint(
    ctx: &Ctx,
    mut d: Delivery,
    contact: &crate::replies::Contact,
    text: &str,
) -> Result<(), Error> {
    let now = ctx.clock.now_micros();
    let a = Appointment {
        id: uuid::Uuid::now_v7().to_string(),
        delivery_id: d.id.clone(),
        case_id: d.case_id.clone(),
        grid: contact.place.grid.clone(),
        community: contact.place.community.clone(),
        done: false,
        create_time: now,
        visit_time: 0,
        visited_by: String::new(),
        outcome: String::new(),
    };
    d.state = DeliveryState::AwaitingVisit;
    d.appointment = a.id.clone();
    d.update_time = now;
    let mut tx = ctx.db.begin().await?;
    if !store::replies::update_delivery(&mut tx, &d).await? {
        return Ok(());
    }
    store::replies::insert_appointment(&mut tx, &a).await?;
    let e = pb::AppointmentCreated {
        appointment: Some(crate::grpc::convert::appointment(&a, &d.reply_id, text)),
    };
    let meta = EventMeta::current(ACTOR);
    feed::append(&mut tx, &meta, &format!("cases/{}", d.case_id), &e, now).await?;
    tx.commit().await?;
    tracing::debug!(kind = %pb::AppointmentCreated::full_name(), case = %d.case_id, "appointed visit set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(30, 0), 30_000_000);
        assert_eq!(backoff(30, 1), 60_000_000);
        assert_eq!(backoff(30, 3), 240_000_000);
        assert_eq!(backoff(30, 20), 3_600_000_000);
    }
}
