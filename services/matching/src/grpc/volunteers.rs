//! Volunteers: CreateVolunteer, GetVolunteer, ListVolunteers, UpdateVolunteer,
//! PauseVolunteer, ResumeVolunteer, RetireVolunteer, ImportVolunteers.

use prost::Name;
use tonic::Request;

use super::{
    READERS, STAFF, convert, convert::Personal, hash, in_scope, own_volunteer, personal,
    place_filter, scope_filter, validate,
};
use crate::{
    domain::{
        Availability, AvailabilityException, Capacity, Consent, Credential, Profile, Skill,
        Volunteer, VolunteerState, WeeklyWindow,
    },
    error::Error,
    ops::{self, Ctx},
    store::{self, Inserted},
};
use minqing_kit::{
    auth::{Principal, Role, caller},
    error::{FieldViolations, is_unique_violation},
    time::{Micros, to_timestamp},
};
use minqing_proto::minqing::matching::v1 as pb;

/// Checks a volunteer as given on the wire; every problem under `prefix`.
pub(crate) fn profile(
    ctx: &Ctx,
    v: &mut FieldViolations,
    prefix: &str,
    p: &pb::Volunteer,
    now: Micros,
) -> Option<Profile> {
    let f = |name: &str| format!("{prefix}{name}");
    let before = v.violations().len();
    let external_id = p.external_id.trim().to_string();
    v.check(
        external_id.len() > 64 || !external_id.bytes().all(|b| b.is_ascii_graphic()),
        f("external_id"),
        "must be up to 64 printable ASCII characters",
    );
    let display_name = validate::text(v, &f("display_name"), &p.display_name, 1, 50, false);
    let contact = validate::contact(v, &f("contact"), &p.contact, true);
    let contact_note = validate::text(v, &f("contact_note"), &p.contact_note, 0, 200, false);
    let home = validate::place(v, &f("home"), &ctx.gazetteer, &p.home);
    let address = p
        .home
        .as_ref()
        .map(|h| validate::text(v, &f("home.address"), &h.address, 0, 500, false))
        .unwrap_or_default();
    let location = validate::location(v, &f("location"), &p.location).or_else(|| {
        p.home
            .as_ref()
            .and_then(|h| validate::location(v, &f("home.location"), &h.location))
    });
    v.check(p.skills.len() > 30, f("skills"), "at most 30");
    let mut skills: Vec<Skill> = Vec::new();
    for (i, s) in p.skills.iter().enumerate() {
        let code = s.skill.trim();
        if !crate::domain::is_code(code) {
            v.add(
                f(&format!("skills[{i}].skill")),
                "must be 1 to 40 of a-z, 0-9 and '-'",
            );
            continue;
        }
        if skills.iter().any(|x| x.skill == code) {
            v.add(f(&format!("skills[{i}].skill")), "listed twice");
            continue;
        }
        let credential = s.credential.as_ref().map(|c| Credential {
            title: validate::text(
                v,
                &f(&format!("skills[{i}].credential.title")),
                &c.title,
                1,
                100,
                false,
            ),
            number: validate::text(
                v,
                &f(&format!("skills[{i}].credential.number")),
                &c.number,
                0,
                64,
                false,
            ),
            issuer: validate::text(
                v,
                &f(&format!("skills[{i}].credential.issuer")),
                &c.issuer,
                0,
                100,
                false,
            ),
            expire_time: validate::time(
                v,
                &f(&format!("skills[{i}].credential.expire_time")),
                &c.expire_time,
                false,
            ),
        });
        skills.push(Skill {
            skill: code.to_string(),
            credential,
        });
    }
    let languages = validate::codes(v, &f("languages"), &p.languages, 10);
    let mut availability = Availability::default();
    if let Some(a) = &p.availability {
        v.check(
            a.weekly.len() > 50,
            f("availability.weekly"),
            "at most 50 windows",
        );
        for (i, w) in a.weekly.iter().enumerate() {
            let field = f(&format!("availability.weekly[{i}]"));
            let ok = (1..=7).contains(&w.day)
                && (0..1440).contains(&w.start_minute)
                && w.end_minute > w.start_minute
                && w.end_minute <= 1440;
            if !ok {
                v.add(
                    field,
                    "day 1 to 7, start 0 to 1439, end after start and at most 1440",
                );
                continue;
            }
            availability.weekly.push(WeeklyWindow {
                day: w.day as u8,
                start: w.start_minute as u16,
                end: w.end_minute as u16,
            });
        }
        let mut sorted = availability.weekly.clone();
        sorted.sort_by_key(|w| (w.day, w.start));
        if sorted
            .windows(2)
            .any(|p| p[0].day == p[1].day && p[1].start < p[0].end)
        {
            v.add(f("availability.weekly"), "windows overlap");
        }
        v.check(
            a.exceptions.len() > 100,
            f("availability.exceptions"),
            "at most 100",
        );
        for (i, x) in a.exceptions.iter().enumerate() {
            let field = f(&format!("availability.exceptions[{i}]"));
            let s = validate::time(v, &format!("{field}.start_time"), &x.start_time, true);
            let e = validate::time(v, &format!("{field}.end_time"), &x.end_time, true);
            let note = validate::text(v, &format!("{field}.note"), &x.note, 0, 200, false);
            if let (Some(s), Some(e)) = (s, e) {
                if e <= s || e - s > 366 * 86_400_000_000 {
                    v.add(
                        format!("{field}.end_time"),
                        "after the start, within a year of it",
                    );
                }
                availability.exceptions.push(AvailabilityException {
                    start: s,
                    end: e,
                    available: x.available,
                    note,
                });
            }
        }
    }
    let capacity = match &p.capacity {
        Some(c) => {
            v.check(
                !(1..=4_200).contains(&c.weekly_minutes),
                f("capacity.weekly_minutes"),
                "must be 1 to 4200",
            );
            v.check(
                !(1..=50).contains(&c.max_open_tasks),
                f("capacity.max_open_tasks"),
                "must be 1 to 50",
            );
            Capacity {
                weekly_minutes: c.weekly_minutes.max(0) as u32,
                max_open_tasks: c.max_open_tasks.max(0) as u32,
            }
        }
        None => {
            v.add(f("capacity"), "required");
            Capacity {
                weekly_minutes: 0,
                max_open_tasks: 0,
            }
        }
    };
    v.check(p.teams.len() > 10, f("teams"), "at most 10");
    let mut teams = Vec::new();
    for (i, t) in p.teams.iter().enumerate() {
        if let Some(id) = validate::name(v, &f(&format!("teams[{i}]")), t, "teams")
            && !teams.contains(&id)
        {
            teams.push(id);
        }
    }
    let organisation = if p.organisation.is_empty() {
        None
    } else {
        validate::name(v, &f("organisation"), &p.organisation, "organisations")
    };
    let consent = match &p.consent {
        Some(c) => {
            v.check(
                !c.data_processing,
                f("consent.data_processing"),
                "the volunteer must consent to their data being kept",
            );
            Consent {
                data_processing: c.data_processing,
                offers: c.offers,
                show_name: c.show_name,
                consent_time: validate::time(v, &f("consent.consent_time"), &c.consent_time, false)
                    .unwrap_or(now),
            }
        }
        None => {
            v.add(
                f("consent.data_processing"),
                "the volunteer must consent to their data being kept",
            );
            Consent::default()
        }
    };
    if v.violations().len() > before {
        return None;
    }
    Some(Profile {
        external_id,
        display_name,
        contact,
        contact_note,
        home: home?,
        address,
        location,
        skills,
        languages,
        availability,
        capacity,
        party_member: p.party_member,
        teams,
        organisation,
        consent,
    })
}

/// Checks that the teams and organisation a profile names exist.
async fn check_refs(ctx: &Ctx, p: &Profile, prefix: &str) -> Result<(), Error> {
    let mut v = FieldViolations::new();
    for (i, t) in p.teams.iter().enumerate() {
        if store::bodies::get_team(ctx.db.pool(), t).await?.is_none() {
            v.add(
                format!("{prefix}teams[{i}]"),
                format!("no such team teams/{t}"),
            );
        }
    }
    if let Some(o) = &p.organisation
        && store::bodies::get_org(ctx.db.pool(), o).await?.is_none()
    {
        v.add(
            format!("{prefix}organisation"),
            format!("no such organisation organisations/{o}"),
        );
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(v))
    }
}

/// The volunteer's figures, from the pool and their totals.
pub(crate) async fn stats(ctx: &Ctx, v: &Volunteer) -> Result<pb::VolunteerStats, Error> {
    let now = ctx.clock.now_micros();
    let week = ctx.calendar.week(now);
    let load = ctx
        .index
        .read(|pool| pool.get(&v.id).map(|e| e.load.clone()));
    let load = match load {
        Some(l) => l,
        None => store::volunteers::load(ctx.db.pool(), &v.id, &ctx.calendar, now).await?,
    };
    let (minutes, done) = store::volunteers::totals(ctx.db.pool(), &v.id).await?;
    Ok(pb::VolunteerStats {
        open_tasks: load.open_tasks as i32,
        week_minutes: load.week_minutes(week) as i32,
        total_minutes: minutes,
        assignments_done: done as i32,
        offers_last_30_days: load.recent_offers(now) as i32,
        last_offer_time: load.last_offer().map(to_timestamp),
    })
}

/// A volunteer as `p` may see them; a read that shows personal data is audited.
pub(crate) async fn wire(
    ctx: &Ctx,
    p: &Principal,
    v: &Volunteer,
    rpc: &str,
) -> Result<pb::Volunteer, Error> {
    let stats = stats(ctx, v).await?;
    let shown = personal(p, v);
    if shown == Personal::Shown {
        ctx.audit
            .record(p, minqing_kit::audit::READ_PERSONAL_DATA, &v.name(), rpc)
            .await;
    }
    Ok(convert::volunteer(v, shown, Some(stats)))
}

fn public(v: &Volunteer) -> pb::Volunteer {
    convert::volunteer(v, Personal::Hidden, None)
}

/// Registers a checked profile (shared with imports). `Ok(Err(existing))` when the external id
/// is taken.
async fn register(
    ctx: &Ctx,
    principal: &Principal,
    request_id: String,
    request_hash: &str,
    profile: Profile,
) -> Result<Result<(Volunteer, bool), Volunteer>, Error> {
    let now = ctx.clock.now_micros();
    let v = Volunteer {
        id: uuid::Uuid::now_v7().to_string(),
        request_id,
        registered_by: principal.actor(),
        profile,
        state: VolunteerState::Active,
        pause_until: None,
        state_reason: String::new(),
        create_time: now,
        update_time: now,
        version: 1,
    };
    let mut tx = ctx.db.begin().await?;
    match store::volunteers::insert(&mut tx, &v, request_hash).await {
        Ok(Inserted::New) => {
            let event = pb::VolunteerRegistered {
                volunteer: Some(public(&v)),
            };
            ops::emit(&mut tx, &principal.actor(), &v.name(), &event, now).await?;
            tx.commit().await?;
            ctx.index.reload([v.id.clone()]).await?;
            Ok(Ok((v, true)))
        }
        Ok(Inserted::Existing {
            request_hash: h,
            value,
        }) => {
            tx.rollback().await?;
            if h == request_hash {
                Ok(Ok((*value, false)))
            } else {
                Err(Error::precondition(
                    "REQUEST_ID_REUSED",
                    value.name(),
                    "request_id was already used for a different request",
                ))
            }
        }
        Err(minqing_kit::error::StoreError::Other(e)) if is_unique_violation(&e) => {
            drop(tx);
            let existing =
                store::volunteers::by_external_id(ctx.db.pool(), &v.profile.external_id).await?;
            match existing {
                Some(x) => Ok(Err(x)),
                None => Err(Error::Conflict),
            }
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn create(
    ctx: &Ctx,
    request: Request<pb::CreateVolunteerRequest>,
) -> Result<pb::Volunteer, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let h = hash(&req);
    let now = ctx.clock.now_micros();
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let profile = match &req.volunteer {
        Some(p) => profile(ctx, &mut v, "volunteer.", p, now),
        None => {
            v.add("volunteer", "required");
            None
        }
    };
    let Some(profile) = profile.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    in_scope(&principal, &profile.home)?;
    check_refs(ctx, &profile, "volunteer.").await?;
    match register(ctx, &principal, req.request_id, &h, profile).await? {
        Ok((vol, _)) => {
            wire(
                ctx,
                &principal,
                &vol,
                "minqing.matching.v1.Volunteers/CreateVolunteer",
            )
            .await
        }
        Err(existing) => Err(Error::Precondition(
            "EXTERNAL_ID_TAKEN",
            existing.name(),
            format!("external_id is already registered as {}", existing.name()),
        )),
    }
}

/// Loads a volunteer the caller may read.
async fn visible(ctx: &Ctx, principal: &Principal, name: &str) -> Result<Volunteer, Error> {
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "name", name, "volunteers");
    let Some(id) = id else {
        return Err(Error::Invalid(v));
    };
    if principal.role == Role::Volunteer {
        if own_volunteer(principal) != Some(id.as_str()) {
            return Err(Error::Denied(
                "NOT_YOURS",
                "a volunteer reads only their own record".into(),
            ));
        }
    } else {
        principal.require(READERS)?;
    }
    let vol = store::volunteers::get(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("volunteer", name.to_string()))?;
    if principal.role != Role::Volunteer {
        in_scope(principal, &vol.profile.home)?;
    }
    Ok(vol)
}

pub(super) async fn get(
    ctx: &Ctx,
    request: Request<pb::GetVolunteerRequest>,
) -> Result<pb::Volunteer, Error> {
    let principal = caller(&request)?.clone();
    let vol = visible(ctx, &principal, &request.get_ref().name).await?;
    wire(
        ctx,
        &principal,
        &vol,
        "minqing.matching.v1.Volunteers/GetVolunteer",
    )
    .await
}

pub(super) async fn list(
    ctx: &Ctx,
    request: Request<pb::ListVolunteersRequest>,
) -> Result<pb::ListVolunteersResponse, Error> {
    let principal = caller(&request)?.require(READERS)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let mut f = store::volunteers::Filter {
        place: place_filter(ctx, &mut v, "place", &req.place),
        scope: scope_filter(ctx, &principal),
        party_members_only: req.party_members_only,
        ..Default::default()
    };
    if !req.skill.is_empty() {
        f.skill = Some(req.skill.clone());
    }
    if !req.team.is_empty() {
        f.team = validate::name(&mut v, "team", &req.team, "teams");
    }
    if !req.organisation.is_empty() {
        f.organisation = validate::name(&mut v, "organisation", &req.organisation, "organisations");
    }
    for (i, s) in req.states.iter().enumerate() {
        match VolunteerState::from_wire(*s) {
            Some(s) => f.states.push(i64::from(s.wire())),
            None => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    if !req.external_id.is_empty() {
        f.external_id = Some(req.external_id.clone());
    }
    let fingerprint = {
        let mut unpaged = req.clone();
        unpaged.page_token.clear();
        unpaged.page_size = 0;
        hash(&unpaged)[..16].to_string()
    };
    if !req.page_token.is_empty() {
        match req.page_token.split_once('.') {
            Some((fp, last)) if fp == fingerprint && uuid::Uuid::parse_str(last).is_ok() => {
                f.after_id = Some(last.into())
            }
            _ => v.add(
                "page_token",
                "not a token from a previous page of this same request",
            ),
        }
    }
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let mut rows = store::volunteers::list(ctx.db.pool(), &f, limit + 1).await?;
    let next_page_token = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|x| format!("{fingerprint}.{}", x.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut volunteers = Vec::with_capacity(rows.len());
    for vol in &rows {
        volunteers.push(
            wire(
                ctx,
                &principal,
                vol,
                "minqing.matching.v1.Volunteers/ListVolunteers",
            )
            .await?,
        );
    }
    Ok(pb::ListVolunteersResponse {
        volunteers,
        next_page_token,
    })
}

const UPDATABLE: &[&str] = &[
    "display_name",
    "contact",
    "contact_note",
    "home",
    "location",
    "skills",
    "languages",
    "availability",
    "capacity",
    "party_member",
    "teams",
    "organisation",
    "consent",
    "external_id",
];

/// Overlays the fields in `paths` of `from` onto `to`.
fn overlay(to: &mut pb::Volunteer, from: &pb::Volunteer, paths: &[String]) {
    for p in paths {
        match p.as_str() {
            "display_name" => to.display_name = from.display_name.clone(),
            "contact" => to.contact = from.contact.clone(),
            "contact_note" => to.contact_note = from.contact_note.clone(),
            "home" => to.home = from.home.clone(),
            "location" => to.location = from.location,
            "skills" => to.skills = from.skills.clone(),
            "languages" => to.languages = from.languages.clone(),
            "availability" => to.availability = from.availability.clone(),
            "capacity" => to.capacity = from.capacity,
            "party_member" => to.party_member = from.party_member,
            "teams" => to.teams = from.teams.clone(),
            "organisation" => to.organisation = from.organisation.clone(),
            "consent" => to.consent = from.consent,
            "external_id" => to.external_id = from.external_id.clone(),
            _ => {}
        }
    }
}

pub(super) async fn update(
    ctx: &Ctx,
    request: Request<pb::UpdateVolunteerRequest>,
) -> Result<pb::Volunteer, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let given = req.volunteer.unwrap_or_default();
    let id = validate::name(&mut v, "volunteer.name", &given.name, "volunteers");
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    v.check(paths.is_empty(), "update_mask", "name the fields to change");
    for (i, p) in paths.iter().enumerate() {
        v.check(
            !UPDATABLE.contains(&p.as_str()),
            format!("update_mask.paths[{i}]"),
            format!("{p} cannot be changed"),
        );
    }
    let Some(id) = id.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let vol = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut vol = store::volunteers::get(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("volunteer", given.name.clone()))?;
        in_scope(&principal, &vol.profile.home)?;
        if !given.etag.is_empty() && given.etag != format!("v{}", vol.version) {
            return Err(Error::precondition(
                "ETAG_MISMATCH",
                vol.name(),
                "the volunteer changed since it was read; read it again",
            ));
        }
        let mut merged = convert::volunteer(&vol, Personal::Shown, None);
        overlay(&mut merged, &given, &paths);
        let mut v = FieldViolations::new();
        let Some(profile) =
            profile(ctx, &mut v, "volunteer.", &merged, now).filter(|_| v.is_empty())
        else {
            return Err(Error::Invalid(v));
        };
        in_scope(&principal, &profile.home)?;
        check_refs(ctx, &profile, "volunteer.").await?;
        let expected = vol.version;
        vol.profile = profile;
        vol.update_time = now;
        vol.version += 1;
        match store::volunteers::update(&mut tx, &vol, expected).await {
            Ok(true) => {}
            Ok(false) => return Err(Error::Conflict),
            Err(minqing_kit::error::StoreError::Other(e)) if is_unique_violation(&e) => {
                let mut v = FieldViolations::new();
                v.add(
                    "volunteer.external_id",
                    "already registered to another volunteer",
                );
                return Err(Error::Invalid(v));
            }
            Err(e) => return Err(e.into()),
        }
        let event = pb::VolunteerUpdated {
            volunteer: Some(public(&vol)),
            changed_fields: paths.clone(),
        };
        ops::emit(&mut tx, &principal.actor(), &vol.name(), &event, now).await?;
        tx.commit().await?;
        Ok(vol)
    })?;
    ctx.index.reload([vol.id.clone()]).await?;
    wire(
        ctx,
        &principal,
        &vol,
        "minqing.matching.v1.Volunteers/UpdateVolunteer",
    )
    .await
}

/// Changes a volunteer's state in one transaction; `change` edits it and returns the event.
async fn change_state<M: prost::Message + Name>(
    ctx: &Ctx,
    principal: &Principal,
    name: &str,
    change: impl Fn(&mut Volunteer, Micros) -> Result<Option<M>, Error>,
) -> Result<Volunteer, Error> {
    let mut v = FieldViolations::new();
    let Some(id) = validate::name(&mut v, "name", name, "volunteers") else {
        return Err(Error::Invalid(v));
    };
    let staff = principal.is(STAFF);
    if !staff && own_volunteer(principal) != Some(id.as_str()) {
        return Err(Error::Denied(
            "NOT_YOURS",
            "only community staff or the volunteer themself may do this".into(),
        ));
    }
    let (vol, touched) = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut vol = store::volunteers::get(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("volunteer", name.to_string()))?;
        if staff {
            in_scope(principal, &vol.profile.home)?;
        }
        let expected = vol.version;
        let Some(event) = change(&mut vol, now)? else {
            return Ok((vol, vec![]));
        };
        vol.update_time = now;
        vol.version += 1;
        if !store::volunteers::update(&mut tx, &vol, expected).await? {
            return Err(Error::Conflict);
        }
        ops::emit(&mut tx, &principal.actor(), &vol.name(), &event, now).await?;
        let mut touched = vec![vol.id.clone()];
        if vol.state == VolunteerState::Retired {
            touched.extend(cancel_unaccepted(ctx, &mut tx, &vol, &principal.actor(), now).await?);
        }
        tx.commit().await?;
        Ok((vol, touched))
    })?;
    ctx.index.reload(touched).await?;
    Ok(vol)
}

/// A retiring volunteer's offers and pending claims are cancelled and their places reopen.
async fn cancel_unaccepted(
    ctx: &Ctx,
    tx: &mut minqing_kit::db::Tx,
    vol: &Volunteer,
    actor: &str,
    now: Micros,
) -> Result<Vec<String>, Error> {
    let _ = ctx;
    let open = store::assignments::open_for_assignee(tx.conn(), &vol.name()).await?;
    for mut a in open
        .into_iter()
        .filter(|a| a.state != crate::domain::AssignmentState::Accepted)
    {
        let mut need = store::needs::get(tx.conn(), &a.need_id)
            .await?
            .ok_or_else(|| Error::NotFound("need", format!("needs/{}", a.need_id)))?;
        let expected_a = a.version;
        let from = a.state;
        a.state = crate::domain::AssignmentState::Cancelled;
        a.end_reason = "the volunteer retired".into();
        a.update_time = now;
        a.version += 1;
        ops::save_assignment(tx, &a, expected_a).await?;
        let (expected, before) = (need.version, need.state);
        ops::shift(&mut need, Some(from), a.state, a.people, now);
        let event = pb::AssignmentCancelled {
            assignment: Some(convert::assignment(&a)),
            need: Some(convert::need(&need)),
            reason: a.end_reason.clone(),
        };
        ops::emit(tx, actor, &a.name(), &event, now).await?;
        ops::save_need(tx, &need, expected, before, actor, now).await?;
    }
    Ok(vec![])
}

pub(super) async fn pause(
    ctx: &Ctx,
    request: Request<pb::PauseVolunteerRequest>,
) -> Result<pb::Volunteer, Error> {
    let principal = caller(&request)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let until = validate::time(&mut v, "until", &req.until, false);
    let reason = validate::text(&mut v, "reason", &req.reason, 0, 500, false);
    v.check(
        until.is_some_and(|u| u <= ctx.clock.now_micros()),
        "until",
        "must be in the future",
    );
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let vol = change_state(ctx, &principal, &req.name, |vol, _| {
        if vol.state == VolunteerState::Retired {
            return Err(Error::precondition(
                "RETIRED",
                vol.name(),
                "the volunteer has retired",
            ));
        }
        vol.state = VolunteerState::Paused;
        vol.pause_until = until;
        vol.state_reason = reason.clone();
        Ok(Some(pb::VolunteerPaused {
            volunteer: Some(public(vol)),
            reason: reason.clone(),
        }))
    })
    .await?;
    wire(
        ctx,
        &principal,
        &vol,
        "minqing.matching.v1.Volunteers/PauseVolunteer",
    )
    .await
}

pub(super) async fn resume(
    ctx: &Ctx,
    request: Request<pb::ResumeVolunteerRequest>,
) -> Result<pb::Volunteer, Error> {
    let principal = caller(&request)?.clone();
    let vol = change_state(
        ctx,
        &principal,
        &request.get_ref().name,
        |vol, _| match vol.state {
            VolunteerState::Active => Ok(None),
            VolunteerState::Retired => Err(Error::precondition(
                "RETIRED",
                vol.name(),
                "the volunteer has retired",
            )),
            VolunteerState::Paused => {
                vol.state = VolunteerState::Active;
                vol.pause_until = None;
                vol.state_reason.clear();
                Ok(Some(pb::VolunteerResumed {
                    volunteer: Some(public(vol)),
                }))
            }
        },
    )
    .await?;
    wire(
        ctx,
        &principal,
        &vol,
        "minqing.matching.v1.Volunteers/ResumeVolunteer",
    )
    .await
}

pub(super) async fn retire(
    ctx: &Ctx,
    request: Request<pb::RetireVolunteerRequest>,
) -> Result<pb::Volunteer, Error> {
    let principal = caller(&request)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 500, false);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let vol = change_state(ctx, &principal, &req.name, |vol, _| {
        if vol.state == VolunteerState::Retired {
            return Ok(None);
        }
        vol.state = VolunteerState::Retired;
        vol.pause_until = None;
        vol.state_reason = reason.clone();
        Ok(Some(pb::VolunteerRetired {
            volunteer: Some(public(vol)),
            reason: reason.clone(),
        }))
    })
    .await?;
    wire(
        ctx,
        &principal,
        &vol,
        "minqing.matching.v1.Volunteers/RetireVolunteer",
    )
    .await
}

pub(super) async fn import(
    ctx: &Ctx,
    request: Request<pb::ImportVolunteersRequest>,
) -> Result<pb::ImportVolunteersResponse, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    if req.volunteers.is_empty() || req.volunteers.len() > 500 {
        let mut v = FieldViolations::new();
        v.add("volunteers", "give 1 to 500 volunteers");
        return Err(Error::Invalid(v));
    }
    let now = ctx.clock.now_micros();
    let mut results = Vec::with_capacity(req.volunteers.len());
    for (index, row) in req.volunteers.iter().enumerate() {
        let mut result = pb::ImportResult {
            index: index as i32,
            external_id: row.external_id.clone(),
            ..Default::default()
        };
        let mut v = FieldViolations::new();
        v.check(
            row.external_id.trim().is_empty(),
            "external_id",
            "required for imports",
        );
        let checked = profile(ctx, &mut v, "", row, now);
        let refs = match &checked {
            Some(p) if v.is_empty() => {
                if !principal.covers_place(p.home.codes()) {
                    v.add("home", "outside your place scope");
                }
                check_refs(ctx, p, "").await
            }
            _ => Ok(()),
        };
        if let Err(Error::Invalid(more)) = refs {
            for (f, d) in more.violations() {
                v.add(f.clone(), d.clone());
            }
        } else {
            refs?;
        }
        let Some(p) = checked.filter(|_| v.is_empty()) else {
            result.outcome = pb::ImportOutcome::Failed as i32;
            result.violations = v
                .violations()
                .iter()
                .map(|(f, d)| pb::Violation {
                    field: f.clone(),
                    description: d.clone(),
                })
                .collect();
            results.push(result);
            continue;
        };
        // Each row's request id is derived from its external id, so re-running an import is safe.
        let request_id = format!("import:{}", p.external_id);
        let row_hash = hash(row);
        let outcome = match store::volunteers::by_external_id(ctx.db.pool(), &p.external_id).await?
        {
            None => match register(ctx, &principal, request_id, &row_hash, p.clone()).await {
                Ok(Ok((vol, _))) => {
                    result.volunteer = vol.name();
                    pb::ImportOutcome::Created
                }
                Ok(Err(existing)) => {
                    result.volunteer = existing.name();
                    pb::ImportOutcome::Unchanged
                }
                Err(Error::Precondition(_, _, d)) => {
                    result.violations.push(pb::Violation {
                        field: "external_id".into(),
                        description: d,
                    });
                    pb::ImportOutcome::Failed
                }
                Err(e) => return Err(e),
            },
            Some(existing) if !req.update_existing || existing.profile == p => {
                result.volunteer = existing.name();
                pb::ImportOutcome::Unchanged
            }
            Some(existing) => {
                result.volunteer = existing.name();
                let id = existing.id.clone();
                let updated = crate::retry!({
                    let now = ctx.clock.now_micros();
                    let mut tx = ctx.db.begin().await?;
                    let Some(mut vol) = store::volunteers::get(tx.conn(), &id).await? else {
                        return Err(Error::NotFound("volunteer", format!("volunteers/{id}")));
                    };
                    let expected = vol.version;
                    vol.profile = p.clone();
                    vol.update_time = now;
                    vol.version += 1;
                    if !store::volunteers::update(&mut tx, &vol, expected).await? {
                        return Err(Error::Conflict);
                    }
                    let event = pb::VolunteerUpdated {
                        volunteer: Some(public(&vol)),
                        changed_fields: UPDATABLE.iter().map(|s| s.to_string()).collect(),
                    };
                    ops::emit(&mut tx, &principal.actor(), &vol.name(), &event, now).await?;
                    tx.commit().await?;
                    Ok(())
                });
                match updated {
                    Ok(()) => {
                        ctx.index.reload([id]).await?;
                        pb::ImportOutcome::Updated
                    }
                    Err(Error::Store(e)) => return Err(Error::Store(e)),
                    Err(e) => {
                        result.violations.push(pb::Violation {
                            field: String::new(),
                            description: e.to_string(),
                        });
                        pb::ImportOutcome::Failed
                    }
                }
            }
        };
        result.outcome = outcome as i32;
        results.push(result);
    }
    Ok(pb::ImportVolunteersResponse { results })
}
