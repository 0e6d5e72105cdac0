//! `Calendars`: read, edit and count on a city's working-day calendar.

use std::collections::BTreeSet;

use tonic::Request;

use super::{CALENDAR_EDITORS, convert, validate};
use crate::{
    app::{Ctx, calendar_name},
    calendar::{DayKind, Span, Special, check_spans, parse_hhmm},
    error::Error,
    store::{self, calendars::Stored},
};
use minqing_kit::{
    auth::caller,
    error::FieldViolations,
    feed::{self, EventMeta},
    time::to_timestamp,
};
use minqing_proto::minqing::supervision::v1 as pb;

fn found(ctx: &Ctx, city: &str) -> Result<std::sync::Arc<Stored>, Error> {
    ctx.calendars
        .get(city)
        .ok_or_else(|| Error::NotFound("calendar", calendar_name(city)))
}

/// `GetCalendar`.
pub async fn get(ctx: &Ctx, r: Request<pb::GetCalendarRequest>) -> Result<pb::Calendar, Error> {
    caller(&r)?;
    let mut v = FieldViolations::new();
    let city = validate::calendar_name(&mut v, "name", &r.get_ref().name);
    let (Some(city), true) = (city, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let stored = found(ctx, &city)?;
    Ok(convert::calendar(&stored))
}

/// `ListCalendars`.
pub async fn list(
    ctx: &Ctx,
    r: Request<pb::ListCalendarsRequest>,
) -> Result<pb::ListCalendarsResponse, Error> {
    caller(&r)?;
    Ok(pb::ListCalendarsResponse {
        calendars: ctx
            .calendars
            .all()
            .iter()
            .map(|s| convert::calendar(s))
            .collect(),
    })
}

/// Working spans from the wire.
fn spans(v: &mut FieldViolations, field: &str, list: &[pb::WorkingSpan]) -> Vec<Span> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let start = parse_hhmm(&s.start);
        let end = parse_hhmm(&s.end);
        v.check(
            start.is_none(),
            format!("{field}[{i}].start"),
            "must be \"HH:MM\"",
        );
        v.check(
            end.is_none(),
            format!("{field}[{i}].end"),
            "must be \"HH:MM\"",
        );
        if let (Some(start), Some(end)) = (start, end) {
            out.push(Span { start, end });
        }
    }
    if out.len() == list.len()
        && let Err(e) = check_spans(&out)
    {
        v.add(field, e);
    }
    out
}

/// `UpdateCalendar`.
pub async fn update(
    ctx: &Ctx,
    r: Request<pb::UpdateCalendarRequest>,
) -> Result<pb::Calendar, Error> {
    let principal = caller(&r)?.require(CALENDAR_EDITORS)?.clone();
    let req = r.into_inner();
    let mut v = FieldViolations::new();
    let city = validate::calendar_name(&mut v, "name", &req.name);
    let hours =
        (!req.working_hours.is_empty()).then(|| spans(&mut v, "working_hours", &req.working_hours));
    v.check(
        req.upsert_days.len() > 400,
        "upsert_days",
        "at most 400 days",
    );
    v.check(
        req.remove_dates.len() > 400,
        "remove_dates",
        "at most 400 dates",
    );
    let mut seen = BTreeSet::new();
    let mut upsert = Vec::new();
    for (i, d) in req.upsert_days.iter().enumerate() {
        let date = validate::date(&mut v, &format!("upsert_days[{i}].date"), &d.date);
        let kind = match pb::DayKind::try_from(d.kind) {
            Ok(pb::DayKind::Holiday) => Some(DayKind::Holiday),
            Ok(pb::DayKind::Workday) => Some(DayKind::Workday),
            _ => {
                v.add(
                    format!("upsert_days[{i}].kind"),
                    "must be HOLIDAY or WORKDAY",
                );
                None
            }
        };
        let description = validate::text(
            &mut v,
            &format!("upsert_days[{i}].description"),
            &d.description,
            1,
            100,
            false,
        );
        if let Some(date) = date
            && !seen.insert(date)
        {
            v.add(format!("upsert_days[{i}].date"), "given twice");
        }
        if let (Some(date), Some(kind)) = (date, kind) {
            upsert.push((date, Special { kind, description }));
        }
    }
    let mut remove = Vec::new();
    for (i, d) in req.remove_dates.iter().enumerate() {
        if let Some(date) = validate::date(&mut v, &format!("remove_dates[{i}]"), d) {
            if !seen.insert(date) {
                v.add(
                    format!("remove_dates[{i}]"),
                    "given twice or also in upsert_days",
                );
            }
            remove.push(date);
        }
    }
    let nothing = hours.is_none() && upsert.is_empty() && remove.is_empty();
    v.check(
        nothing,
        "upsert_days",
        "give working hours, days to upsert or dates to remove",
    );
    let (Some(city), true) = (city, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    for _ in 0..5 {
        let current = found(ctx, &city)?;
        if !req.etag.is_empty() && req.etag != convert::etag(current.version) {
            return Err(Error::precondition(
                "ETAG_MISMATCH",
                calendar_name(&city),
                "the calendar changed since it was read",
            ));
        }
        let mut cal = current.calendar.clone();
        cal.edit(hours.clone(), upsert.clone(), remove.clone());
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        if !store::calendars::update(&mut tx, &cal, current.version, now).await? {
            // Another replica or request changed it: reload and try again.
            tx.rollback().await?;
            if let Some(s) = store::calendars::all(ctx.db.pool())
                .await?
                .into_iter()
                .find(|s| s.calendar.city == city)
            {
                ctx.calendars.put(s);
            }
            continue;
        }
        let stored = Stored {
            calendar: cal,
            version: current.version + 1,
            update_time: now,
        };
        let wire = convert::calendar(&stored);
        let event = pb::CalendarChanged {
            calendar: Some(wire.clone()),
            changed_by: principal.actor(),
        };
        let meta = EventMeta::current(principal.actor());
        feed::append(&mut tx, &meta, &calendar_name(&city), &event, now).await?;
        tx.commit().await?;
        ctx.calendars.put(stored);
        // The city's running clocks are re-planned on the edited calendar (replan.rs).
        ctx.replan_wake.notify_one();
        return Ok(wire);
    }
    Err(Error::Aborted)
}

/// `ComputeDeadline`.
pub async fn compute(
    ctx: &Ctx,
    r: Request<pb::ComputeDeadlineRequest>,
) -> Result<pb::ComputeDeadlineResponse, Error> {
    caller(&r)?;
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    let city = validate::calendar_name(&mut v, "name", &req.name);
    let start = validate::time(&mut v, "start_time", &req.start_time);
    let end = validate::optional_time(&mut v, "end_time", &req.end_time);
    v.check(
        !(0..=365).contains(&req.working_days),
        "working_days",
        "must be 0 to 365",
    );
    let (Some(city), Some(start), true) = (city, start, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let cal = &found(ctx, &city)?.calendar;
    let due = cal.add_working_days(start, req.working_days.unsigned_abs());
    let (minutes, days) = match end {
        Some(end) => (
            cal.working_minutes(start, end),
            cal.working_days_between(start, end),
        ),
        None => (0, 0),
    };
    Ok(pb::ComputeDeadlineResponse {
        due_time: Some(to_timestamp(due)),
        working_minutes: minutes,
        working_days_between: days,
    })
}
