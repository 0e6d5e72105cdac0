//! `minqing.liaison.v1.LiaisonStations`: stations, deputies, duty rotas, reception sessions,
//! visits (which become cases through intake's SubmitCase), suggestions and motions, and the
//! cases raised at a station with their outcomes.

use std::sync::Arc;

use prost::Name;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{IntakePeer, READ_ROLES, units::after, units::hash, units::token, validate};
use crate::{
    app::App,
    convert,
    domain::Weekday,
    liaison_store::{
        self as ls, Deputy, Session, Slot, Station, Suggestion, SuggestionStep, Visit,
    },
    store,
    workdays::{format_hhmm, parse_hhmm},
};
use minqing_kit::{
    auth::{Principal, Role, caller},
    db::Tx,
    error::{
        FieldViolations, already_exists, failed_precondition, invalid_field, not_found,
        permission_denied,
    },
    feed::{self, BearerToken, EventMeta},
    time::{Micros, from_timestamp, to_timestamp},
};
use minqing_proto::minqing::{
    intake::v1::{self as ipb, intake_client::IntakeClient},
    liaison::v1 as pb,
};

/// Roles that manage stations, deputies and rotas.
const MANAGE: &[Role] = &[Role::DistrictSystem, Role::CommunityStaff];

/// `minqing.liaison.v1.LiaisonStations`.
#[derive(Debug, Clone)]
pub struct LiaisonApi {
    /// Shared state.
    pub app: Arc<App>,
    /// Intake, where visits become cases.
    pub intake: IntakePeer,
}

fn read_roles() -> Vec<Role> {
    let mut r = READ_ROLES.to_vec();
    r.push(Role::Deputy);
    r
}

/// A deputy's token speaks for its station (`unit_scope`) and, when bound, one deputy.
fn deputy_may(principal: &Principal, station: &str, deputy: Option<&Deputy>) -> bool {
    principal.role == Role::Deputy
        && principal.unit_scope.as_deref() == Some(station)
        && deputy.is_none_or(|d| {
            d.stations.iter().any(|s| s == station)
                && (d.principal.is_empty() || d.principal == principal.name)
        })
}

fn denied() -> Status {
    permission_denied(
        "NOT_YOUR_STATION",
        "a deputy acts only at their own station, as themselves",
    )
}

fn station_pb(s: &Station) -> pb::Station {
    pb::Station {
        name: format!("stations/{}", s.id),
        display_name: s.display_name.clone(),
        place: s.place.clone(),
        address: s.address.clone(),
        active: s.active,
        create_time: Some(to_timestamp(s.create_time)),
        update_time: Some(to_timestamp(s.update_time)),
    }
}

fn deputy_pb(d: &Deputy, personal: bool) -> pb::Deputy {
    pb::Deputy {
        name: format!("deputies/{}", d.id),
        display_name: d.display_name.clone(),
        kind: d.kind,
        stations: d.stations.iter().map(|s| format!("stations/{s}")).collect(),
        body: d.body.clone(),
        phone: if personal {
            d.phone.clone()
        } else {
            String::new()
        },
        active: d.active,
        create_time: Some(to_timestamp(d.create_time)),
        principal: d.principal.clone(),
    }
}

fn rota_pb(station: &str, slots: &[Slot], time: Option<Micros>) -> pb::DutyRota {
    pb::DutyRota {
        station: format!("stations/{station}"),
        slots: slots
            .iter()
            .map(|s| pb::DutySlot {
                day: s.day.wire(),
                start: format_hhmm(s.start),
                end: format_hhmm(s.end),
                deputy: format!("deputies/{}", s.deputy),
            })
            .collect(),
        update_time: time.map(to_timestamp),
    }
}

fn session_pb(s: &Session) -> pb::ReceptionSession {
    pb::ReceptionSession {
        name: format!("sessions/{}", s.id),
        station: format!("stations/{}", s.station),
        kind: s.kind,
        start_time: Some(to_timestamp(s.start_time)),
        end_time: Some(to_timestamp(s.end_time)),
        deputies: s.deputies.iter().map(|d| format!("deputies/{d}")).collect(),
        guests: s.guests.clone(),
        topic: s.topic.clone(),
        state: s.state,
        visit_count: s.visit_count,
        open_time: s.open_time.map(to_timestamp),
        close_time: s.close_time.map(to_timestamp),
        summary: s.summary.clone(),
    }
}

fn visit_pb(v: &Visit) -> pb::Visit {
    pb::Visit {
        name: format!("sessions/{}/visits/{}", v.session, v.id),
        deputy: format!("deputies/{}", v.deputy),
        case: format!("cases/{}", v.case_id),
        title: v.title.clone(),
        create_time: Some(to_timestamp(v.create_time)),
    }
}

fn suggestion_pb(s: &Suggestion) -> pb::Suggestion {
    pb::Suggestion {
        name: format!("suggestions/{}", s.id),
        deputy: format!("deputies/{}", s.deputy),
        station: format!("stations/{}", s.station),
        kind: s.kind,
        title: s.title.clone(),
        body: s.body.clone(),
        cases: s.cases.iter().map(|c| format!("cases/{c}")).collect(),
        addressee: s.addressee.clone(),
        state: s.state,
        response: s.response.clone(),
        history: s
            .history
            .iter()
            .map(|h| pb::SuggestionStep {
                state: h.state,
                note: h.note.clone(),
                time: Some(to_timestamp(h.time)),
                actor: h.actor.clone(),
            })
            .collect(),
        create_time: Some(to_timestamp(s.create_time)),
        update_time: Some(to_timestamp(s.update_time)),
    }
}

async fn emit<M: prost::Message + Name>(
    tx: &mut Tx,
    actor: &str,
    subject: &str,
    event: &M,
    now: Micros,
) -> Result<(), Status> {
    feed::append(tx, &EventMeta::current(actor), subject, event, now).await?;
    Ok(())
}

/// Claims `request_id` for `resource`; the earlier resource when it was used before (the
/// same request) or ALREADY_EXISTS (a different one).
async fn claim(
    tx: &mut Tx,
    principal: &Principal,
    kind: &str,
    request_id: &str,
    hash: &str,
    resource: &str,
    now: Micros,
) -> Result<Option<String>, Status> {
    match store::claim_request(
        tx,
        &format!("{kind}:{}", principal.actor()),
        request_id,
        hash,
        resource,
        now,
    )
    .await?
    {
        None => Ok(None),
        Some((h, r)) if h == hash => Ok(Some(r)),
        Some(_) => Err(already_exists(
            "request",
            request_id,
            "request_id was already used for a different request",
        )),
    }
}

impl LiaisonApi {
    async fn station(
        &self,
        v: &mut FieldViolations,
        field: &str,
        name: &str,
    ) -> Result<Option<Station>, Status> {
        let Some(id) = validate::name(v, field, "stations", name) else {
            return Ok(None);
        };
        match ls::get_station(self.app.db.pool(), &id).await? {
            Some(s) => Ok(Some(s)),
            None => {
                v.add(field, format!("no station {name}"));
                Ok(None)
            }
        }
    }

    async fn session(&self, name: &str) -> Result<Session, Status> {
        let mut v = FieldViolations::new();
        let id = validate::uuid_name(&mut v, "name", "sessions", name);
        v.finish()?;
        ls::get_session(self.app.db.pool(), &id.unwrap_or_default())
            .await?
            .ok_or_else(|| not_found("session", name))
    }

    async fn intake(
        &self,
    ) -> IntakeClient<tonic::codegen::InterceptedService<tonic::transport::Channel, BearerToken>>
    {
        IntakeClient::with_interceptor(
            self.intake.channel.clone(),
            BearerToken::new(&self.intake.token),
        )
    }

    async fn set_session_state(
        &self,
        principal: &Principal,
        name: &str,
        to: pb::SessionState,
        summary: Option<String>,
    ) -> Result<Response<pb::ReceptionSession>, Status> {
        for _ in 0..super::RETRIES {
            let mut s = self.session(name).await?;
            if !(principal.is(MANAGE) || deputy_may(principal, &s.station, None)) {
                return Err(denied());
            }
            let (from, ok) = match to {
                pb::SessionState::Open => (
                    pb::SessionState::Scheduled,
                    s.state == pb::SessionState::Scheduled as i32,
                ),
                _ => (
                    pb::SessionState::Open,
                    s.state == pb::SessionState::Open as i32,
                ),
            };
            if s.state == to as i32 {
                return Ok(Response::new(session_pb(&s)));
            }
            if !ok {
                return Err(failed_precondition(
                    "WRONG_STATE",
                    name,
                    format!(
                        "only a {} session can become {}",
                        from.as_str_name(),
                        to.as_str_name()
                    ),
                ));
            }
            let now = self.app.clock.now_micros();
            let previous = s.state;
            let version = s.version;
            s.state = to as i32;
            s.version += 1;
            match to {
                pb::SessionState::Open => s.open_time = Some(now),
                _ => {
                    s.close_time = Some(now);
                    s.summary = summary.clone().unwrap_or_default();
                }
            }
            let mut tx = self.app.db.begin().await?;
            if !ls::update_session(&mut tx, &s, version).await? {
                continue;
            }
            let event = pb::SessionChanged {
                session: Some(session_pb(&s)),
                previous_state: previous,
            };
            emit(
                &mut tx,
                &principal.actor(),
                &format!("sessions/{}", s.id),
                &event,
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(Response::new(session_pb(&s)));
        }
        Err(Status::aborted("the session kept changing; retry"))
    }
}

fn slots_in(
    v: &mut FieldViolations,
    given: &[pb::DutySlot],
    deputies: &[Deputy],
    station: &str,
) -> Vec<Slot> {
    v.check(given.len() > 100, "slots", "at most 100 slots");
    let mut out: Vec<Slot> = Vec::new();
    for (i, s) in given.iter().enumerate() {
        let at = format!("slots[{i}]");
        let day = Weekday::from_wire(s.day);
        v.check(
            day.is_none(),
            format!("{at}.day"),
            "required: a day of the week",
        );
        let start = parse_hhmm(&s.start);
        let end = parse_hhmm(&s.end);
        v.check(start.is_none(), format!("{at}.start"), "must be HH:MM");
        v.check(end.is_none(), format!("{at}.end"), "must be HH:MM");
        v.check(
            start.zip(end).is_some_and(|(a, b)| a >= b),
            format!("{at}.end"),
            "must be after start",
        );
        let deputy = validate::name(v, &format!("{at}.deputy"), "deputies", &s.deputy);
        if let Some(d) = &deputy {
            v.check(
                !deputies
                    .iter()
                    .any(|x| &x.id == d && x.stations.iter().any(|st| st == station)),
                format!("{at}.deputy"),
                format!("{} is not attached to this station", s.deputy),
            );
        }
        if let (Some(day), Some(start), Some(end), Some(deputy)) = (day, start, end, deputy) {
            if out
                .iter()
                .any(|o| o.deputy == deputy && o.day == day && o.start < end && start < o.end)
            {
                v.add(at.clone(), "overlaps another slot of the same deputy");
            }
            out.push(Slot {
                day,
                start,
                end,
                deputy,
            });
        }
    }
    out.sort_by_key(|s| (s.day, s.start));
    out
}

const SUGGESTION_MOVES: &[(pb::SuggestionState, pb::SuggestionState)] = &[
    (pb::SuggestionState::Draft, pb::SuggestionState::Submitted),
    (pb::SuggestionState::Draft, pb::SuggestionState::Withdrawn),
    (
        pb::SuggestionState::Submitted,
        pb::SuggestionState::Withdrawn,
    ),
    (
        pb::SuggestionState::Submitted,
        pb::SuggestionState::Accepted,
    ),
    (
        pb::SuggestionState::Submitted,
        pb::SuggestionState::Declined,
    ),
    (pb::SuggestionState::Accepted, pb::SuggestionState::Answered),
    (pb::SuggestionState::Answered, pb::SuggestionState::Closed),
    (pb::SuggestionState::Declined, pb::SuggestionState::Closed),
];

#[tonic::async_trait]
impl pb::liaison_stations_server::LiaisonStations for LiaisonApi {
    async fn create_station(
        &self,
        request: Request<pb::CreateStationRequest>,
    ) -> Result<Response<pb::Station>, Status> {
        let principal = caller(&request)?.require(MANAGE)?.clone();
        let req = request.into_inner();
        let k = self
            .app
            .knowledge
            .get()
            .await
            .map_err(super::knowledge_status)?;
        let mut v = FieldViolations::new();
        validate::request_id(&mut v, "request_id", &req.request_id);
        let s = req.station.clone().unwrap_or_default();
        let id = validate::name(&mut v, "station.name", "stations", &s.name);
        let display_name = validate::text(
            &mut v,
            "station.display_name",
            &s.display_name,
            1,
            200,
            false,
        );
        let address = validate::text(&mut v, "station.address", &s.address, 0, 500, false);
        v.check(
            !k.knows_place(&s.place),
            "station.place",
            format!("unknown place code {:?}", s.place),
        );
        v.finish()?;
        let now = self.app.clock.now_micros();
        let station = Station {
            id: id.unwrap_or_default(),
            display_name,
            place: s.place.clone(),
            address,
            active: true,
            create_time: now,
            update_time: now,
        };
        let name = format!("stations/{}", station.id);
        let mut tx = self.app.db.begin().await?;
        if let Some(earlier) = claim(
            &mut tx,
            &principal,
            "station",
            &req.request_id,
            &hash(&req),
            &name,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            let s = ls::get_station(self.app.db.pool(), earlier.trim_start_matches("stations/"))
                .await?
                .ok_or_else(|| not_found("station", &earlier))?;
            return Ok(Response::new(station_pb(&s)));
        }
        if !ls::insert_station(&mut tx, &station).await? {
            return Err(already_exists(
                "station",
                &name,
                format!("{name} already exists"),
            ));
        }
        emit(
            &mut tx,
            &principal.actor(),
            &name,
            &pb::StationChanged {
                station: Some(station_pb(&station)),
                created: true,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(station_pb(&station)))
    }

    async fn get_station(
        &self,
        request: Request<pb::GetStationRequest>,
    ) -> Result<Response<pb::Station>, Status> {
        caller(&request)?.require(&read_roles())?;
        let mut v = FieldViolations::new();
        let s = self
            .station(&mut v, "name", &request.get_ref().name)
            .await?;
        if s.is_none()
            && v.violations()
                .iter()
                .any(|(_, d)| d.starts_with("no station"))
        {
            return Err(not_found("station", &request.get_ref().name));
        }
        v.finish()?;
        s.map(|s| Response::new(station_pb(&s)))
            .ok_or_else(|| not_found("station", &request.get_ref().name))
    }

    async fn list_stations(
        &self,
        request: Request<pb::ListStationsRequest>,
    ) -> Result<Response<pb::ListStationsResponse>, Status> {
        caller(&request)?.require(&read_roles())?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let limit = validate::page_size(&mut v, req.page_size, 100, 500);
        let fp = hash(&pb::ListStationsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let start = after(&mut v, &fp, &req.page_token)
            .unwrap_or("")
            .to_string();
        let k = if req.place.is_empty() {
            None
        } else {
            Some(
                self.app
                    .knowledge
                    .get()
                    .await
                    .map_err(super::knowledge_status)?,
            )
        };
        v.finish()?;
        let mut out = Vec::new();
        let mut cursor = start;
        // Filtering by place happens here, so read on until the page is full.
        loop {
            let batch = ls::list_stations(self.app.db.pool(), &cursor, 500).await?;
            let done = batch.len() < 500;
            for s in batch {
                cursor = s.id.clone();
                let inside = match &k {
                    None => true,
                    Some(k) => k
                        .complete(&place_at(k, &s.place))
                        .map(|p| p.codes().any(|c| c == req.place))
                        .unwrap_or(s.place == req.place),
                };
                if inside {
                    out.push(s);
                }
                if out.len() as i64 > limit {
                    break;
                }
            }
            if done || out.len() as i64 > limit {
                break;
            }
        }
        let next = if out.len() as i64 > limit {
            out.truncate(limit as usize);
            out.last().map(|s| token(&fp, &s.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListStationsResponse {
            stations: out.iter().map(station_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn create_deputy(
        &self,
        request: Request<pb::CreateDeputyRequest>,
    ) -> Result<Response<pb::Deputy>, Status> {
        let principal = caller(&request)?.require(MANAGE)?.clone();
        let req = request.into_inner();
        let d = req.deputy.clone().unwrap_or_default();
        let mut v = FieldViolations::new();
        validate::request_id(&mut v, "request_id", &req.request_id);
        let id = validate::name(&mut v, "deputy.name", "deputies", &d.name);
        let display_name = validate::text(
            &mut v,
            "deputy.display_name",
            &d.display_name,
            1,
            100,
            false,
        );
        v.check(
            pb::DeputyKind::try_from(d.kind).is_err() || d.kind == 0,
            "deputy.kind",
            "required: one of the three kinds",
        );
        v.check(
            d.stations.is_empty() || d.stations.len() > 20,
            "deputy.stations",
            "1 to 20 stations",
        );
        let mut stations = Vec::new();
        for (i, s) in d.stations.iter().enumerate() {
            if let Some(st) = self
                .station(&mut v, &format!("deputy.stations[{i}]"), s)
                .await?
            {
                stations.push(st.id);
            }
        }
        let body = validate::text(&mut v, "deputy.body", &d.body, 0, 200, false);
        let phone = validate::text(&mut v, "deputy.phone", &d.phone, 0, 30, false);
        let bound = validate::text(&mut v, "deputy.principal", &d.principal, 0, 200, false);
        v.finish()?;
        let now = self.app.clock.now_micros();
        let deputy = Deputy {
            id: id.unwrap_or_default(),
            display_name,
            kind: d.kind,
            stations,
            body,
            phone,
            active: true,
            principal: bound,
            create_time: now,
        };
        let name = format!("deputies/{}", deputy.id);
        let mut tx = self.app.db.begin().await?;
        if let Some(earlier) = claim(
            &mut tx,
            &principal,
            "deputy",
            &req.request_id,
            &hash(&req),
            &name,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            let d = ls::get_deputy(self.app.db.pool(), earlier.trim_start_matches("deputies/"))
                .await?
                .ok_or_else(|| not_found("deputy", &earlier))?;
            return Ok(Response::new(deputy_pb(&d, true)));
        }
        if !ls::insert_deputy(&mut tx, &deputy).await? {
            return Err(already_exists(
                "deputy",
                &name,
                format!("{name} already exists"),
            ));
        }
        emit(
            &mut tx,
            &principal.actor(),
            &name,
            &pb::DeputyChanged {
                deputy: Some(deputy_pb(&deputy, false)),
                created: true,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(deputy_pb(&deputy, true)))
    }

    async fn get_deputy(
        &self,
        request: Request<pb::GetDeputyRequest>,
    ) -> Result<Response<pb::Deputy>, Status> {
        let principal = caller(&request)?.require(&read_roles())?.clone();
        let name = request.into_inner().name;
        let mut v = FieldViolations::new();
        let id = validate::name(&mut v, "name", "deputies", &name);
        v.finish()?;
        let d = ls::get_deputy(self.app.db.pool(), &id.unwrap_or_default())
            .await?
            .ok_or_else(|| not_found("deputy", &name))?;
        Ok(Response::new(deputy_pb(
            &d,
            principal.is(super::STAFF_ROLES),
        )))
    }

    async fn list_deputies(
        &self,
        request: Request<pb::ListDeputiesRequest>,
    ) -> Result<Response<pb::ListDeputiesResponse>, Status> {
        let principal = caller(&request)?.require(&read_roles())?.clone();
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let limit = validate::page_size(&mut v, req.page_size, 100, 500);
        let station = if req.station.is_empty() {
            None
        } else {
            validate::name(&mut v, "station", "stations", &req.station)
        };
        let fp = hash(&pb::ListDeputiesRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let start = after(&mut v, &fp, &req.page_token)
            .unwrap_or("")
            .to_string();
        v.finish()?;
        let kind = (req.kind != 0).then_some(req.kind);
        let mut list = ls::list_deputies(
            self.app.db.pool(),
            station.as_deref(),
            kind,
            &start,
            limit + 1,
        )
        .await?;
        let next = if list.len() as i64 > limit {
            list.truncate(limit as usize);
            list.last().map(|d| token(&fp, &d.id)).unwrap_or_default()
        } else {
            String::new()
        };
        let personal = principal.is(super::STAFF_ROLES);
        Ok(Response::new(pb::ListDeputiesResponse {
            deputies: list.iter().map(|d| deputy_pb(d, personal)).collect(),
            next_page_token: next,
        }))
    }

    async fn set_duty_rota(
        &self,
        request: Request<pb::SetDutyRotaRequest>,
    ) -> Result<Response<pb::DutyRota>, Status> {
        let principal = caller(&request)?.require(MANAGE)?.clone();
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let station = self.station(&mut v, "station", &req.station).await?;
        let deputies = match &station {
            Some(s) => ls::list_deputies(self.app.db.pool(), Some(&s.id), None, "", 1000).await?,
            None => Vec::new(),
        };
        let slots = slots_in(
            &mut v,
            &req.slots,
            &deputies,
            station.as_ref().map_or("", |s| s.id.as_str()),
        );
        v.finish()?;
        let Some(station) = station else {
            return Err(invalid_field("station", "required"));
        };
        let now = self.app.clock.now_micros();
        let mut tx = self.app.db.begin().await?;
        ls::set_rota(&mut tx, &station.id, &slots, now).await?;
        let rota = rota_pb(&station.id, &slots, Some(now));
        emit(
            &mut tx,
            &principal.actor(),
            &format!("stations/{}", station.id),
            &pb::DutyRotaSet {
                rota: Some(rota.clone()),
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(rota))
    }

    async fn get_duty_rota(
        &self,
        request: Request<pb::GetDutyRotaRequest>,
    ) -> Result<Response<pb::DutyRota>, Status> {
        caller(&request)?.require(&read_roles())?;
        let mut v = FieldViolations::new();
        let station = self
            .station(&mut v, "station", &request.get_ref().station)
            .await?;
        v.finish()?;
        let Some(station) = station else {
            return Err(invalid_field("station", "required"));
        };
        let (slots, time) = ls::get_rota(self.app.db.pool(), &station.id)
            .await?
            .map_or((Vec::new(), None), |(s, t)| (s, Some(t)));
        Ok(Response::new(rota_pb(&station.id, &slots, time)))
    }

    async fn schedule_session(
        &self,
        request: Request<pb::ScheduleSessionRequest>,
    ) -> Result<Response<pb::ReceptionSession>, Status> {
        let principal = caller(&request)?
            .require(&[Role::DistrictSystem, Role::CommunityStaff, Role::Deputy])?
            .clone();
        let req = request.into_inner();
        let s = req.session.clone().unwrap_or_default();
        let mut v = FieldViolations::new();
        validate::request_id(&mut v, "request_id", &req.request_id);
        let station = self.station(&mut v, "session.station", &s.station).await?;
        v.check(
            pb::SessionKind::try_from(s.kind).is_err() || s.kind == 0,
            "session.kind",
            "required: weekly, monthly reception day or half-yearly forum",
        );
        let start = s.start_time.as_ref().and_then(from_timestamp);
        let end = s.end_time.as_ref().and_then(from_timestamp);
        v.check(
            start.is_none(),
            "session.start_time",
            "required: a valid time",
        );
        v.check(end.is_none(), "session.end_time", "required: a valid time");
        v.check(
            start.zip(end).is_some_and(|(a, b)| a >= b),
            "session.end_time",
            "must be after start_time",
        );
        v.check(
            s.deputies.is_empty() || s.deputies.len() > 50,
            "session.deputies",
            "1 to 50 deputies",
        );
        let mut deputies = Vec::new();
        for (i, d) in s.deputies.iter().enumerate() {
            let field = format!("session.deputies[{i}]");
            if let Some(id) = validate::name(&mut v, &field, "deputies", d) {
                match ls::get_deputy(self.app.db.pool(), &id).await? {
                    Some(dep)
                        if station
                            .as_ref()
                            .is_some_and(|st| dep.stations.contains(&st.id)) =>
                    {
                        deputies.push(dep.id)
                    }
                    Some(_) => v.add(field, format!("{d} is not attached to the station")),
                    None => v.add(field, format!("no deputy {d}")),
                }
            }
        }
        v.check(s.guests.len() > 50, "session.guests", "at most 50 guests");
        let guests: Vec<String> = s
            .guests
            .iter()
            .enumerate()
            .map(|(i, g)| validate::text(&mut v, &format!("session.guests[{i}]"), g, 1, 200, false))
            .collect();
        let topic = validate::text(&mut v, "session.topic", &s.topic, 0, 200, false);
        v.finish()?;
        let Some(station) = station else {
            return Err(invalid_field("session.station", "required"));
        };
        if principal.role == Role::Deputy && !deputy_may(&principal, &station.id, None) {
            return Err(denied());
        }
        let now = self.app.clock.now_micros();
        let session = Session {
            id: uuid::Uuid::now_v7().to_string(),
            station: station.id.clone(),
            kind: s.kind,
            start_time: start.unwrap_or_default(),
            end_time: end.unwrap_or_default(),
            deputies,
            guests,
            topic,
            state: pb::SessionState::Scheduled as i32,
            visit_count: 0,
            open_time: None,
            close_time: None,
            summary: String::new(),
            version: 1,
        };
        let name = format!("sessions/{}", session.id);
        let mut tx = self.app.db.begin().await?;
        if let Some(earlier) = claim(
            &mut tx,
            &principal,
            "session",
            &req.request_id,
            &hash(&req),
            &name,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(Response::new(session_pb(&self.session(&earlier).await?)));
        }
        ls::insert_session(&mut tx, &session).await?;
        emit(
            &mut tx,
            &principal.actor(),
            &name,
            &pb::SessionChanged {
                session: Some(session_pb(&session)),
                previous_state: 0,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(session_pb(&session)))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::ReceptionSession>, Status> {
        caller(&request)?.require(&read_roles())?;
        let s = self.session(&request.get_ref().name).await?;
        Ok(Response::new(session_pb(&s)))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        caller(&request)?.require(&read_roles())?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let station = validate::name(&mut v, "station", "stations", &req.station);
        let fp = hash(&pb::ListSessionsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let below = after(&mut v, &fp, &req.page_token).map(str::to_owned);
        v.finish()?;
        let mut list = ls::list_sessions(
            self.app.db.pool(),
            &station.unwrap_or_default(),
            below.as_deref(),
            limit + 1,
        )
        .await?;
        let next = if list.len() as i64 > limit {
            list.truncate(limit as usize);
            list.last().map(|s| token(&fp, &s.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: list.iter().map(session_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::ReceptionSession>, Status> {
        let principal = caller(&request)?.clone();
        self.set_session_state(
            &principal,
            &request.get_ref().name,
            pb::SessionState::Open,
            None,
        )
        .await
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::ReceptionSession>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let summary = validate::text(&mut v, "summary", &req.summary, 0, 4000, true);
        v.finish()?;
        self.set_session_state(
            &principal,
            &req.name,
            pb::SessionState::Closed,
            Some(summary),
        )
        .await
    }

    async fn record_visit(
        &self,
        request: Request<pb::RecordVisitRequest>,
    ) -> Result<Response<pb::Visit>, Status> {
        let principal = caller(&request)?
            .require(&[
                Role::DistrictSystem,
                Role::CommunityStaff,
                Role::WindowStaff,
                Role::Deputy,
            ])?
            .clone();
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        validate::request_id(&mut v, "request_id", &req.request_id);
        let session_id = validate::uuid_name(&mut v, "session", "sessions", &req.session);
        let deputy_id = validate::name(&mut v, "deputy", "deputies", &req.deputy);
        v.finish()?;
        let session = ls::get_session(self.app.db.pool(), &session_id.unwrap_or_default())
            .await?
            .ok_or_else(|| not_found("session", &req.session))?;
        let deputy_id = deputy_id.unwrap_or_default();
        let deputy = ls::get_deputy(self.app.db.pool(), &deputy_id)
            .await?
            .ok_or_else(|| not_found("deputy", &req.deputy))?;
        if principal.role == Role::Deputy
            && !deputy_may(&principal, &session.station, Some(&deputy))
        {
            return Err(denied());
        }
        if !session.deputies.contains(&deputy_id) {
            return Err(invalid_field(
                "deputy",
                format!("{} does not receive at this session", req.deputy),
            ));
        }
        if session.state != pb::SessionState::Open as i32 {
            return Err(failed_precondition(
                "SESSION_NOT_OPEN",
                &req.session,
                "visits are recorded only while the session is open",
            ));
        }
        let hash = hash(&req);
        let scope = format!("visit:{}", principal.actor());
        // The intake request id is derived from the caller and its request id, so a retry
        // submits the same case (intake is idempotent by request id).
        let key = hex::encode(Sha256::digest(
            format!("{scope}\n{}", req.request_id).as_bytes(),
        ));
        let visit_id = uuid::Uuid::from_slice(&Sha256::digest(key.as_bytes())[..16])
            .unwrap_or_default()
            .to_string();
        let submit = ipb::SubmitCaseRequest {
            request_id: format!("liaison-{}", &key[..40]),
            channel: minqing_proto::minqing::r#type::v1::Channel::LiaisonStation as i32,
            channel_details: Some(ipb::ChannelDetails {
                deputy: deputy_id.clone(),
                liaison_station: session.station.clone(),
                ..Default::default()
            }),
            reporter: req.reporter.clone(),
            place: req.place.clone(),
            category: req.category.clone(),
            title: req.title.clone(),
            description: req.description.clone(),
            attachments: req.attachments.clone(),
            urgency: req.urgency,
            occur_time: None,
        };
        let case = self.intake().await.submit_case(submit).await?.into_inner();
        let case_id = case.name.trim_start_matches("cases/").to_string();
        let visit = Visit {
            id: visit_id.clone(),
            session: session.id.clone(),
            deputy: deputy_id.clone(),
            case_id: case_id.clone(),
            title: case.title.clone(),
            create_time: self.app.clock.now_micros(),
        };
        for _ in 0..super::RETRIES {
            let now = self.app.clock.now_micros();
            let mut tx = self.app.db.begin().await?;
            let resource = format!("sessions/{}/visits/{visit_id}", session.id);
            if store::claim_request(&mut tx, &scope, &req.request_id, &hash, &resource, now)
                .await?
                .is_some_and(|(h, _)| h != hash)
            {
                return Err(already_exists(
                    "request",
                    &req.request_id,
                    "request_id was already used for a different request",
                ));
            }
            if !ls::insert_visit(&mut tx, &visit).await? {
                tx.rollback().await?;
                let existing = ls::get_visit(self.app.db.pool(), &visit_id)
                    .await?
                    .unwrap_or(visit.clone());
                return Ok(Response::new(visit_pb(&existing)));
            }
            ls::insert_station_case(
                &mut tx,
                &case_id,
                &session.station,
                &deputy_id,
                &case.title,
                &case.category,
                now,
            )
            .await?;
            let Some(mut s) = ls::get_session(tx.conn(), &session.id).await? else {
                return Err(not_found("session", &req.session));
            };
            let version = s.version;
            s.visit_count += 1;
            s.version += 1;
            if !ls::update_session(&mut tx, &s, version).await? {
                continue;
            }
            let event = pb::VisitRecorded {
                visit: Some(visit_pb(&visit)),
                station: format!("stations/{}", session.station),
            };
            emit(
                &mut tx,
                &principal.actor(),
                &format!("sessions/{}", session.id),
                &event,
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(Response::new(visit_pb(&visit)));
        }
        Err(Status::aborted("the session kept changing; retry"))
    }

    async fn list_visits(
        &self,
        request: Request<pb::ListVisitsRequest>,
    ) -> Result<Response<pb::ListVisitsResponse>, Status> {
        caller(&request)?.require(&read_roles())?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let limit = validate::page_size(&mut v, req.page_size, 100, 500);
        let session = validate::uuid_name(&mut v, "session", "sessions", &req.session);
        let fp = hash(&pb::ListVisitsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let start = after(&mut v, &fp, &req.page_token)
            .unwrap_or("")
            .to_string();
        v.finish()?;
        let mut list = ls::list_visits(
            self.app.db.pool(),
            &session.unwrap_or_default(),
            &start,
            limit + 1,
        )
        .await?;
        let next = if list.len() as i64 > limit {
            list.truncate(limit as usize);
            list.last().map(|x| token(&fp, &x.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListVisitsResponse {
            visits: list.iter().map(visit_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn create_suggestion(
        &self,
        request: Request<pb::CreateSuggestionRequest>,
    ) -> Result<Response<pb::Suggestion>, Status> {
        let principal = caller(&request)?
            .require(&[Role::DistrictSystem, Role::CommunityStaff, Role::Deputy])?
            .clone();
        let req = request.into_inner();
        let s = req.suggestion.clone().unwrap_or_default();
        let mut v = FieldViolations::new();
        validate::request_id(&mut v, "request_id", &req.request_id);
        let deputy_id = validate::name(&mut v, "suggestion.deputy", "deputies", &s.deputy);
        let station = self
            .station(&mut v, "suggestion.station", &s.station)
            .await?;
        v.check(
            pb::SuggestionKind::try_from(s.kind).is_err() || s.kind == 0,
            "suggestion.kind",
            "required: suggestion or motion",
        );
        let title = validate::text(&mut v, "suggestion.title", &s.title, 1, 200, false);
        let body = validate::text(&mut v, "suggestion.body", &s.body, 1, 10_000, true);
        let addressee = validate::text(&mut v, "suggestion.addressee", &s.addressee, 0, 200, false);
        v.check(s.cases.len() > 100, "suggestion.cases", "at most 100 cases");
        let cases: Vec<String> = s
            .cases
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                validate::uuid_name(&mut v, &format!("suggestion.cases[{i}]"), "cases", c)
            })
            .collect();
        v.finish()?;
        let deputy_id = deputy_id.unwrap_or_default();
        let deputy = ls::get_deputy(self.app.db.pool(), &deputy_id)
            .await?
            .ok_or_else(|| invalid_field("suggestion.deputy", format!("no deputy {}", s.deputy)))?;
        let Some(station) = station else {
            return Err(invalid_field("suggestion.station", "required"));
        };
        if !deputy.stations.contains(&station.id) {
            return Err(invalid_field(
                "suggestion.station",
                "the deputy is not attached to this station",
            ));
        }
        if principal.role == Role::Deputy && !deputy_may(&principal, &station.id, Some(&deputy)) {
            return Err(denied());
        }
        let now = self.app.clock.now_micros();
        let suggestion = Suggestion {
            id: uuid::Uuid::now_v7().to_string(),
            deputy: deputy_id,
            station: station.id.clone(),
            kind: s.kind,
            title,
            body,
            cases,
            addressee,
            state: pb::SuggestionState::Draft as i32,
            response: String::new(),
            history: vec![SuggestionStep {
                state: pb::SuggestionState::Draft as i32,
                note: String::new(),
                time: now,
                actor: principal.actor(),
            }],
            create_time: now,
            update_time: now,
            version: 1,
        };
        let name = format!("suggestions/{}", suggestion.id);
        let mut tx = self.app.db.begin().await?;
        if let Some(earlier) = claim(
            &mut tx,
            &principal,
            "suggestion",
            &req.request_id,
            &hash(&req),
            &name,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            let s = ls::get_suggestion(
                self.app.db.pool(),
                earlier.trim_start_matches("suggestions/"),
            )
            .await?
            .ok_or_else(|| not_found("suggestion", &earlier))?;
            return Ok(Response::new(suggestion_pb(&s)));
        }
        ls::insert_suggestion(&mut tx, &suggestion).await?;
        emit(
            &mut tx,
            &principal.actor(),
            &name,
            &pb::SuggestionChanged {
                suggestion: Some(suggestion_pb(&suggestion)),
                previous_state: 0,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(suggestion_pb(&suggestion)))
    }

    async fn get_suggestion(
        &self,
        request: Request<pb::GetSuggestionRequest>,
    ) -> Result<Response<pb::Suggestion>, Status> {
        caller(&request)?.require(&read_roles())?;
        let name = request.into_inner().name;
        let mut v = FieldViolations::new();
        let id = validate::uuid_name(&mut v, "name", "suggestions", &name);
        v.finish()?;
        let s = ls::get_suggestion(self.app.db.pool(), &id.unwrap_or_default())
            .await?
            .ok_or_else(|| not_found("suggestion", &name))?;
        Ok(Response::new(suggestion_pb(&s)))
    }

    async fn list_suggestions(
        &self,
        request: Request<pb::ListSuggestionsRequest>,
    ) -> Result<Response<pb::ListSuggestionsResponse>, Status> {
        caller(&request)?.require(&read_roles())?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let deputy = if req.deputy.is_empty() {
            None
        } else {
            validate::name(&mut v, "deputy", "deputies", &req.deputy)
        };
        let station = if req.station.is_empty() {
            None
        } else {
            validate::name(&mut v, "station", "stations", &req.station)
        };
        let fp = hash(&pb::ListSuggestionsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let mut below = after(&mut v, &fp, &req.page_token).map(str::to_owned);
        v.finish()?;
        let mut out = Vec::new();
        loop {
            let batch = ls::list_suggestions(
                self.app.db.pool(),
                deputy.as_deref(),
                station.as_deref(),
                below.as_deref(),
                500,
            )
            .await?;
            let done = batch.len() < 500;
            for s in batch {
                below = Some(s.id.clone());
                if req.states.is_empty() || req.states.contains(&s.state) {
                    out.push(s);
                }
            }
            if done || out.len() as i64 > limit {
                break;
            }
        }
        let next = if out.len() as i64 > limit {
            out.truncate(limit as usize);
            out.last().map(|s| token(&fp, &s.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSuggestionsResponse {
            suggestions: out.iter().map(suggestion_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn advance_suggestion(
        &self,
        request: Request<pb::AdvanceSuggestionRequest>,
    ) -> Result<Response<pb::Suggestion>, Status> {
        let principal = caller(&request)?
            .require(&[Role::DistrictSystem, Role::CommunityStaff, Role::Deputy])?
            .clone();
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let id = validate::uuid_name(&mut v, "name", "suggestions", &req.name);
        let to = pb::SuggestionState::try_from(req.state)
            .ok()
            .filter(|s| *s != pb::SuggestionState::Unspecified);
        v.check(to.is_none(), "state", "required: the state to enter");
        let needs_note = matches!(
            to,
            Some(pb::SuggestionState::Declined | pb::SuggestionState::Answered)
        );
        let note = validate::text(
            &mut v,
            "note",
            &req.note,
            usize::from(needs_note),
            4000,
            true,
        );
        v.finish()?;
        let (id, to) = (
            id.unwrap_or_default(),
            to.unwrap_or(pb::SuggestionState::Draft),
        );
        for _ in 0..super::RETRIES {
            let mut s = ls::get_suggestion(self.app.db.pool(), &id)
                .await?
                .ok_or_else(|| not_found("suggestion", &req.name))?;
            let from =
                pb::SuggestionState::try_from(s.state).unwrap_or(pb::SuggestionState::Unspecified);
            if !SUGGESTION_MOVES.contains(&(from, to)) {
                return Err(failed_precondition(
                    "WRONG_STATE",
                    &req.name,
                    format!(
                        "a {} suggestion cannot become {}",
                        from.as_str_name(),
                        to.as_str_name()
                    ),
                ));
            }
            // The deputy submits, withdraws and closes; the handling body's staff accept,
            // decline and answer.
            let deputy_move = matches!(
                to,
                pb::SuggestionState::Submitted
                    | pb::SuggestionState::Withdrawn
                    | pb::SuggestionState::Closed
            );
            if principal.role == Role::Deputy {
                let deputy = ls::get_deputy(self.app.db.pool(), &s.deputy).await?;
                if !deputy_move || !deputy_may(&principal, &s.station, deputy.as_ref()) {
                    return Err(denied());
                }
            }
            let now = self.app.clock.now_micros();
            let version = s.version;
            s.state = to as i32;
            if to == pb::SuggestionState::Answered {
                s.response = note.clone();
            }
            s.history.push(SuggestionStep {
                state: to as i32,
                note: note.clone(),
                time: now,
                actor: principal.actor(),
            });
            s.update_time = now;
            s.version += 1;
            let mut tx = self.app.db.begin().await?;
            if !ls::update_suggestion(&mut tx, &s, version).await? {
                continue;
            }
            let event = pb::SuggestionChanged {
                suggestion: Some(suggestion_pb(&s)),
                previous_state: from as i32,
            };
            emit(
                &mut tx,
                &principal.actor(),
                &format!("suggestions/{}", s.id),
                &event,
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(Response::new(suggestion_pb(&s)));
        }
        Err(Status::aborted("the suggestion kept changing; retry"))
    }

    async fn list_station_cases(
        &self,
        request: Request<pb::ListStationCasesRequest>,
    ) -> Result<Response<pb::ListStationCasesResponse>, Status> {
        let principal = caller(&request)?.require(&read_roles())?.clone();
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let station = validate::name(&mut v, "station", "stations", &req.station);
        let deputy = if req.deputy.is_empty() {
            None
        } else {
            validate::name(&mut v, "deputy", "deputies", &req.deputy)
        };
        let fp = hash(&pb::ListStationCasesRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let below = after(&mut v, &fp, &req.page_token).map(str::to_owned);
        v.finish()?;
        let station = station.unwrap_or_default();
        if principal.role == Role::Deputy && !deputy_may(&principal, &station, None) {
            return Err(denied());
        }
        let mut rows = ls::list_station_cases(
            self.app.db.pool(),
            &station,
            deputy.as_deref(),
            below.as_deref(),
            limit + 1,
        )
        .await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| token(&fp, &r.0)).unwrap_or_default()
        } else {
            String::new()
        };
        let mut cases = Vec::with_capacity(rows.len());
        for (case_id, deputy, title, category, time) in rows {
            let route = store::get_route(self.app.db.pool(), &case_id).await?;
            cases.push(pb::StationCase {
                case: format!("cases/{case_id}"),
                deputy: if deputy.is_empty() {
                    String::new()
                } else {
                    format!("deputies/{deputy}")
                },
                title,
                category,
                route: route.as_ref().map(|r| convert::route(r, Vec::new())),
                create_time: Some(to_timestamp(time)),
            });
        }
        Ok(Response::new(pb::ListStationCasesResponse {
            cases,
            next_page_token: next,
        }))
    }
}

/// A place with only the given code set at its own level (for completing upward).
fn place_at(k: &crate::knowledge::Knowledge, code: &str) -> crate::domain::Place {
    let mut p = crate::domain::Place::default();
    if let Some(info) = k.places.get(code) {
        *p.code_mut(info.level) = code.to_string();
    }
    p
}
