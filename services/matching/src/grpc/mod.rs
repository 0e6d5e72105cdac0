//! Matching's gRPC surface: `Volunteers` (volunteers.rs, bodies.rs), `Needs` (needs.rs,
//! claims in work.rs), `Matching` (matching.rs, work.rs) and `ServiceRecords` (records.rs).

mod bodies;
pub mod convert;
mod matching;
mod needs;
mod records;
pub mod validate;
mod volunteers;
mod work;

use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::{
    domain::{Assignee, AssigneeKind, Place, Volunteer},
    error::Error,
    ops::Ctx,
};
use minqing_kit::auth::{Principal, Role};
use minqing_proto::minqing::matching::v1::{
    self as pb, matching_server, needs_server, service_records_server, volunteers_server,
};

/// Community staff: they coordinate volunteers, publish menus and settle claims.
pub(crate) const STAFF: &[Role] = &[Role::CommunityStaff];
/// Roles that may post needs.
pub(crate) const POSTERS: &[Role] = &[
    Role::CommunityStaff,
    Role::GridWorker,
    Role::DistrictSystem,
    Role::Service,
];
/// Roles that read volunteers, teams and organisations (without personal data).
pub(crate) const READERS: &[Role] = &[
    Role::CommunityStaff,
    Role::GridWorker,
    Role::DistrictSystem,
    Role::Supervisor,
    Role::Service,
];
/// Roles that read the menu (volunteers and partners see only OPEN and FILLED needs).
pub(crate) const MENU_READERS: &[Role] = &[
    Role::CommunityStaff,
    Role::GridWorker,
    Role::DistrictSystem,
    Role::Supervisor,
    Role::Service,
    Role::WindowStaff,
    Role::Deputy,
    Role::Volunteer,
    Role::PartnerUnit,
];
/// Roles that record residents' ratings.
pub(crate) const RATERS: &[Role] = &[
    Role::CommunityStaff,
    Role::GridWorker,
    Role::WindowStaff,
    Role::DistrictSystem,
    Role::Service,
];

pub(crate) fn hash<M: Message>(m: &M) -> String {
    hex::encode(Sha256::digest(m.encode_to_vec()))
}

/// Community staff (or the city admin) whose scope covers `place`.
pub(crate) fn staff_over(p: &Principal, place: &Place) -> bool {
    p.is(STAFF) && p.covers_place(place.codes())
}

/// PERMISSION_DENIED unless `place` is within the principal's scope.
pub(crate) fn in_scope(p: &Principal, place: &Place) -> Result<(), Error> {
    if p.covers_place(place.codes()) {
        Ok(())
    } else {
        Err(Error::Denied(
            "OUT_OF_SCOPE",
            "that is outside your place scope".into(),
        ))
    }
}

/// The volunteer a volunteer token speaks for.
pub(crate) fn own_volunteer(p: &Principal) -> Option<&str> {
    (p.role == Role::Volunteer)
        .then(|| p.unit_scope.as_deref()?.strip_prefix("volunteers/"))
        .flatten()
}

/// The organisation a partner-unit token speaks for.
pub(crate) fn own_organisation(p: &Principal) -> Option<&str> {
    (p.role == Role::PartnerUnit)
        .then(|| p.unit_scope.as_deref()?.strip_prefix("organisations/"))
        .flatten()
}

/// Whether the caller sees a volunteer's personal data: the volunteer themself, the city
/// admin, or community staff whose scope covers their home.
pub(crate) fn personal(p: &Principal, v: &Volunteer) -> convert::Personal {
    if own_volunteer(p) == Some(v.id.as_str()) || staff_over(p, &v.profile.home) {
        convert::Personal::Shown
    } else {
        convert::Personal::Hidden
    }
}

/// Whether the caller is (or speaks for) `assignee`; teams are spoken for by their leader.
pub(crate) async fn speaks_for(
    ctx: &Ctx,
    p: &Principal,
    assignee: &Assignee,
) -> Result<bool, Error> {
    Ok(match assignee.kind {
        AssigneeKind::Volunteer => own_volunteer(p) == Some(assignee.id.as_str()),
        AssigneeKind::Organisation => own_organisation(p) == Some(assignee.id.as_str()),
        AssigneeKind::Team => match own_volunteer(p) {
            Some(me) => crate::store::bodies::get_team(ctx.db.pool(), &assignee.id)
                .await?
                .is_some_and(|t| t.leader.as_deref() == Some(me)),
            None => false,
        },
    })
}

/// The column and code of the caller's place scope, for list filters.
pub(crate) fn scope_filter(ctx: &Ctx, p: &Principal) -> Option<(&'static str, String)> {
    p.place_scope.as_ref().map(|scope| {
        let column = ctx
            .gazetteer
            .get(scope)
            .map_or("building", |e| e.level.field());
        (column, scope.clone())
    })
}

/// The column for a place code given in a request.
pub(crate) fn place_filter(
    ctx: &Ctx,
    v: &mut minqing_kit::error::FieldViolations,
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

/// `minqing.matching.v1.Volunteers`.
#[derive(Debug, Clone)]
pub struct VolunteersApi(pub Arc<Ctx>);
/// `minqing.matching.v1.Needs`.
#[derive(Debug, Clone)]
pub struct NeedsApi(pub Arc<Ctx>);
/// `minqing.matching.v1.Matching`.
#[derive(Debug, Clone)]
pub struct MatchingApi(pub Arc<Ctx>);
/// `minqing.matching.v1.ServiceRecords`.
#[derive(Debug, Clone)]
pub struct RecordsApi(pub Arc<Ctx>);

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, Error>) -> R<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl volunteers_server::Volunteers for VolunteersApi {
    async fn create_volunteer(&self, r: Request<pb::CreateVolunteerRequest>) -> R<pb::Volunteer> {
        ok(volunteers::create(&self.0, r).await)
    }
    async fn get_volunteer(&self, r: Request<pb::GetVolunteerRequest>) -> R<pb::Volunteer> {
        ok(volunteers::get(&self.0, r).await)
    }
    async fn list_volunteers(
        &self,
        r: Request<pb::ListVolunteersRequest>,
    ) -> R<pb::ListVolunteersResponse> {
        ok(volunteers::list(&self.0, r).await)
    }
    async fn update_volunteer(&self, r: Request<pb::UpdateVolunteerRequest>) -> R<pb::Volunteer> {
        ok(volunteers::update(&self.0, r).await)
    }
    async fn pause_volunteer(&self, r: Request<pb::PauseVolunteerRequest>) -> R<pb::Volunteer> {
        ok(volunteers::pause(&self.0, r).await)
    }
    async fn resume_volunteer(&self, r: Request<pb::ResumeVolunteerRequest>) -> R<pb::Volunteer> {
        ok(volunteers::resume(&self.0, r).await)
    }
    async fn retire_volunteer(&self, r: Request<pb::RetireVolunteerRequest>) -> R<pb::Volunteer> {
        ok(volunteers::retire(&self.0, r).await)
    }
    async fn import_volunteers(
        &self,
        r: Request<pb::ImportVolunteersRequest>,
    ) -> R<pb::ImportVolunteersResponse> {
        ok(volunteers::import(&self.0, r).await)
    }
    async fn create_team(&self, r: Request<pb::CreateTeamRequest>) -> R<pb::Team> {
        ok(bodies::create_team(&self.0, r).await)
    }
    async fn get_team(&self, r: Request<pb::GetTeamRequest>) -> R<pb::Team> {
        ok(bodies::get_team(&self.0, r).await)
    }
    async fn list_teams(&self, r: Request<pb::ListTeamsRequest>) -> R<pb::ListTeamsResponse> {
        ok(bodies::list_teams(&self.0, r).await)
    }
    async fn update_team(&self, r: Request<pb::UpdateTeamRequest>) -> R<pb::Team> {
        ok(bodies::update_team(&self.0, r).await)
    }
    async fn retire_team(&self, r: Request<pb::RetireTeamRequest>) -> R<pb::Team> {
        ok(bodies::retire_team(&self.0, r).await)
    }
    async fn create_organisation(
        &self,
        r: Request<pb::CreateOrganisationRequest>,
    ) -> R<pb::Organisation> {
        ok(bodies::create_org(&self.0, r).await)
    }
    async fn get_organisation(
        &self,
        r: Request<pb::GetOrganisationRequest>,
    ) -> R<pb::Organisation> {
        ok(bodies::get_org(&self.0, r).await)
    }
    async fn list_organisations(
        &self,
        r: Request<pb::ListOrganisationsRequest>,
    ) -> R<pb::ListOrganisationsResponse> {
        ok(bodies::list_orgs(&self.0, r).await)
    }
    async fn update_organisation(
        &self,
        r: Request<pb::UpdateOrganisationRequest>,
    ) -> R<pb::Organisation> {
        ok(bodies::update_org(&self.0, r).await)
    }
    async fn retire_organisation(
        &self,
        r: Request<pb::RetireOrganisationRequest>,
    ) -> R<pb::Organisation> {
        ok(bodies::retire_org(&self.0, r).await)
    }
}

#[tonic::async_trait]
impl needs_server::Needs for NeedsApi {
    async fn create_need(&self, r: Request<pb::CreateNeedRequest>) -> R<pb::Need> {
        ok(needs::create(&self.0, r).await)
    }
    async fn get_need(&self, r: Request<pb::GetNeedRequest>) -> R<pb::Need> {
        ok(needs::get(&self.0, r).await)
    }
    async fn list_needs(&self, r: Request<pb::ListNeedsRequest>) -> R<pb::ListNeedsResponse> {
        ok(needs::list(&self.0, r).await)
    }
    async fn update_need(&self, r: Request<pb::UpdateNeedRequest>) -> R<pb::Need> {
        ok(needs::update(&self.0, r).await)
    }
    async fn cancel_need(&self, r: Request<pb::CancelNeedRequest>) -> R<pb::Need> {
        ok(needs::cancel(&self.0, r).await)
    }
    async fn publish_menu(&self, r: Request<pb::PublishMenuRequest>) -> R<pb::Menu> {
        ok(needs::publish(&self.0, r).await)
    }
    async fn get_menu(&self, r: Request<pb::GetMenuRequest>) -> R<pb::Menu> {
        ok(needs::get_menu(&self.0, r).await)
    }
    async fn list_menus(&self, r: Request<pb::ListMenusRequest>) -> R<pb::ListMenusResponse> {
        ok(needs::list_menus(&self.0, r).await)
    }
    async fn claim_need(&self, r: Request<pb::ClaimNeedRequest>) -> R<pb::Assignment> {
        ok(work::claim(&self.0, r).await)
    }
    async fn confirm_claim(&self, r: Request<pb::ConfirmClaimRequest>) -> R<pb::Assignment> {
        ok(work::confirm(&self.0, r).await)
    }
    async fn reject_claim(&self, r: Request<pb::RejectClaimRequest>) -> R<pb::Assignment> {
        ok(work::reject(&self.0, r).await)
    }
}

#[tonic::async_trait]
impl matching_server::Matching for MatchingApi {
    async fn find_candidates(
        &self,
        r: Request<pb::FindCandidatesRequest>,
    ) -> R<pb::FindCandidatesResponse> {
        ok(matching::find(&self.0, r).await)
    }
    async fn plan_assignments(
        &self,
        r: Request<pb::PlanAssignmentsRequest>,
    ) -> R<pb::PlanAssignmentsResponse> {
        ok(matching::plan(&self.0, r).await)
    }
    async fn offer_need(&self, r: Request<pb::OfferNeedRequest>) -> R<pb::Assignment> {
        ok(work::offer(&self.0, r).await)
    }
    async fn get_assignment(&self, r: Request<pb::GetAssignmentRequest>) -> R<pb::Assignment> {
        ok(work::get(&self.0, r).await)
    }
    async fn list_assignments(
        &self,
        r: Request<pb::ListAssignmentsRequest>,
    ) -> R<pb::ListAssignmentsResponse> {
        ok(work::list(&self.0, r).await)
    }
    async fn accept_assignment(
        &self,
        r: Request<pb::AcceptAssignmentRequest>,
    ) -> R<pb::Assignment> {
        ok(work::accept(&self.0, r).await)
    }
    async fn decline_assignment(
        &self,
        r: Request<pb::DeclineAssignmentRequest>,
    ) -> R<pb::Assignment> {
        ok(work::decline(&self.0, r).await)
    }
    async fn withdraw_assignment(
        &self,
        r: Request<pb::WithdrawAssignmentRequest>,
    ) -> R<pb::Assignment> {
        ok(work::withdraw(&self.0, r).await)
    }
    async fn reassign_assignment(
        &self,
        r: Request<pb::ReassignAssignmentRequest>,
    ) -> R<pb::Assignment> {
        ok(work::reassign(&self.0, r).await)
    }
    async fn complete_assignment(
        &self,
        r: Request<pb::CompleteAssignmentRequest>,
    ) -> R<pb::Assignment> {
        ok(work::complete(&self.0, r).await)
    }
    async fn rate_assignment(&self, r: Request<pb::RateAssignmentRequest>) -> R<pb::Assignment> {
        ok(work::rate(&self.0, r).await)
    }
}

#[tonic::async_trait]
impl service_records_server::ServiceRecords for RecordsApi {
    async fn summarize_service(
        &self,
        r: Request<pb::SummarizeServiceRequest>,
    ) -> R<pb::SummarizeServiceResponse> {
        ok(records::summarize(&self.0, r).await)
    }
}
