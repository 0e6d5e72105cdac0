//! Intake's gRPC surface: `minqing.intake.v1.Intake` (cases, clusters) and
//! `minqing.intake.v1.Catalogue` (public). Each RPC's handler lives in the file named for its
//! resource: `cases.rs`, `clusters.rs`, `catalogue.rs`.

mod cases;
mod catalogue;
mod clusters;
pub(crate) mod convert;
pub(crate) mod validate;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{catalogue::Catalogue, domain::Case, places::Gazetteer};
use convert::Personal;
use minqing_kit::{
    audit::{AuditLog, READ_PERSONAL_DATA},
    auth::{Principal, Role},
    db::Db,
    error::permission_denied,
    time::Clock,
};
use minqing_proto::minqing::intake::v1::{self as pb, catalogue_server, intake_server};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub db: Db,
    pub audit: AuditLog,
    pub catalogue: Arc<Catalogue>,
    pub gazetteer: Arc<Gazetteer>,
    pub clock: Clock,
    /// Writes new cases in batches (group commit).
    pub submitter: crate::submit::Submitter,
}

/// Roles that may record cases and their supplements or withdrawals.
pub(crate) const SUBMIT_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
    Role::Deputy,
    Role::Service,
];

/// Roles that may read cases.
pub(crate) const READ_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
    Role::Deputy,
    Role::Supervisor,
    Role::Service,
];

/// Roles that see reporters' personal data (deputies see it for cases from their station).
pub(crate) const PERSONAL_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
    Role::Service,
];

/// Roles that may link and unlink reports.
pub(crate) const CLUSTER_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
    Role::Supervisor,
];

/// Whether `principal` sees the personal data of `case`'s reporter.
pub(crate) fn personal(principal: &Principal, case: &Case) -> Personal {
    let station = &case.submission.channel_details.liaison_station;
    let own_station = principal.role == Role::Deputy
        && !station.is_empty()
        && principal.unit_scope.as_deref() == Some(station.as_str());
    if principal.is(PERSONAL_ROLES) || own_station {
        Personal::Shown
    } else {
        Personal::Hidden
    }
}

/// What `principal` may see of `case`; a read that shows personal data is audited.
pub(crate) async fn audited(
    state: &State,
    principal: &Principal,
    case: &Case,
    rpc: &str,
) -> Personal {
    let shown = personal(principal, case);
    if shown == Personal::Shown {
        state
            .audit
            .record(principal, READ_PERSONAL_DATA, &case.name(), rpc)
            .await;
    }
    shown
}

/// PERMISSION_DENIED unless `case` is within `principal`'s place scope.
pub(crate) fn check_scope(principal: &Principal, case: &Case) -> Result<(), Status> {
    if principal.covers_place(case.submission.place.codes()) {
        Ok(())
    } else {
        Err(permission_denied(
            "OUT_OF_SCOPE",
            format!("{} is outside your place scope", case.name()),
        ))
    }
}

/// `minqing.intake.v1.Intake`.
#[derive(Debug, Clone)]
pub struct IntakeApi(pub(crate) Arc<State>);

/// `minqing.intake.v1.Catalogue`.
#[derive(Debug, Clone)]
pub struct CatalogueApi(pub(crate) Arc<State>);

#[tonic::async_trait]
impl intake_server::Intake for IntakeApi {
    async fn submit_case(
        &self,
        r: Request<pb::SubmitCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        cases::submit(&self.0, r).await
    }

    async fn get_case(&self, r: Request<pb::GetCaseRequest>) -> Result<Response<pb::Case>, Status> {
        cases::get(&self.0, r).await
    }

    async fn list_cases(
        &self,
        r: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        cases::list(&self.0, r).await
    }

    async fn supplement_case(
        &self,
        r: Request<pb::SupplementCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        cases::supplement(&self.0, r).await
    }

    async fn withdraw_case(
        &self,
        r: Request<pb::WithdrawCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        cases::withdraw(&self.0, r).await
    }

    async fn get_case_timeline(
        &self,
        r: Request<pb::GetCaseTimelineRequest>,
    ) -> Result<Response<pb::CaseTimeline>, Status> {
        cases::timeline(&self.0, r).await
    }

    async fn get_cluster(
        &self,
        r: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        clusters::get(&self.0, r).await
    }

    async fn link_cases(
        &self,
        r: Request<pb::LinkCasesRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        clusters::link(&self.0, r).await
    }

    async fn unlink_case(
        &self,
        r: Request<pb::UnlinkCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        clusters::unlink(&self.0, r).await
    }
}

#[tonic::async_trait]
impl catalogue_server::Catalogue for CatalogueApi {
    async fn list_catalogue_classes(
        &self,
        r: Request<pb::ListCatalogueClassesRequest>,
    ) -> Result<Response<pb::ListCatalogueClassesResponse>, Status> {
        catalogue::classes(&self.0, r)
    }

    async fn list_catalogue_items(
        &self,
        r: Request<pb::ListCatalogueItemsRequest>,
    ) -> Result<Response<pb::ListCatalogueItemsResponse>, Status> {
        catalogue::items(&self.0, r)
    }

    async fn get_catalogue_item(
        &self,
        r: Request<pb::GetCatalogueItemRequest>,
    ) -> Result<Response<pb::CatalogueItem>, Status> {
        catalogue::item(&self.0, r)
    }

    async fn list_places(
        &self,
        r: Request<pb::ListPlacesRequest>,
    ) -> Result<Response<pb::ListPlacesResponse>, Status> {
        catalogue::places(&self.0, r)
    }
}
