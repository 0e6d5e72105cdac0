//! Rules: GetRuleSet, ListRules, GetRule, ReloadRules, ValidateRules.

use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{ADMIN_ROLES, READ_ROLES, units::after, units::token, validate};
use crate::{
    app::{App, ReloadError},
    convert,
    rules::RuleSet,
};
use minqing_kit::{
    auth::caller,
    error::{ERROR_DOMAIN, FieldViolations, not_found},
};
use minqing_proto::minqing::routing::v1 as pb;

pub(super) fn get_set(
    app: &App,
    request: Request<pb::GetRuleSetRequest>,
) -> Result<Response<pb::RuleSet>, Status> {
    caller(&request)?.require(READ_ROLES)?;
    Ok(Response::new(convert::rule_set(&app.rules())))
}

pub(super) fn list(
    app: &App,
    request: Request<pb::ListRulesRequest>,
) -> Result<Response<pb::ListRulesResponse>, Status> {
    caller(&request)?.require(READ_ROLES)?;
    let req = request.into_inner();
    let set = app.rules();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 100, 1000) as usize;
    // The token names the rule set and the filter, so a page never mixes two sets.
    let fingerprint = super::units::hash(&pb::ListRulesRequest {
        page_size: 0,
        page_token: set.sha256.clone(),
        category: req.category.clone(),
    });
    let start = match after(&mut v, &fingerprint, &req.page_token) {
        Some(last) => match last.parse::<usize>() {
            Ok(p) => p + 1,
            Err(_) => {
                v.add(
                    "page_token",
                    "not a token from a previous page of this same request",
                );
                0
            }
        },
        None => 0,
    };
    v.finish()?;
    let mut rules: Vec<&crate::rules::Rule> = set
        .rules
        .iter()
        .skip(start)
        .filter(|r| {
            req.category.is_empty()
                || r.categories.is_empty()
                || r.categories.contains(&req.category)
        })
        .take(limit + 1)
        .collect();
    let next_page_token = if rules.len() > limit {
        rules.truncate(limit);
        rules
            .last()
            .map(|r| token(&fingerprint, &r.position.to_string()))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Response::new(pb::ListRulesResponse {
        rules: rules.into_iter().map(convert::rule).collect(),
        next_page_token,
        rule_set_sha256: set.sha256.clone(),
    }))
}

pub(super) fn get(
    app: &App,
    request: Request<pb::GetRuleRequest>,
) -> Result<Response<pb::Rule>, Status> {
    caller(&request)?.require(READ_ROLES)?;
    let name = &request.get_ref().name;
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "name", "rules", name);
    v.finish()?;
    let set = app.rules();
    let rule = set
        .get(&id.unwrap_or_default())
        .ok_or_else(|| not_found("rule", name))?;
    Ok(Response::new(convert::rule(rule)))
}

/// FAILED_PRECONDITION listing every problem of a refused rule file.
fn refused(problems: &[String]) -> Status {
    let mut details = ErrorDetails::new();
    for p in problems {
        details.add_precondition_failure_violation("RULES_INVALID", "rules", p.clone());
    }
    details.set_error_info("RULES_INVALID", ERROR_DOMAIN, []);
    Status::with_error_details(
        tonic::Code::FailedPrecondition,
        format!(
            "the rule file was refused and the rules in force stay: {}",
            problems.join("; ")
        ),
        details,
    )
}

pub(super) async fn reload(
    app: &App,
    request: Request<pb::ReloadRulesRequest>,
) -> Result<Response<pb::RuleSet>, Status> {
    let principal = caller(&request)?.require(ADMIN_ROLES)?.clone();
    match app.reload_rules(&principal.actor()).await {
        Ok(_) => Ok(Response::new(convert::rule_set(&app.rules()))),
        Err(ReloadError::Invalid(problems)) => Err(refused(&problems)),
        Err(ReloadError::Read { path, error }) => {
            Err(refused(&[format!("cannot read {path}: {error}")]))
        }
        Err(ReloadError::Store(e)) => Err(e.to_status("recording the rule set")),
    }
}

pub(super) async fn validate(
    app: &App,
    request: Request<pb::ValidateRulesRequest>,
) -> Result<Response<pb::ValidateRulesResponse>, Status> {
    caller(&request)?.require(ADMIN_ROLES)?;
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    v.check(req.content.len() > 4 << 20, "content", "at most 4 MiB");
    v.finish()?;
    let knowledge = app.knowledge.get().await.ok();
    let now = app.clock.now_micros();
    Ok(Response::new(
        match RuleSet::parse(&req.content, "request", now, knowledge.as_deref()) {
            Ok(set) => pb::ValidateRulesResponse {
                valid: true,
                errors: Vec::new(),
                warnings: set.warnings.clone(),
                rule_count: set.rules.len() as i32,
            },
            Err(errors) => pb::ValidateRulesResponse {
                valid: false,
                errors,
                warnings: Vec::new(),
                rule_count: 0,
            },
        },
    ))
}
