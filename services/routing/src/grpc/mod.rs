//! Routing's gRPC surface: `minqing.routing.v1.Routing` (units in `units.rs`, rules in
//! `rules.rs`, explanations and routes in `routes.rs`, staff actions in `actions.rs`),
//! `minqing.routing.v1.UnitDesk` (`desk.rs`) and `minqing.liaison.v1.LiaisonStations`
//! (`liaison.rs`).

mod actions;
mod desk;
mod liaison;
mod routes;
mod rules;
mod units;
pub(crate) mod validate;

use std::sync::Arc;

use tonic::{Request, Response, Status, transport::Channel};

use crate::{app::App, domain::Route, flow::FlowError};
use minqing_kit::{
    auth::{Principal, Role},
    error::{permission_denied, unavailable},
};
use minqing_proto::minqing::routing::v1 as pb;

pub use desk::DeskApi;
pub use liaison::LiaisonApi;

/// How many times a change is retried when the case changed underneath it.
pub(crate) const RETRIES: usize = 5;

/// Roles that manage units and reload rules.
pub(crate) const ADMIN_ROLES: &[Role] = &[Role::DistrictSystem];

/// Roles that read units, rules and routes.
pub(crate) const READ_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
    Role::Supervisor,
    Role::Service,
];

/// Roles that transfer, reassign, escalate, decide escalations and refer.
pub(crate) const STAFF_ROLES: &[Role] = &[
    Role::DistrictSystem,
    Role::WindowStaff,
    Role::GridWorker,
    Role::CommunityStaff,
];

/// `minqing.routing.v1.Routing`.
#[derive(Debug, Clone)]
pub struct RoutingApi(pub Arc<App>);

/// PERMISSION_DENIED unless the route's place is within the caller's place scope.
pub(crate) fn check_scope(principal: &Principal, route: &Route) -> Result<(), Status> {
    if principal.covers_place(route.facts.place.codes()) {
        Ok(())
    } else {
        Err(permission_denied(
            "OUT_OF_SCOPE",
            format!("{} is outside your place scope", route.case_name()),
        ))
    }
}

/// A flow failure as a status.
pub(crate) fn flow_status(e: FlowError) -> Status {
    match e {
        FlowError::Store(s) => s.to_status("changing a case's routing"),
        FlowError::Conflict => Status::aborted("the case kept changing; retry"),
    }
}

/// UNAVAILABLE when intake's catalogue cannot be had.
pub(crate) fn knowledge_status(e: anyhow::Error) -> Status {
    let err: &(dyn std::error::Error + 'static) = e.as_ref();
    unavailable("fetching the catalogue and gazetteer from intake", err)
}

/// What the liaison API needs beyond the app: a client of intake.
#[derive(Debug, Clone)]
pub struct IntakePeer {
    /// The channel.
    pub channel: Channel,
    /// A service-role token.
    pub token: String,
}

#[tonic::async_trait]
impl pb::routing_server::Routing for RoutingApi {
    async fn create_unit(
        &self,
        r: Request<pb::CreateUnitRequest>,
    ) -> Result<Response<pb::Unit>, Status> {
        units::create(&self.0, r).await
    }
    async fn get_unit(&self, r: Request<pb::GetUnitRequest>) -> Result<Response<pb::Unit>, Status> {
        units::get(&self.0, r).await
    }
    async fn list_units(
        &self,
        r: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        units::list(&self.0, r).await
    }
    async fn update_unit(
        &self,
        r: Request<pb::UpdateUnitRequest>,
    ) -> Result<Response<pb::Unit>, Status> {
        units::update(&self.0, r).await
    }
    async fn import_units(
        &self,
        r: Request<pb::ImportUnitsRequest>,
    ) -> Result<Response<pb::ImportUnitsResponse>, Status> {
        units::import(&self.0, r).await
    }
    async fn get_rule_set(
        &self,
        r: Request<pb::GetRuleSetRequest>,
    ) -> Result<Response<pb::RuleSet>, Status> {
        rules::get_set(&self.0, r)
    }
    async fn list_rules(
        &self,
        r: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        rules::list(&self.0, r)
    }
    async fn get_rule(&self, r: Request<pb::GetRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        rules::get(&self.0, r)
    }
    async fn reload_rules(
        &self,
        r: Request<pb::ReloadRulesRequest>,
    ) -> Result<Response<pb::RuleSet>, Status> {
        rules::reload(&self.0, r).await
    }
    async fn validate_rules(
        &self,
        r: Request<pb::ValidateRulesRequest>,
    ) -> Result<Response<pb::ValidateRulesResponse>, Status> {
        rules::validate(&self.0, r).await
    }
    async fn explain_route(
        &self,
        r: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::RouteDecision>, Status> {
        routes::explain(&self.0, r).await
    }
    async fn get_case_route(
        &self,
        r: Request<pb::GetCaseRouteRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        routes::get(&self.0, r).await
    }
    async fn list_case_routes(
        &self,
        r: Request<pb::ListCaseRoutesRequest>,
    ) -> Result<Response<pb::ListCaseRoutesResponse>, Status> {
        routes::list(&self.0, r).await
    }
    async fn list_assignments(
        &self,
        r: Request<pb::ListAssignmentsRequest>,
    ) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
        routes::list_assignments(&self.0, r).await
    }
    async fn transfer_case(
        &self,
        r: Request<pb::TransferCaseRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        actions::transfer(&self.0, r).await
    }
    async fn reassign_case(
        &self,
        r: Request<pb::ReassignCaseRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        actions::reassign(&self.0, r).await
    }
    async fn reroute_case(
        &self,
        r: Request<pb::RerouteCaseRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        actions::reroute(&self.0, r).await
    }
    async fn escalate_case(
        &self,
        r: Request<pb::EscalateCaseRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        actions::escalate(&self.0, r).await
    }
    async fn decide_escalation(
        &self,
        r: Request<pb::DecideEscalationRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        actions::decide(&self.0, r).await
    }
    async fn refer_case(
        &self,
        r: Request<pb::ReferCaseRequest>,
    ) -> Result<Response<pb::CaseRoute>, Status> {
        actions::refer(&self.0, r).await
    }
}

/// Loads `units` into the registry (the start-up seed), as an import would.
pub async fn seed(app: &App, actor: &str, units: Vec<crate::domain::Unit>) -> anyhow::Result<()> {
    for chunk in units.chunks(500) {
        units::import_units(app, actor, chunk.to_vec(), false)
            .await
            .map_err(|s| anyhow::anyhow!("seeding units: {}", s.message()))?;
    }
    Ok(())
}
