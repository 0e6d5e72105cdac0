//! Service records: SummarizeService.

use std::collections::BTreeMap;

use chrono::Datelike;
use tonic::Request;

use super::{own_volunteer, place_filter, scope_filter, validate};
use crate::{calendar::Calendar, domain::Satisfaction, error::Error, ops::Ctx, store};
use minqing_kit::{
    auth::{Role, caller},
    error::FieldViolations,
    time::{Micros, to_timestamp},
};
use minqing_proto::minqing::matching::v1 as pb;

/// The period holding `t`: `[start, end)`.
fn period(
    cal: &Calendar,
    kind: pb::RecordPeriod,
    range: (Micros, Micros),
    t: Micros,
) -> (Micros, Micros) {
    let date = cal.date(t);
    let start_of = |d: chrono::NaiveDate| cal.date_start(d);
    match kind {
        pb::RecordPeriod::Week => {
            let w = cal.week(t);
            (cal.week_start(w), cal.week_start(w + 1))
        }
        pb::RecordPeriod::Month => {
            let first = date.with_day(1).unwrap_or(date);
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first);
            (start_of(first), start_of(next))
        }
        pb::RecordPeriod::Quarter => {
            let m = (date.month0() / 3) * 3 + 1;
            let first = chrono::NaiveDate::from_ymd_opt(date.year(), m, 1).unwrap_or(date);
            let next = first
                .checked_add_months(chrono::Months::new(3))
                .unwrap_or(first);
            (start_of(first), start_of(next))
        }
        pb::RecordPeriod::Year => {
            let first = chrono::NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date);
            let next = chrono::NaiveDate::from_ymd_opt(date.year() + 1, 1, 1).unwrap_or(date);
            (start_of(first), start_of(next))
        }
        pb::RecordPeriod::All | pb::RecordPeriod::Unspecified => range,
    }
}

#[derive(Default)]
struct Sum {
    display: String,
    minutes: i64,
    assignments: i32,
    person_times: i32,
    ratings: i32,
    satisfaction: i64,
    satisfied: i32,
}

pub(super) async fn summarize(
    ctx: &Ctx,
    request: Request<pb::SummarizeServiceRequest>,
) -> Result<pb::SummarizeServiceResponse, Error> {
    let principal = caller(&request)?
        .require(&[
            Role::CommunityStaff,
            Role::GridWorker,
            Role::DistrictSystem,
            Role::Supervisor,
            Role::Service,
            Role::Volunteer,
        ])?
        .clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let kind = pb::RecordSubject::try_from(req.subject_kind)
        .ok()
        .filter(|k| *k != pb::RecordSubject::Unspecified);
    v.check(kind.is_none(), "subject_kind", "required");
    let period_kind = pb::RecordPeriod::try_from(req.period).unwrap_or_else(|_| {
        v.add("period", "unknown period");
        pb::RecordPeriod::All
    });
    let start = validate::time(&mut v, "start_time", &req.start_time, true);
    let end = validate::time(&mut v, "end_time", &req.end_time, true);
    if let (Some(s), Some(e)) = (start, end) {
        v.check(
            e <= s || e - s > 5 * 366 * 86_400_000_000,
            "end_time",
            "after start_time, within 5 years of it",
        );
    }
    let limit = if req.page_size == 0 {
        100
    } else {
        i64::from(req.page_size)
    };
    v.check(
        !(0..=1_000).contains(&req.page_size),
        "page_size",
        "must be 0 to 1000",
    );
    let place = place_filter(ctx, &mut v, "place", &req.place);
    let offset: usize = if req.page_token.is_empty() {
        0
    } else {
        req.page_token.parse().unwrap_or_else(|_| {
            v.add("page_token", "not a token from a previous page");
            0
        })
    };
    let (Some(kind), Some(start), Some(end)) = (kind, start, end) else {
        return Err(Error::Invalid(v));
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let mut subject = req.subject.clone();
    if principal.role == Role::Volunteer {
        let Some(me) = own_volunteer(&principal) else {
            return Err(Error::Denied(
                "NO_UNIT",
                "this token names no volunteer".into(),
            ));
        };
        if kind != pb::RecordSubject::Volunteer {
            return Err(Error::Denied(
                "NOT_YOURS",
                "a volunteer reads only their own record".into(),
            ));
        }
        subject = format!("volunteers/{me}");
    }
    let scope = if principal.role == Role::Volunteer {
        None
    } else {
        scope_filter(ctx, &principal)
    };
    let rows = store::assignments::done_between(ctx.db.pool(), start, end, place, scope).await?;
    let mut sums: BTreeMap<(String, Micros), (Micros, Sum)> = BTreeMap::new();
    for a in &rows {
        let keys: Vec<(String, String)> = match kind {
            pb::RecordSubject::Volunteer => (a.assignee.kind
                == crate::domain::AssigneeKind::Volunteer)
                .then(|| (a.assignee.name(), a.assignee_display_name.clone()))
                .into_iter()
                .collect(),
            pb::RecordSubject::Team => a
                .team
                .iter()
                .map(|t| (format!("teams/{t}"), String::new()))
                .collect(),
            pb::RecordSubject::Organisation => a
                .organisation
                .iter()
                .map(|o| (format!("organisations/{o}"), String::new()))
                .collect(),
            _ => vec![(a.place.community.clone(), String::new())],
        };
        let Some(done) = a.complete_time else {
            continue;
        };
        for (key, display) in keys {
            if !subject.is_empty() && key != subject {
                continue;
            }
            let (ps, pe) = period(&ctx.calendar, period_kind, (start, end), done);
            let (_, s) = sums
                .entry((key, ps))
                .or_insert_with(|| (pe, Sum::default()));
            if s.display.is_empty() {
                s.display = display;
            }
            s.minutes += i64::from(a.minutes);
            s.assignments += 1;
            s.person_times += a.participants as i32;
            if let Some(r) = &a.rating {
                s.ratings += 1;
                s.satisfaction += i64::from(r.satisfaction.wire());
                if r.satisfaction >= Satisfaction::Satisfied {
                    s.satisfied += 1;
                }
            }
        }
    }
    let mut response = pb::SummarizeServiceResponse::default();
    for (_, (_, s)) in sums.iter() {
        response.total_minutes += s.minutes;
        response.total_assignments += s.assignments;
        response.total_person_times += s.person_times;
    }
    let total = sums.len();
    for ((key, ps), (pe, s)) in sums.into_iter().skip(offset).take(limit as usize) {
        let mut display = s.display;
        if display.is_empty() {
            display = match kind {
                pb::RecordSubject::Team => match key.strip_prefix("teams/") {
                    Some(id) => store::bodies::get_team(ctx.db.pool(), id)
                        .await?
                        .map(|t| t.display_name)
                        .unwrap_or_default(),
                    None => String::new(),
                },
                pb::RecordSubject::Organisation => match key.strip_prefix("organisations/") {
                    Some(id) => store::bodies::get_org(ctx.db.pool(), id)
                        .await?
                        .map(|o| o.display_name)
                        .unwrap_or_default(),
                    None => String::new(),
                },
                _ => ctx
                    .gazetteer
                    .get(&key)
                    .map(|e| e.name.clone())
                    .unwrap_or_default(),
            };
        }
        response.records.push(pb::ServiceRecord {
            subject: key,
            display_name: display,
            period_start: Some(to_timestamp(ps)),
            period_end: Some(to_timestamp(pe)),
            minutes: s.minutes,
            assignments: s.assignments,
            person_times: s.person_times,
            ratings: s.ratings,
            average_satisfaction: if s.ratings > 0 {
                s.satisfaction as f64 / f64::from(s.ratings)
            } else {
                0.0
            },
            satisfied: s.satisfied,
        });
    }
    if offset + (limit as usize) < total {
        response.next_page_token = (offset + limit as usize).to_string();
    }
    Ok(response)
}
