//! `Indicators`: GetIndicators, RebuildIndicators, GetDeputyReport, ListSystemicProblems.
//! Staff only; a principal scoped to a place sees that place and the places below it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::validate;
use crate::{
    app::Ctx,
    error::Error,
    indicators::{
        hotspot,
        period::{self, Span},
        query::{self, Column, Slice},
        rebuild::{self, Feeds},
    },
};
use minqing_intake::places::Gazetteer;
use minqing_kit::{
    auth::{Principal, Role, caller},
    error::FieldViolations,
    time::to_timestamp,
};
use minqing_proto::minqing::{
    supervision::v1::{self as pb, indicators_server},
    r#type::v1::Channel,
};

/// Who may read indicators.
const READERS: &[Role] = &[
    Role::Supervisor,
    Role::DistrictSystem,
    Role::CommunityStaff,
    Role::WindowStaff,
    Role::GridWorker,
    Role::Deputy,
];
/// Who may read deputies' reports.
const REPORT_READERS: &[Role] = &[Role::Deputy, Role::Supervisor, Role::DistrictSystem];
/// Who may list systemic problems.
const PROBLEM_READERS: &[Role] = &[
    Role::Supervisor,
    Role::DistrictSystem,
    Role::CommunityStaff,
    Role::WindowStaff,
];

/// The `Indicators` service.
#[derive(Debug, Clone)]
pub struct IndicatorsApi {
    /// Shared state.
    pub ctx: Arc<Ctx>,
    /// The feeds a rebuild reads (none when the addresses were not valid).
    pub feeds: Option<Feeds>,
}

/// Checks a place code: known, and at most `deepest` level (1 district … 4 grid).
pub(crate) fn place(
    v: &mut FieldViolations,
    g: &Gazetteer,
    field: &str,
    code: &str,
    deepest: i32,
) -> Option<i32> {
    if code.is_empty() {
        v.add(field, "required");
        return None;
    }
    match g.get(code) {
        None => {
            v.add(field, "not a place of the gazetteer");
            None
        }
        Some(e) if e.level as i32 > deepest => {
            v.add(field, "too small a place for this call");
            None
        }
        Some(e) => Some(e.level as i32),
    }
}

/// Checks a period into `v` under `field`.
pub(crate) fn period_of(
    v: &mut FieldViolations,
    field: &str,
    p: Option<&pb::Period>,
) -> Option<Span> {
    match period::parse(p) {
        Ok(span) => Some(span),
        Err(bad) => {
            for (sub, why) in bad {
                let f = if sub.is_empty() {
                    field.to_string()
                } else {
                    format!("{field}.{sub}")
                };
                v.add(f, why);
            }
            None
        }
    }
}

fn scoped(p: &Principal, g: &Gazetteer, code: &str) -> Result<(), Error> {
    match &p.place_scope {
        Some(scope) if !g.is_within(code, scope) => Err(Error::Denied(
            "OUTSIDE_PLACE_SCOPE",
            format!("{code} is outside the caller's place {scope}"),
        )),
        _ => Ok(()),
    }
}

fn dimension(v: &mut FieldViolations, field: &str, value: i32) -> Option<&'static str> {
    match pb::Dimension::try_from(value) {
        Ok(pb::Dimension::Unspecified) => Some(""),
        Ok(pb::Dimension::Category) => Some("category"),
        Ok(pb::Dimension::Unit) => Some("unit"),
        Ok(pb::Dimension::Channel) => Some("channel"),
        Err(_) => {
            v.add(field, "not a dimension");
            None
        }
    }
}

async fn get(
    ctx: &Ctx,
    r: Request<pb::GetIndicatorsRequest>,
) -> Result<pb::PlaceIndicators, Error> {
    let principal = caller(&r)?.require(READERS)?.clone();
    let req = r.into_inner();
    let g = &ctx.gazetteer;
    let mut v = FieldViolations::new();
    let level = place(&mut v, g, "place", &req.place, 4);
    let span = period_of(&mut v, "period", req.period.as_ref());
    let filter = dimension(&mut v, "filter_dimension", req.filter_dimension);
    let group = dimension(&mut v, "group_by", req.group_by);
    let value = validate::text(&mut v, "filter_value", &req.filter_value, 0, 200, false);
    if let Some(f) = filter {
        v.check(
            f.is_empty() && !value.is_empty(),
            "filter_value",
            "needs filter_dimension",
        );
        v.check(
            !f.is_empty() && value.is_empty(),
            "filter_value",
            "required with filter_dimension",
        );
        if f == "channel" && !value.is_empty() {
            v.check(
                Channel::from_str_name(&value).is_none(),
                "filter_value",
                "not a channel name (e.g. CHANNEL_HOTLINE)",
            );
        }
        if let Some(gr) = group {
            v.check(
                !f.is_empty() && !gr.is_empty() && f != gr,
                "group_by",
                "must be the filter's dimension or unset (rollups are by one dimension at a time)",
            );
        }
    }
    let (Some(level), Some(span), Some(filter), Some(group), true) =
        (level, span, filter, group, v.is_empty())
    else {
        return Err(Error::Invalid(v));
    };
    scoped(&principal, g, &req.place)?;
    let dim = if group.is_empty() { filter } else { group };
    let slice = Slice {
        dim,
        value: (!filter.is_empty()).then_some(value),
    };
    let groups = query::counts(&ctx.db, &req.place, &span, &slice).await?;
    let total = query::total(&groups);
    Ok(pb::PlaceIndicators {
        place: req.place,
        level,
        start_date: span.first.to_string(),
        end_date: span.last.to_string(),
        total: Some(total.figures()),
        groups: if group.is_empty() {
            Vec::new()
        } else {
            groups
                .iter()
                .map(|(value, c)| pb::FiguresGroup {
                    value: value.clone(),
                    figures: Some(c.figures()),
                })
                .collect()
        },
    })
}

async fn rebuild_all(
    api: &IndicatorsApi,
    r: Request<pb::RebuildIndicatorsRequest>,
) -> Result<pb::RebuildIndicatorsResponse, Error> {
    caller(&r)?.require(&[])?;
    let Some(feeds) = &api.feeds else {
        return Err(Error::precondition(
            "FEEDS_UNKNOWN",
            "indicators",
            "intake's or routing's address is not valid: nothing to rebuild from",
        ));
    };
    let out = rebuild::rebuild(&api.ctx.db, feeds).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "rebuilding indicators failed");
        Error::precondition(
            "REBUILD_FAILED",
            "indicators",
            "the feeds could not be read to their end; retry",
        )
    })?;
    tracing::info!(
        events = out.events,
        cases = out.cases,
        rows = out.rows,
        differing = out.differing,
        "indicators rebuilt"
    );
    Ok(pb::RebuildIndicatorsResponse {
        events: out.events,
        cases: out.cases,
        rollup_rows: out.rows,
        differing_rows: out.differing,
    })
}

/// "Outcome" of a case for a report.
fn outcome(f: &crate::indicators::facts::Facts) -> &'static str {
    if f.withdrawn {
        "WITHDRAWN"
    } else if f.resolved {
        "RESOLVED"
    } else if f.referred {
        "REFERRED"
    } else if f.overdue {
        "OVERDUE"
    } else if !f.unit.is_empty() {
        "ROUTED"
    } else {
        "RECEIVED"
    }
}

async fn report(
    ctx: &Ctx,
    r: Request<pb::GetDeputyReportRequest>,
) -> Result<pb::DeputyReport, Error> {
    let principal = caller(&r)?.require(REPORT_READERS)?.clone();
    let req = r.into_inner();
    let g = &ctx.gazetteer;
    let mut v = FieldViolations::new();
    let station = validate::text(
        &mut v,
        "liaison_station",
        &req.liaison_station,
        0,
        100,
        false,
    );
    if !req.district.is_empty() {
        place(&mut v, g, "district", &req.district, 1);
    }
    v.check(
        station.is_empty() == req.district.is_empty(),
        "liaison_station",
        "give exactly one of liaison_station and district",
    );
    let span = period_of(&mut v, "period", req.period.as_ref());
    v.check(
        !(0..=1000).contains(&req.max_cases),
        "max_cases",
        "must be 0 to 1000",
    );
    let (Some(span), true) = (span, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let limit = if req.max_cases == 0 {
        200
    } else {
        i64::from(req.max_cases)
    };
    let range = span.micros();
    let (figures, listed) = if station.is_empty() {
        scoped(&principal, g, &req.district)?;
        if principal.role == Role::Deputy && principal.unit_scope.is_some() {
            return Err(Error::Denied(
                "STATION_DEPUTY",
                "a station's deputy reads the station's report".into(),
            ));
        }
        let groups = query::counts(
            &ctx.db,
            &req.district,
            &span,
            &Slice {
                dim: "",
                value: None,
            },
        )
        .await?;
        let listed = query::cases(
            &ctx.db,
            Column::District,
            &req.district,
            range,
            true,
            limit + 1,
        )
        .await?;
        (query::total(&groups), listed)
    } else {
        if principal.role == Role::Deputy
            && principal
                .unit_scope
                .as_deref()
                .is_some_and(|s| s != station)
        {
            return Err(Error::Denied(
                "OTHER_STATION",
                "a deputy reads only their own station's report".into(),
            ));
        }
        let all = query::cases(&ctx.db, Column::Station, &station, range, true, i64::MAX).await?;
        if let Some(scope) = &principal.place_scope
            && all.iter().any(|f| !g.is_within(&f.community, scope))
        {
            return Err(Error::Denied(
                "OUTSIDE_PLACE_SCOPE",
                "the station's cases are outside the caller's place".into(),
            ));
        }
        (query::counts_of(&all), all)
    };
    let truncated = listed.len() as i64 > limit;
    let shown: Vec<_> = listed.into_iter().take(limit as usize).collect();
    let liaison = if station.is_empty() {
        query::counts_of(
            &query::cases(
                &ctx.db,
                Column::District,
                &req.district,
                range,
                true,
                i64::MAX,
            )
            .await?,
        )
    } else {
        figures
    };
    Ok(pb::DeputyReport {
        liaison_station: station,
        district: req.district,
        start_date: span.first.to_string(),
        end_date: span.last.to_string(),
        figures: Some(figures.figures()),
        liaison_figures: Some(liaison.figures()),
        cases: shown
            .iter()
            .map(|f| pb::ReportedCase {
                case: format!("cases/{}", f.case_id),
                liaison_station: f.station.clone(),
                deputy: f.deputy.clone(),
                category: f.category.clone(),
                community: f.community.clone(),
                unit: f.unit.clone(),
                receive_time: Some(to_timestamp(f.receive_time)),
                answer_time: (f.answer_time > 0).then(|| to_timestamp(f.answer_time)),
                outcome: outcome(f).into(),
                on_time: f.answer_time > 0 && f.on_time,
                rating: f.rating,
                answer: f.answer.clone(),
            })
            .collect(),
        truncated,
    })
}

/// A keyset page token: hex of "{time}:{id}".
pub(crate) fn page_token(
    v: &mut FieldViolations,
    field: &str,
    token: &str,
) -> Option<(i64, String)> {
    if token.is_empty() {
        return None;
    }
    let parsed = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (t, id) = s.split_once(':')?;
            Some((t.parse::<i64>().ok()?, id.to_string()))
        });
    if parsed.is_none() {
        v.add(field, "not a token from a previous response");
    }
    parsed
}

/// The token for the page after `(time, id)`.
pub(crate) fn next_token(time: i64, id: &str) -> String {
    hex::encode(format!("{time}:{id}"))
}

async fn problems(
    ctx: &Ctx,
    r: Request<pb::ListSystemicProblemsRequest>,
) -> Result<pb::ListSystemicProblemsResponse, Error> {
    let principal = caller(&r)?.require(PROBLEM_READERS)?.clone();
    let req = r.into_inner();
    let mut v = FieldViolations::new();
    place(&mut v, &ctx.gazetteer, "district", &req.district, 1);
    v.check(
        !(0..=500).contains(&req.page_size),
        "page_size",
        "must be 0 to 500",
    );
    let after = page_token(&mut v, "page_token", &req.page_token);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    scoped(&principal, &ctx.gazetteer, &req.district)?;
    let size = if req.page_size == 0 {
        50
    } else {
        i64::from(req.page_size)
    };
    let mut list = hotspot::list(&ctx.db, &req.district, after, size + 1).await?;
    let next = if list.len() as i64 > size {
        list.truncate(size as usize);
        list.last()
            .map(|p| next_token(p.raise_time, &p.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListSystemicProblemsResponse {
        problems: list.iter().map(hotspot::Problem::to_proto).collect(),
        next_page_token: next,
    })
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, Error>) -> R<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl indicators_server::Indicators for IndicatorsApi {
    async fn get_indicators(&self, r: Request<pb::GetIndicatorsRequest>) -> R<pb::PlaceIndicators> {
        ok(get(&self.ctx, r).await)
    }
    async fn rebuild_indicators(
        &self,
        r: Request<pb::RebuildIndicatorsRequest>,
    ) -> R<pb::RebuildIndicatorsResponse> {
        ok(rebuild_all(self, r).await)
    }
    async fn get_deputy_report(
        &self,
        r: Request<pb::GetDeputyReportRequest>,
    ) -> R<pb::DeputyReport> {
        ok(report(&self.ctx, r).await)
    }
    async fn list_systemic_problems(
        &self,
        r: Request<pb::ListSystemicProblemsRequest>,
    ) -> R<pb::ListSystemicProblemsResponse> {
        ok(problems(&self.ctx, r).await)
    }
}
