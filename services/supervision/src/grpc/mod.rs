//! Supervision's gRPC surface: `Calendars` (calendars.rs), `Clocks` (clocks.rs), `Replies`
//! (replies.rs) and `Ratings` (ratings.rs). Every handler converts and checks
//! its request first (validate.rs), so the domain never sees proto types.

mod calendars;
mod clocks;
pub mod convert;
pub mod disclosure;
pub mod indicators;
mod ratings;
mod replies;
pub mod validate;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{app::Ctx, clock::Place, error::Error};
use minqing_kit::{
    auth::{Principal, Role},
    error::FieldViolations,
};
use minqing_proto::minqing::supervision::v1::{
    self as pb, calendars_server, clocks_server, ratings_server, replies_server,
};

/// Roles that edit calendars.
pub(crate) const CALENDAR_EDITORS: &[Role] = &[Role::DistrictSystem];

/// Roles that read clocks, replies and appointments (within their place scope).
pub(crate) const READ_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
    Role::Supervisor,
    Role::Deputy,
    Role::Service,
];

/// Roles that record appointed visits.
pub(crate) const VISIT_ROLES: &[Role] = &[Role::GridWorker, Role::CommunityStaff];

/// PERMISSION_DENIED unless the place is within the caller's place scope.
pub(crate) fn check_scope(principal: &Principal, place: &Place, name: &str) -> Result<(), Error> {
    if principal.covers_place(place.codes()) {
        Ok(())
    } else {
        Err(Error::Denied(
            "OUT_OF_SCOPE",
            format!("{name} is outside your place scope"),
        ))
    }
}

/// The column and code for a place code given in a request.
pub(crate) fn place_filter(
    ctx: &Ctx,
    v: &mut FieldViolations,
    field: &str,
    code: &str,
) -> Option<(&'static str, String)> {
    if code.is_empty() {
        return None;
    }
    match ctx.gazetteer.get(code) {
        Some(e) => Some((e.level.field(), code.to_string())),
        None => {
            v.add(field, format!("unknown place code {code}"));
            None
        }
    }
}

/// `minqing.supervision.v1.Clocks`.
#[derive(Debug, Clone)]
pub struct ClocksApi(pub Arc<Ctx>);

/// `minqing.supervision.v1.Replies`.
#[derive(Debug, Clone)]
pub struct RepliesApi(pub Arc<Ctx>);

/// `minqing.supervision.v1.Ratings`.
#[derive(Debug, Clone)]
pub struct RatingsApi(pub Arc<Ctx>);

/// `minqing.supervision.v1.Calendars`.
#[derive(Debug, Clone)]
pub struct CalendarsApi(pub Arc<Ctx>);

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, Error>) -> R<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl calendars_server::Calendars for CalendarsApi {
    async fn get_calendar(&self, r: Request<pb::GetCalendarRequest>) -> R<pb::Calendar> {
        ok(calendars::get(&self.0, r).await)
    }
    async fn list_calendars(
        &self,
        r: Request<pb::ListCalendarsRequest>,
    ) -> R<pb::ListCalendarsResponse> {
        ok(calendars::list(&self.0, r).await)
    }
    async fn update_calendar(&self, r: Request<pb::UpdateCalendarRequest>) -> R<pb::Calendar> {
        ok(calendars::update(&self.0, r).await)
    }
    async fn compute_deadline(
        &self,
        r: Request<pb::ComputeDeadlineRequest>,
    ) -> R<pb::ComputeDeadlineResponse> {
        ok(calendars::compute(&self.0, r).await)
    }
}

#[tonic::async_trait]
impl clocks_server::Clocks for ClocksApi {
    async fn get_clock(&self, r: Request<pb::GetClockRequest>) -> R<pb::CaseClock> {
        ok(clocks::get(&self.0, r).await)
    }
    async fn list_clocks(&self, r: Request<pb::ListClocksRequest>) -> R<pb::ListClocksResponse> {
        ok(clocks::list(&self.0, r).await)
    }
}

#[tonic::async_trait]
impl replies_server::Replies for RepliesApi {
    async fn list_replies(&self, r: Request<pb::ListRepliesRequest>) -> R<pb::ListRepliesResponse> {
        ok(replies::list(&self.0, r).await)
    }
    async fn list_appointments(
        &self,
        r: Request<pb::ListAppointmentsRequest>,
    ) -> R<pb::ListAppointmentsResponse> {
        ok(replies::appointments(&self.0, r).await)
    }
    async fn record_visit(&self, r: Request<pb::RecordVisitRequest>) -> R<pb::Appointment> {
        ok(replies::record_visit(&self.0, r).await)
    }
}

#[tonic::async_trait]
impl ratings_server::Ratings for RatingsApi {
    async fn rate_case(&self, r: Request<pb::RateCaseRequest>) -> R<pb::CaseRating> {
        ok(ratings::rate(&self.0, r).await)
    }
    async fn get_case_rating(&self, r: Request<pb::GetCaseRatingRequest>) -> R<pb::CaseRating> {
        ok(ratings::get(&self.0, r).await)
    }
    async fn score_place(&self, r: Request<pb::ScorePlaceRequest>) -> R<pb::PlaceScore> {
        ok(ratings::score_place(&self.0, r).await)
    }
    async fn summarize_place_scores(
        &self,
        r: Request<pb::SummarizePlaceScoresRequest>,
    ) -> R<pb::SummarizePlaceScoresResponse> {
        ok(ratings::summarize(&self.0, r).await)
    }
    async fn submit_assessment(
        &self,
        r: Request<pb::SubmitAssessmentRequest>,
    ) -> R<pb::Assessment> {
        ok(ratings::assess(&self.0, r).await)
    }
    async fn list_assessments(
        &self,
        r: Request<pb::ListAssessmentsRequest>,
    ) -> R<pb::ListAssessmentsResponse> {
        ok(ratings::list_assessments(&self.0, r).await)
    }
    async fn annotate_case(&self, r: Request<pb::AnnotateCaseRequest>) -> R<pb::Annotation> {
        ok(ratings::annotate(&self.0, r).await)
    }
    async fn list_annotations(
        &self,
        r: Request<pb::ListAnnotationsRequest>,
    ) -> R<pb::ListAnnotationsResponse> {
        ok(ratings::annotations(&self.0, r).await)
    }
}
