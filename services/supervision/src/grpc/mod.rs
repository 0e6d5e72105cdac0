//! Supervision's gRPC surface: `Calendars` (calendars.rs). Every handler converts and checks
//! its request first (validate.rs), so the domain never sees proto types.

mod calendars;
pub mod convert;
pub mod disclosure;
pub mod indicators;
pub mod validate;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{app::Ctx, error::Error};
use minqing_kit::auth::Role;
use minqing_proto::minqing::supervision::v1::{self as pb, calendars_server};

/// Roles that edit calendars.
pub(crate) const CALENDAR_EDITORS: &[Role] = &[Role::DistrictSystem];

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
