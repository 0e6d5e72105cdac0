//! `Ratings`: per-case ratings (一事一评), residents' scores of places, two-way assessments
//! between a street and its communities, and supervisors' notes.

use prost::Name;
use tonic::Request;

use super::{READ_ROLES, check_scope, validate};
use crate::{
    app::Ctx,
    clock::{Clock, Close, State},
    error::Error,
    store,
};
use minqing_intake::domain::Level;
use minqing_kit::{
    auth::{Principal, Role, caller},
    error::FieldViolations,
    feed::{self, EventMeta},
    time::to_timestamp,
};
use minqing_proto::minqing::supervision::v1 as pb;

/// Systems that relay residents' own ratings and scores (the resident app, the hotline's IVR).
const RESIDENT_SYSTEMS: &[Role] = &[Role::Service, Role::DistrictSystem];
/// Staff who record a rating on a resident's behalf.
const ON_BEHALF: &[Role] = &[Role::WindowStaff, Role::GridWorker, Role::CommunityStaff];
/// Roles that submit assessments (scoped to the rating street or community).
const ASSESSORS: &[Role] = &[Role::CommunityStaff, Role::DistrictSystem];

/// Phone digits with spaces and dashes dropped, for comparing.
fn digits(phone: &str) -> String {
    phone.chars().filter(|c| !matches!(c, ' ' | '-')).collect()
}

fn phone(v: &mut FieldViolations, field: &str, value: &str) -> String {
    let p = digits(value);
    let body = p.strip_prefix('+').unwrap_or(&p);
    v.check(
        !(5..=20).contains(&p.len())
            || body.is_empty()
            || !body.bytes().all(|b| b.is_ascii_digit()),
        field,
        "must be a phone number: 5 to 20 digits with an optional leading '+'",
    );
    p
}

fn score(v: &mut FieldViolations, field: &str, value: i32, max: i32, min: i32) {
    v.check(
        !(min..=max).contains(&value),
        field,
        format!("must be {min} to {max}"),
    );
}

async fn clock_of(ctx: &Ctx, case_id: &str) -> Result<Clock, Error> {
    store::clocks::get(ctx.db.pool(), case_id)
        .await?
        .ok_or_else(|| Error::NotFound("case", format!("cases/{case_id}")))
}

/// `RateCase`.
pub async fn rate(ctx: &Ctx, r: Request<pb::RateCaseRequest>) -> Result<pb::CaseRating, Error> {
    let principal = caller(&r)?.clone();
    let on_behalf = if principal.is(RESIDENT_SYSTEMS) {
        false
    } else {
        principal.require(ON_BEHALF)?;
        true
    };
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "case", "cases", &req.case);
    score(&mut v, "handling_score", req.handling_score, 5, 1);
    score(&mut v, "staff_score", req.staff_score, 5, 1);
    let handling_comment = validate::text(
        &mut v,
        "handling_comment",
        &req.handling_comment,
        0,
        1_000,
        true,
    );
    let staff_comment = validate::text(&mut v, "staff_comment", &req.staff_comment, 0, 1_000, true);
    let given_phone = phone(&mut v, "reporter_phone", &req.reporter_phone);
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    crate::retry!({
        let mut clock = clock_of(ctx, &id).await?;
        if on_behalf {
            check_scope(&principal, &clock.place, &req.case)?;
        }
        let answered = clock.state == State::Closed
            && matches!(
                clock.close,
                Some(Close::Resolved | Close::Referred | Close::Immediate)
            );
        if !answered {
            return Err(Error::precondition(
                "NOT_ANSWERED",
                req.case.clone(),
                "a case is rated once the resident has an answer",
            ));
        }
        let contact = store::replies::contact(ctx.db.pool(), &id).await?;
        match contact {
            Some(c) if c.anonymous || c.phone.is_empty() => {
                return Err(Error::precondition(
                    "ANONYMOUS",
                    req.case.clone(),
                    "an anonymous report has no reporter to rate it",
                ));
            }
            Some(c) if digits(&c.phone) == given_phone => {}
            // Answered through routing's feed, but the report itself has not come through
            // intake's yet (the feeds run independently): nobody can be checked yet.
            None => {
                return Err(Error::precondition(
                    "REPORT_NOT_ARRIVED",
                    req.case.clone(),
                    "the case's report has not reached supervision yet; try again shortly",
                ));
            }
            Some(_) => {
                return Err(Error::Denied(
                    "NOT_THE_REPORTER",
                    "only the case's own reporter may rate it".into(),
                ));
            }
        }
        let now = ctx.clock.now_micros();
        let rating = pb::CaseRating {
            name: format!("ratings/{id}"),
            case: req.case.clone(),
            handling_score: req.handling_score,
            handling_comment: handling_comment.clone(),
            staff_score: req.staff_score,
            staff_comment: staff_comment.clone(),
            unit: clock.unit.clone(),
            on_behalf,
            recorded_by: principal.actor(),
            create_time: Some(to_timestamp(now)),
        };
        let mut tx = ctx.db.begin().await?;
        if !store::ratings::insert_rating(&mut tx, &id, &clock.place, &rating, now).await? {
            return Err(Error::Exists(
                "rating",
                format!("ratings/{id}"),
                "the case was rated already: one rating per case".into(),
            ));
        }
        clock.rated = true;
        let who = if on_behalf {
            "staff on the reporter's behalf"
        } else {
            "the reporter"
        };
        clock.note(
            now,
            &pb::CaseRated::full_name(),
            format!(
                "rated by {who}: handling {}/5, {} {}/5",
                req.handling_score, clock.unit, req.staff_score
            ),
        );
        if !store::clocks::save(&mut tx, &mut clock).await? {
            return Err(Error::Conflict);
        }
        let meta = EventMeta::current(principal.actor());
        let event = pb::CaseRated {
            rating: Some(rating.clone()),
        };
        feed::append(&mut tx, &meta, &req.case, &event, now).await?;
        tx.commit().await?;
        Ok(rating)
    })
}

/// `GetCaseRating`.
pub async fn get(ctx: &Ctx, r: Request<pb::GetCaseRatingRequest>) -> Result<pb::CaseRating, Error> {
    let principal = caller(&r)?.require(READ_ROLES)?.clone();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "case", "cases", &r.get_ref().case);
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let clock = clock_of(ctx, &id).await?;
    check_scope(&principal, &clock.place, &r.get_ref().case)?;
    store::ratings::rating(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("rating", format!("ratings/{id}")))
}

/// The level of a place code, recording a violation when unknown.
fn level_of(ctx: &Ctx, v: &mut FieldViolations, field: &str, code: &str) -> Option<Level> {
    if code.is_empty() {
        v.add(field, "required");
        return None;
    }
    match ctx.gazetteer.get(code) {
        Some(e) => Some(e.level),
        None => {
            v.add(field, format!("unknown place code {code}"));
            None
        }
    }
}

/// `ScorePlace`.
pub async fn score_place(
    ctx: &Ctx,
    r: Request<pb::ScorePlaceRequest>,
) -> Result<pb::PlaceScore, Error> {
    let principal = caller(&r)?.require(RESIDENT_SYSTEMS)?.clone();
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    let level = level_of(ctx, &mut v, "place", &req.place);
    if level.is_some_and(|l| !matches!(l, Level::Street | Level::Community)) {
        v.add("place", "must be a street or a community");
    }
    score(&mut v, "score", req.score, 5, 1);
    let comment = validate::text(&mut v, "comment", &req.comment, 0, 1_000, true);
    let resident = phone(&mut v, "resident_phone", &req.resident_phone);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let now = ctx.clock.now_micros();
    let district = ctx
        .gazetteer
        .get(&req.place)
        .map(|_| req.place.get(..6).unwrap_or_default().to_string())
        .unwrap_or_default();
    let cal = ctx
        .calendars
        .for_district(&district, &ctx.config.default_city);
    let period = cal.calendar.local_date(now).format("%Y-%m").to_string();
    let s = pb::PlaceScore {
        place: req.place.clone(),
        period,
        score: req.score,
        comment,
        create_time: Some(to_timestamp(now)),
    };
    let resident = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(format!("minqing-resident|{resident}")))
    };
    let mut tx = ctx.db.begin().await?;
    store::ratings::put_score(&mut tx, &resident, &s, now).await?;
    let meta = EventMeta::current(principal.actor());
    let event = pb::PlaceScored {
        score: Some(s.clone()),
    };
    feed::append(
        &mut tx,
        &meta,
        &format!("places/{}", req.place),
        &event,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(s)
}

fn period(v: &mut FieldViolations, field: &str, value: &str, months_only: bool) {
    let ok_year = |y: &str| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit());
    let ok = match value.split_once('-') {
        Some((y, m)) if ok_year(y) && m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()) => {
            (1..=12).contains(&m.parse::<u32>().unwrap_or(0))
        }
        Some((y, q)) if ok_year(y) && !months_only => matches!(q, "Q1" | "Q2" | "Q3" | "Q4"),
        None if ok_year(value) && !months_only => true,
        _ => false,
    };
    if !ok {
        v.add(
            field,
            if months_only {
                "must be a month \"YYYY-MM\""
            } else {
                "must be \"YYYY-MM\", \"YYYY-Qn\" or \"YYYY\""
            },
        );
    }
}

/// `SummarizePlaceScores`.
pub async fn summarize(
    ctx: &Ctx,
    r: Request<pb::SummarizePlaceScoresRequest>,
) -> Result<pb::SummarizePlaceScoresResponse, Error> {
    caller(&r)?.require(READ_ROLES)?;
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    let level = level_of(ctx, &mut v, "place", &req.place);
    if level.is_some_and(|l| !matches!(l, Level::District | Level::Street | Level::Community)) {
        v.add("place", "must be a district, street or community");
    }
    period(&mut v, "period", &req.period, true);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let places: Vec<String> = ctx
        .gazetteer
        .places
        .iter()
        .filter(|e| matches!(e.level, Level::Street | Level::Community))
        .filter(|e| ctx.gazetteer.is_within(&e.code, &req.place))
        .map(|e| e.code.clone())
        .collect();
    let sums = store::ratings::score_sums(ctx.db.pool(), &req.period, &places).await?;
    Ok(pb::SummarizePlaceScoresResponse {
        places: sums
            .into_iter()
            .map(|(place, n, total)| pb::PlaceScoreSummary {
                place,
                count: i32::try_from(n).unwrap_or(i32::MAX),
                average: if n > 0 { total as f64 / n as f64 } else { 0.0 },
            })
            .collect(),
    })
}

fn may_speak_for(principal: &Principal, ctx: &Ctx, place: &str) -> bool {
    match &principal.place_scope {
        None => principal.role != Role::CommunityStaff,
        Some(scope) if principal.role == Role::CommunityStaff => scope == place,
        Some(scope) => ctx.gazetteer.is_within(place, scope),
    }
}

/// `SubmitAssessment`.
pub async fn assess(
    ctx: &Ctx,
    r: Request<pb::SubmitAssessmentRequest>,
) -> Result<pb::Assessment, Error> {
    let principal = caller(&r)?.require(ASSESSORS)?.clone();
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    period(&mut v, "period", &req.period, false);
    let rater = level_of(ctx, &mut v, "rater", &req.rater);
    let ratee = level_of(ctx, &mut v, "ratee", &req.ratee);
    score(&mut v, "score", req.score, 100, 0);
    let comment = validate::text(&mut v, "comment", &req.comment, 0, 2_000, true);
    let parent = |code: &str| ctx.gazetteer.get(code).map(|e| e.parent.clone());
    let direction = match (rater, ratee) {
        (Some(Level::Street), Some(Level::Community))
            if parent(&req.ratee).as_deref() == Some(req.rater.as_str()) =>
        {
            Some(pb::AssessmentDirection::StreetRatesCommunity)
        }
        (Some(Level::Community), Some(Level::Street))
            if parent(&req.rater).as_deref() == Some(req.ratee.as_str()) =>
        {
            Some(pb::AssessmentDirection::CommunityRatesStreet)
        }
        (Some(_), Some(_)) => {
            v.add(
                "ratee",
                "a street assesses its own communities, a community its own street",
            );
            None
        }
        _ => None,
    };
    let (Some(direction), true) = (direction, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    if !may_speak_for(&principal, ctx, &req.rater) {
        return Err(Error::Denied(
            "OUT_OF_SCOPE",
            format!("you do not speak for {}", req.rater),
        ));
    }
    let now = ctx.clock.now_micros();
    let a = pb::Assessment {
        name: format!("assessments/{}/{}/{}", req.period, req.rater, req.ratee),
        period: req.period.clone(),
        rater: req.rater.clone(),
        ratee: req.ratee.clone(),
        direction: direction as i32,
        score: req.score,
        comment,
        recorded_by: principal.actor(),
        create_time: Some(to_timestamp(now)),
    };
    let mut tx = ctx.db.begin().await?;
    if !store::ratings::insert_assessment(&mut tx, &a, now).await? {
        return Err(Error::Exists(
            "assessment",
            a.name.clone(),
            "assessed already for this period".into(),
        ));
    }
    let meta = EventMeta::current(principal.actor());
    let event = pb::AssessmentSubmitted {
        assessment: Some(a.clone()),
    };
    feed::append(&mut tx, &meta, &a.name, &event, now).await?;
    tx.commit().await?;
    Ok(a)
}

/// `ListAssessments`.
pub async fn list_assessments(
    ctx: &Ctx,
    r: Request<pb::ListAssessmentsRequest>,
) -> Result<pb::ListAssessmentsResponse, Error> {
    caller(&r)?.require(READ_ROLES)?;
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    period(&mut v, "period", &req.period, false);
    level_of(ctx, &mut v, "place", &req.place);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    Ok(pb::ListAssessmentsResponse {
        assessments: store::ratings::assessments(ctx.db.pool(), &req.period, &req.place).await?,
    })
}

/// `AnnotateCase`.
pub async fn annotate(
    ctx: &Ctx,
    r: Request<pb::AnnotateCaseRequest>,
) -> Result<pb::Annotation, Error> {
    let principal = caller(&r)?.require(&[Role::Supervisor])?.clone();
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "case", "cases", &req.case);
    let text = validate::text(&mut v, "text", &req.text, 1, 2_000, true);
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    crate::retry!({
        let mut clock = clock_of(ctx, &id).await?;
        check_scope(&principal, &clock.place, &req.case)?;
        let now = ctx.clock.now_micros();
        let note_id = uuid::Uuid::now_v7().to_string();
        let mut tx = ctx.db.begin().await?;
        store::ratings::insert_annotation(&mut tx, &note_id, &id, &principal.actor(), &text, now)
            .await?;
        clock.note(
            now,
            &pb::CaseAnnotated::full_name(),
            format!("a supervisor noted: {text}"),
        );
        if !store::clocks::save(&mut tx, &mut clock).await? {
            return Err(Error::Conflict);
        }
        let a = pb::Annotation {
            name: format!("annotations/{note_id}"),
            case: req.case.clone(),
            text: text.clone(),
            author: principal.actor(),
            create_time: Some(to_timestamp(now)),
        };
        let meta = EventMeta::current(principal.actor());
        let event = pb::CaseAnnotated {
            annotation: Some(a.clone()),
        };
        feed::append(&mut tx, &meta, &req.case, &event, now).await?;
        tx.commit().await?;
        Ok(a)
    })
}

/// `ListAnnotations`.
pub async fn annotations(
    ctx: &Ctx,
    r: Request<pb::ListAnnotationsRequest>,
) -> Result<pb::ListAnnotationsResponse, Error> {
    let principal = caller(&r)?.require(READ_ROLES)?.clone();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "case", "cases", &r.get_ref().case);
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let clock = clock_of(ctx, &id).await?;
    check_scope(&principal, &clock.place, &r.get_ref().case)?;
    Ok(pb::ListAnnotationsResponse {
        annotations: store::ratings::annotations(ctx.db.pool(), &id).await?,
    })
}
