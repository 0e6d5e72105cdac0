//! Notices assignments not accepted within their unit's acceptance window, once each, with
//! an `AssignmentAcceptanceOverdue` event (supervision chases the unit) and a desk item.
//! Runs on the service clock, so tests move time instead of waiting for it.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    app::App,
    domain::AssignmentState,
    flow::{self, Emit, FlowError},
    store,
};
use minqing_kit::feed::EventMeta;
use minqing_proto::minqing::routing::v1 as pb;

/// Who the sweeper acts as.
pub const ACTOR: &str = "system:routing-acceptance-sweeper";

/// Runs until `shutdown`.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    let every = Duration::from_millis(app.config.sweep_interval_ms);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = sweep(&app).await {
            tracing::warn!(error = %e, "acceptance sweep failed; trying again later");
        }
    }
}

/// Notices every overdue acceptance now; how many were noticed.
pub async fn sweep(app: &App) -> Result<usize, FlowError> {
    let mut noticed = 0;
    loop {
        let now = app.clock.now_micros();
        let due = store::overdue_acceptances(&app.db, now, 100).await?;
        if due.is_empty() {
            return Ok(noticed);
        }
        let batch = due.len();
        for (id, case_id) in due {
            let meta = EventMeta::current(ACTOR);
            let mut tx = app.db.begin().await?;
            let (Some(mut a), Some(mut route)) = (
                store::get_assignment(tx.conn(), &id).await?,
                store::get_route(tx.conn(), &case_id).await?,
            ) else {
                continue;
            };
            if a.state != AssignmentState::Pending || a.acceptance_overdue {
                continue;
            }
            let version = route.version;
            a.acceptance_overdue = true;
            a.version += 1;
            store::update_assignment(&mut tx, &a).await?;
            let emits = vec![
                Emit::Desk(
                    a.clone(),
                    pb::DeskItemKind::Updated,
                    "not accepted within the acceptance window".into(),
                ),
                Emit::Overdue(a),
            ];
            match flow::finish(&mut tx, &mut route, Some(version), emits, now, &meta).await {
                Ok(()) => {
                    tx.commit().await?;
                    noticed += 1;
                }
                // Changed meanwhile (accepted, or noticed by another replica): look again.
                Err(FlowError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        if batch < 100 {
            return Ok(noticed);
        }
    }
}
