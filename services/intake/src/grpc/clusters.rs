//! Clusters: GetCluster, LinkCases, UnlinkCase.

use std::collections::BTreeSet;

use tonic::{Request, Response, Status};

use super::{CLUSTER_ROLES, READ_ROLES, State, check_scope, convert, personal, validate};
use crate::{
    cluster::{emit_clustered, emit_unclustered, move_case},
    domain::Cluster,
    store,
};
use minqing_kit::{
    auth::caller,
    error::{FieldViolations, StoreError, failed_precondition, not_found},
    feed::EventMeta,
};
use minqing_proto::minqing::intake::v1 as pb;

/// A concurrent change surfaces as a retryable conflict.
fn conflict(err: StoreError) -> Status {
    match err {
        StoreError::Unavailable(sqlx::Error::Protocol(msg)) => Status::aborted(msg),
        other => other.into(),
    }
}

pub(super) async fn get(
    state: &State,
    request: Request<pb::GetClusterRequest>,
) -> Result<Response<pb::Cluster>, Status> {
    caller(&request)?.require(READ_ROLES)?;
    let name = &request.get_ref().name;
    let mut v = FieldViolations::new();
    let id = validate::cluster_name(&mut v, "name", name);
    v.finish()?;
    let mut conn = state.db.pool().acquire().await.map_err(StoreError::from)?;
    let cluster = store::get_cluster(&mut conn, &id.expect("checked"))
        .await?
        .ok_or_else(|| not_found("cluster", name))?;
    Ok(Response::new(convert::cluster(&cluster)))
}

pub(super) async fn link(
    state: &State,
    request: Request<pb::LinkCasesRequest>,
) -> Result<Response<pb::Cluster>, Status> {
    let principal = caller(&request)?.require(CLUSTER_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let mut ids = BTreeSet::new();
    for (i, name) in req.cases.iter().enumerate() {
        if let Some(id) = validate::case_name(&mut v, &format!("cases[{i}]"), name) {
            ids.insert(id);
        }
    }
    v.check(
        ids.len() < 2 || ids.len() > 50,
        "cases",
        "give 2 to 50 different cases",
    );
    let reason = validate::text(&mut v, "reason", &req.reason, 0, 500, false);
    v.finish()?;

    let now = state.clock.now_micros();
    let meta = EventMeta::current(principal.actor());
    let mut tx = state.db.begin().await?;
    let mut cases = Vec::new();
    for id in &ids {
        let name = format!("cases/{id}");
        let case = store::get_case(tx.conn(), id)
            .await?
            .ok_or_else(|| not_found("case", &name))?;
        check_scope(&principal, &case)?;
        cases.push(case);
    }
    cases.sort_by_key(|c| c.create_time);
    // Join the oldest existing cluster among them, or found one.
    let mut existing: Vec<Cluster> = Vec::new();
    for c in &cases {
        if let Some(id) = &c.cluster
            && !existing.iter().any(|e| &e.id == id)
            && let Some(cluster) = store::get_cluster(tx.conn(), id).await?
        {
            existing.push(cluster);
        }
    }
    existing.sort_by_key(|c| c.create_time);
    let target = match existing.first() {
        Some(c) => c.id.clone(),
        None => {
            let cluster = Cluster {
                id: uuid::Uuid::now_v7().to_string(),
                category: cases[0].submission.category.clone(),
                reason: if reason.is_empty() {
                    "linked by staff".into()
                } else {
                    reason.clone()
                },
                create_time: now,
                cases: Vec::new(),
            };
            store::create_cluster(&mut tx, &cluster).await?;
            cluster.id
        }
    };
    // Merge: every member of the other clusters moves too.
    let mut movers = cases;
    for other in existing.iter().skip(1) {
        for id in &other.cases {
            if !movers.iter().any(|c| &c.id == id)
                && let Some(case) = store::get_case(tx.conn(), id).await?
            {
                movers.push(case);
            }
        }
    }
    for case in &mut movers {
        if case.cluster.as_deref() == Some(target.as_str()) {
            continue;
        }
        move_case(&mut tx, case, Some(&target), now)
            .await
            .map_err(conflict)?;
        emit_clustered(&mut tx, &meta, &target, &case.id, true, now).await?;
    }
    for other in existing.iter().skip(1) {
        store::delete_cluster(&mut tx, &other.id).await?;
    }
    let cluster = store::get_cluster(tx.conn(), &target)
        .await?
        .ok_or_else(|| Status::aborted("the cluster changed; retry"))?;
    tx.commit().await?;
    Ok(Response::new(convert::cluster(&cluster)))
}

pub(super) async fn unlink(
    state: &State,
    request: Request<pb::UnlinkCaseRequest>,
) -> Result<Response<pb::Case>, Status> {
    let principal = caller(&request)?.require(CLUSTER_ROLES)?.clone();
    let name = request.into_inner().name;
    let mut v = FieldViolations::new();
    let id = validate::case_name(&mut v, "name", &name);
    v.finish()?;
    let id = id.expect("checked");
    let now = state.clock.now_micros();
    let meta = EventMeta::current(principal.actor());
    let mut tx = state.db.begin().await?;
    let mut case = store::get_case(tx.conn(), &id)
        .await?
        .ok_or_else(|| not_found("case", &name))?;
    check_scope(&principal, &case)?;
    let Some(cluster_id) = case.cluster.clone() else {
        return Err(failed_precondition(
            "NOT_CLUSTERED",
            &name,
            "the case is in no cluster",
        ));
    };
    move_case(&mut tx, &mut case, None, now)
        .await
        .map_err(conflict)?;
    emit_unclustered(&mut tx, &meta, &cluster_id, &case.id, now).await?;
    // A cluster of one links nothing: dissolve it.
    let remaining = store::get_cluster(tx.conn(), &cluster_id).await?;
    if let Some(rest) = remaining
        && rest.cases.len() <= 1
    {
        for other_id in &rest.cases {
            if let Some(mut other) = store::get_case(tx.conn(), other_id).await? {
                move_case(&mut tx, &mut other, None, now)
                    .await
                    .map_err(conflict)?;
                emit_unclustered(&mut tx, &meta, &cluster_id, other_id, now).await?;
            }
        }
        store::delete_cluster(&mut tx, &cluster_id).await?;
    }
    tx.commit().await?;
    Ok(Response::new(convert::case(
        &case,
        personal(&principal, &case),
    )))
}
