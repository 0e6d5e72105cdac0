//! Duplicate clusters: reports of the same issue linked so one collective reply reaches every
//! reporter. A consumer of intake's own feed looks at each new case once (exactly once: its
//! cursor commits with its changes) — so two near-identical reports arriving together are
//! judged one after the other, never both founding a cluster. Staff link and unlink by hand
//! through the same functions.

use prost::{Message, Name};
use tracing::Instrument;

use crate::{
    config::ClusterConfig,
    domain::{Case, Cluster, LatLng, Submission},
    grpc::convert,
    store::{self, Candidate},
};
use minqing_kit::{
    db::Tx,
    error::StoreError,
    feed::{self, Apply, EventMeta},
    time::{Clock, Micros},
};
use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as pb};

/// The consumer's name (its cursor and lease).
pub const CONSUMER: &str = "intake-clusters";

/// Finds and links reports of the same issue.
#[derive(Debug, Clone)]
pub struct Clusterer {
    /// Thresholds.
    pub config: ClusterConfig,
    /// Clock.
    pub clock: Clock,
}

/// The text two reports are compared on: title and description, lower-cased, whitespace
/// collapsed, at most 200 characters (so a long description cannot make comparison costly;
/// what a report is about is said early).
pub fn comparable_text(s: &Submission) -> String {
    text_of(&s.title, &s.description)
}

fn text_of(title: &str, description: &str) -> String {
    let joined = format!("{title} {description}").to_lowercase();
    joined
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

/// Sørensen–Dice similarity over character pairs (whitespace ignored), 0 to 1. Written here
/// because strsim's `sorensen_dice` divides by byte length rather than character count, which
/// scores Chinese text (three bytes a character) about three times too low.
pub fn dice(a: &str, b: &str) -> f64 {
    use std::collections::HashMap;
    let pairs = |s: &str| -> Vec<(char, char)> {
        let chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
        chars.windows(2).map(|w| (w[0], w[1])).collect()
    };
    let (pa, pb) = (pairs(a), pairs(b));
    if pa.is_empty() || pb.is_empty() {
        return if a.trim() == b.trim() { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<(char, char), usize> = HashMap::new();
    for p in &pa {
        *counts.entry(*p).or_default() += 1;
    }
    let mut shared = 0;
    for p in &pb {
        if let Some(n) = counts.get_mut(p).filter(|n| **n > 0) {
            *n -= 1;
            shared += 1;
        }
    }
    (2 * shared) as f64 / (pa.len() + pb.len()) as f64
}

/// A new report, as its `CaseSubmitted` event tells of it: enough to look for duplicates
/// without reading the case back.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// Case id.
    pub id: String,
    /// Catalogue item.
    pub category: String,
    /// Building code (may be empty).
    pub building: String,
    /// Exact spot.
    pub location: Option<LatLng>,
    /// The words compared.
    pub text: String,
    /// When it was accepted.
    pub create_time: Micros,
}

impl NewReport {
    /// From the case carried by a `CaseSubmitted` event.
    pub fn from_event(case: &pb::Case) -> Option<Self> {
        let place = case.place.as_ref()?;
        Some(Self {
            id: case.name.strip_prefix("cases/")?.to_string(),
            category: case.category.clone(),
            building: place.building.clone(),
            location: place.location.map(|l| LatLng {
                latitude: l.latitude,
                longitude: l.longitude,
            }),
            text: text_of(&case.title, &case.description),
            create_time: case
                .create_time
                .as_ref()
                .and_then(minqing_kit::time::from_timestamp)?,
        })
    }
}

/// Why `candidate` is the same place as `report`, if it is.
fn same_place(report: &NewReport, candidate: &Candidate, max_m: f64) -> Option<String> {
    if !report.building.is_empty() && report.building == candidate.building {
        return Some("same building".into());
    }
    match (report.location, candidate.location) {
        (Some(a), Some(b)) => {
            let d = a.distance_m(b);
            (d <= max_m).then(|| format!("within {} m", d.round().max(1.0)))
        }
        _ => None,
    }
}

impl Clusterer {
    /// Looks at one new report and links it to the most similar recent one, if any. Only when
    /// a match is found are the cases read and changed.
    pub async fn consider(&self, tx: &mut Tx, report: &NewReport) -> Result<(), StoreError> {
        let window = i64::from(self.config.window_hours) * 3_600_000_000;
        let candidates = store::cluster_candidates(
            tx,
            &report.category,
            report.create_time - window,
            (report.create_time, &report.id),
            &report.building,
            report.location.map(|l| (l, self.config.distance_meters)),
        )
        .await?;
        let best = candidates
            .iter()
            .filter_map(|c| {
                let reason = same_place(report, c, self.config.distance_meters)?;
                let score = dice(&report.text, &c.text);
                (score >= self.config.min_text_similarity).then_some((score, reason, c))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, reason, other)) = best else {
            return Ok(());
        };
        // The report may have changed since it was submitted (withdrawn, linked by staff).
        let Some(mut case) = store::get_case(tx.conn(), &report.id).await? else {
            return Ok(());
        };
        if case.cluster.is_some() || !case.state.is_open() {
            return Ok(());
        }
        let now = self.clock.now_micros();
        let meta = EventMeta::current(format!("system:{CONSUMER}"));
        let cluster_id = match &other.cluster {
            Some(id) => id.clone(),
            None => {
                let cluster = Cluster {
                    id: uuid::Uuid::now_v7().to_string(),
                    category: report.category.clone(),
                    reason,
                    create_time: now,
                    cases: Vec::new(),
                };
                store::create_cluster(tx, &cluster).await?;
                let Some(mut first) = store::get_case(tx.conn(), &other.id).await? else {
                    return Ok(());
                };
                move_case(tx, &mut first, Some(&cluster.id), now).await?;
                emit_clustered(tx, &meta, &cluster.id, &first.id, false, now).await?;
                cluster.id
            }
        };
        move_case(tx, &mut case, Some(&cluster_id), now).await?;
        emit_clustered(tx, &meta, &cluster_id, &case.id, false, now).await?;
        tracing::info!(case = %case.id, cluster = %cluster_id, "report linked to a cluster");
        Ok(())
    }
}

impl Apply for Clusterer {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        for event in events {
            if event.kind != pb::CaseSubmitted::full_name() {
                continue;
            }
            let submitted = event
                .payload
                .as_ref()
                .map(|p| pb::CaseSubmitted::decode(p.value.as_slice()))
                .transpose()?;
            if let Some(report) = submitted
                .and_then(|e| e.case)
                .as_ref()
                .and_then(NewReport::from_event)
            {
                self.consider(tx, &report)
                    .instrument(feed::event_span(CONSUMER, event))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Puts `case` into `cluster` (or none). The caller runs it in its transaction; a concurrent
/// change to the case makes it fail, and the whole transaction is retried.
pub async fn move_case(
    tx: &mut Tx,
    case: &mut Case,
    cluster: Option<&str>,
    now: Micros,
) -> Result<(), StoreError> {
    let version = case.version;
    case.cluster = cluster.map(str::to_owned);
    case.update_time = now;
    case.version += 1;
    if store::update_case(tx, case, version).await? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(sqlx::Error::Protocol(format!(
            "case {} changed while being clustered",
            case.id
        ))))
    }
}

/// Appends `CaseClustered` for `case_id`, with the cluster as it now stands.
pub async fn emit_clustered(
    tx: &mut Tx,
    meta: &EventMeta,
    cluster_id: &str,
    case_id: &str,
    by_staff: bool,
    now: Micros,
) -> Result<(), StoreError> {
    let cluster = store::get_cluster(tx.conn(), cluster_id).await?;
    let event = pb::CaseClustered {
        cluster: cluster.as_ref().map(convert::cluster),
        case: format!("cases/{case_id}"),
        by_staff,
    };
    feed::append(tx, meta, &format!("cases/{case_id}"), &event, now).await?;
    Ok(())
}

/// Appends `CaseUnclustered` for `case_id`.
pub async fn emit_unclustered(
    tx: &mut Tx,
    meta: &EventMeta,
    cluster_id: &str,
    case_id: &str,
    now: Micros,
) -> Result<(), StoreError> {
    let cluster = store::get_cluster(tx.conn(), cluster_id).await?;
    let event = pb::CaseUnclustered {
        cluster: Some(
            cluster
                .as_ref()
                .map(convert::cluster)
                .unwrap_or(pb::Cluster {
                    name: format!("clusters/{cluster_id}"),
                    ..Default::default()
                }),
        ),
        case: format!("cases/{case_id}"),
    };
    feed::append(tx, meta, &format!("cases/{case_id}"), &event, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::dice;

    #[test]
    fn similar_chinese_reports_score_above_the_default_threshold() {
        let a = "3号楼门口的路灯不亮了 晚上很黑";
        let b = "3号楼路灯坏了好几天，晚上走路很黑";
        let c = "楼道里有人乱堆杂物，消防通道被堵";
        let ab = dice(a, b);
        let ac = dice(a, c);
        assert!(ab >= 0.3, "{ab}");
        assert!(ac < 0.1, "{ac}");
    }

    #[test]
    fn dice_is_symmetric_and_bounded() {
        assert_eq!(dice("路灯不亮", "路灯不亮"), 1.0);
        assert_eq!(dice("ab", "cd"), 0.0);
        assert_eq!(dice("a", "a"), 1.0);
        assert_eq!(dice("", "x"), 0.0);
        let (x, y) = ("streetlight out", "the streetlight is out");
        assert_eq!(dice(x, y), dice(y, x));
        assert!((0.0..=1.0).contains(&dice(x, y)));
    }
}
