//! The delivery worker: sends queued replies by each reporter's chosen way, with retries and
//! backoff; hands replies for residents who need an appointed visit to their grid worker
//! (delivered when the visit is recorded); marks anonymous reports undeliverable.
//!
//! A send happens outside any transaction (an outlet is a network call); its outcome is then
//! written with the delivery's version check and its event. A crash between the two sends the
//! message again on restart: delivery is at least once, and the delivery id travels with the
//! message as an idempotency key so receivers can drop the repeat.

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
    feed::{self, EventMeta},
    time::Micros,
};
use minqing_proto::minqing::supervision::v1 as pb;

const ACTOR: &str = "system:supervision-replies";
const BATCH: i64 = 64;

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
        let mut acted = 0;
        for d in due {
            match attempt(&ctx, d).await {
                Ok(true) => acted += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "a reply could not be recorded; it is tried again")
                }
            }
        }
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

/// The wait before try `attempts + 1`: the base doubled each time, at most an hour.
pub fn backoff(base_seconds: u64, attempts: i32) -> Micros {
    let factor = 1_u64 << attempts.clamp(0, 16);
    let seconds = base_seconds.saturating_mul(factor).min(3_600);
    i64::try_from(seconds).unwrap_or(3_600) * 1_000_000
}

/// Tries one delivery. False when it must wait: the case's submission (the reporter's contact)
/// has not come through intake's feed yet — routing's feed can run ahead of intake's. That is
/// no failed attempt and takes no back-off: the delivery stays due and is looked at again on
/// the next tick, so it goes out as soon as the contact arrives.
async fn attempt(ctx: &Ctx, d: Delivery) -> Result<bool, Error> {
    let contact = store::replies::contact(ctx.db.pool(), &d.case_id).await?;
    let reply = store::replies::reply(ctx.db.pool(), &d.reply_id).await?;
    let (Some(contact), Some(reply)) = (contact, reply) else {
        return Ok(false);
    };
    deliver(ctx, d, contact, reply).await.map(|()| true)
}

async fn deliver(
    ctx: &Ctx,
    mut d: Delivery,
    contact: crate::replies::Contact,
    reply: crate::replies::Reply,
) -> Result<(), Error> {
    d.method = contact.method;
    if contact.anonymous {
        return finish(
            ctx,
            d,
            DeliveryState::Undeliverable,
            "an anonymous report".into(),
        )
        .await;
    }
    if contact.needs_visit {
        return appoint(ctx, d, &contact, &reply.text).await;
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
    match ctx.outlets.for_method(contact.method).send(&message).await {
        Ok(()) => finish(ctx, d, DeliveryState::Delivered, String::new()).await,
        Err(e) => retry(ctx, d, e).await,
    }
}

async fn retry(ctx: &Ctx, mut d: Delivery, why: String) -> Result<(), Error> {
    let now = ctx.clock.now_micros();
    if d.attempts >= i32::try_from(ctx.config.reply_max_attempts).unwrap_or(6) {
        return finish(ctx, d, DeliveryState::Failed, why).await;
    }
    if d.attempts == 0 {
        d.attempts = 1;
    }
    d.next_attempt_time = now + backoff(ctx.config.reply_retry_seconds, d.attempts - 1);
    d.last_error = why;
    d.update_time = now;
    let mut tx = ctx.db.begin().await?;
    if store::replies::update_delivery(&mut tx, &d).await? {
        tx.commit().await?;
    }
    Ok(())
}

async fn finish(
    ctx: &Ctx,
    mut d: Delivery,
    state: DeliveryState,
    why: String,
) -> Result<(), Error> {
    let now = ctx.clock.now_micros();
    d.state = state;
    d.update_time = now;
    if state == DeliveryState::Delivered {
        d.delivered_time = now;
    } else {
        d.last_error = why.clone();
    }
    let mut tx = ctx.db.begin().await?;
    if !store::replies::update_delivery(&mut tx, &d).await? {
        return Ok(());
    }
    let meta = EventMeta::current(ACTOR);
    let subject = format!("cases/{}", d.case_id);
    if state == DeliveryState::Delivered {
        let e = pb::ReplyDelivered {
            reply: format!("replies/{}", d.reply_id),
            case: subject.clone(),
            method: d.method,
            attempts: d.attempts,
        };
        feed::append(&mut tx, &meta, &subject, &e, now).await?;
    } else {
        let e = pb::ReplyFailed {
            reply: format!("replies/{}", d.reply_id),
            case: subject.clone(),
            state: state.wire(),
            reason: why,
        };
        feed::append(&mut tx, &meta, &subject, &e, now).await?;
    }
    tx.commit().await?;
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
