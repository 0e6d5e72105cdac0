//! `Disclosure`: the public's anonymised view — no token needed. Nothing personal leaves:
//! cases are shown by an opaque reference, at most to their community, with category, state,
//! dates (to the day) and the answer; never the reporter, the text the resident wrote, the
//! building or the address.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::indicators::{next_token, page_token, period_of, place};
use crate::{
    app::Ctx,
    error::Error,
    indicators::{
        facts::Facts,
        period,
        query::{self, Column, Slice},
    },
};
use minqing_kit::error::FieldViolations;
use minqing_proto::minqing::supervision::v1::{self as pb, disclosure_server};

/// The `Disclosure` service.
#[derive(Debug, Clone)]
pub struct DisclosureApi(pub Arc<Ctx>);

/// A stable reference that does not reveal the case's name.
pub fn reference(case_id: &str) -> String {
    let digest = Sha256::digest(format!("minqing-disclosure:{case_id}").as_bytes());
    hex::encode(&digest[..8])
}

fn state(f: &Facts) -> &'static str {
    if f.withdrawn {
        "WITHDRAWN"
    } else if f.resolved {
        "RESOLVED"
    } else if f.referred {
        "REFERRED"
    } else if !f.unit.is_empty() {
        "IN_HAND"
    } else {
        "RECEIVED"
    }
}

fn date(micros: i64) -> String {
    if micros <= 0 {
        return String::new();
    }
    let d = period::day_of(micros);
    format!("{:04}-{:02}-{:02}", d / 10_000, d / 100 % 100, d % 100)
}

async fn list(
    ctx: &Ctx,
    r: Request<pb::ListPublicCasesRequest>,
) -> Result<pb::ListPublicCasesResponse, Error> {
    let req = r.into_inner();
    let g = &ctx.gazetteer;
    let mut v = FieldViolations::new();
    let level = place(&mut v, g, "place", &req.place, 3);
    let category = super::validate::text(&mut v, "category", &req.category, 0, 100, false);
    v.check(
        !(0..=200).contains(&req.page_size),
        "page_size",
        "must be 0 to 200",
    );
    let after = page_token(&mut v, "page_token", &req.page_token);
    let (Some(level), true) = (level, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let column = match level {
        1 => Column::District,
        2 => Column::Street,
        _ => Column::Community,
    };
    let size = if req.page_size == 0 {
        50
    } else {
        i64::from(req.page_size)
    };
    let cat = (!category.is_empty()).then_some(category.as_str());
    let mut rows = query::public_cases(&ctx.db, column, &req.place, cat, after, size + 1).await?;
    let next = if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last()
            .map(|f| next_token(f.receive_time, &f.case_id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListPublicCasesResponse {
        cases: rows
            .iter()
            .map(|f| pb::PublicCase {
                reference: reference(&f.case_id),
                district: f.district.clone(),
                street: f.street.clone(),
                community: f.community.clone(),
                community_name: g
                    .get(&f.community)
                    .map(|e| e.name.clone())
                    .unwrap_or_default(),
                category: f.category.clone(),
                state: state(f).into(),
                receive_date: date(f.receive_time),
                answer_date: if f.withdrawn {
                    String::new()
                } else {
                    date(f.answer_time)
                },
                on_time: f.answer_time > 0 && f.on_time && !f.withdrawn,
                answer_summary: if f.withdrawn {
                    String::new()
                } else {
                    f.answer.clone()
                },
            })
            .collect(),
        next_page_token: next,
    })
}

async fn summary(
    ctx: &Ctx,
    r: Request<pb::GetPublicSummaryRequest>,
) -> Result<pb::PublicSummary, Error> {
    let req = r.into_inner();
    let mut v = FieldViolations::new();
    place(&mut v, &ctx.gazetteer, "place", &req.place, 3);
    let span = period_of(&mut v, "period", req.period.as_ref());
    let (Some(span), true) = (span, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let by = query::counts(
        &ctx.db,
        &req.place,
        &span,
        &Slice {
            dim: "category",
            value: None,
        },
    )
    .await?;
    Ok(pb::PublicSummary {
        place: req.place,
        start_date: span.first.to_string(),
        end_date: span.last.to_string(),
        figures: Some(query::total(&by).figures()),
        by_category: by
            .iter()
            .map(|(value, c)| pb::FiguresGroup {
                value: value.clone(),
                figures: Some(c.figures()),
            })
            .collect(),
    })
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, Error>) -> R<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl disclosure_server::Disclosure for DisclosureApi {
    async fn list_public_cases(
        &self,
        r: Request<pb::ListPublicCasesRequest>,
    ) -> R<pb::ListPublicCasesResponse> {
        ok(list(&self.0, r).await)
    }
    async fn get_public_summary(
        &self,
        r: Request<pb::GetPublicSummaryRequest>,
    ) -> R<pb::PublicSummary> {
        ok(summary(&self.0, r).await)
    }
}
