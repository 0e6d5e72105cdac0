//! Duplicate clusters: reports of the same issue linked so one collective reply reaches every
//! reporter. A consumer of intake's own feed looks at each new case once (exactly once: its
//! cursor commits with its changes) — so two near-identical reports arriving together are
//! judged one after the other, never both founding a cluster. Staff link and unlink by hand
//! through the same functions.

use std::collections::{HashMap, HashSet};

use prost::{Message, Name};
use tracing::Instrument;

use crate::{
    config::ClusterConfig,
    domain::{Case, Cluster, LatLng, Submission},
    grpc::convert,
    store::{self, Candidate, Membership},
};
use minqing_kit::{
    db::{Db, Tx},
    error::StoreError,
    feed::{self, Apply, EventMeta, EventRow, Prepared},
    time::{Clock, Micros},
};
use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as pb};

/// The consumer's name (its cursor and lease).
pub const CONSUMER: &str = "intake-clusters";

/// The lane of intake's transactions the clusterer's batches run in (kit `db::Lane`).
pub const LANE: &str = "clusters";

/// What the clusterer's batches append: the only kinds its lane allows.
pub fn lane_kinds() -> Vec<String> {
    vec![pb::CaseClustered::full_name()]
}

/// Finds and links reports of the same issue.
#[derive(Debug, Clone)]
pub struct Clusterer {
    /// Thresholds.
    pub config: ClusterConfig,
    /// Clock.
    pub clock: Clock,
    /// Intake's database, whose read pool a batch's candidates are looked up through before
    /// its transaction begins.
    pub db: Db,
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
    dice_with(&pairs(a), a, b)
}

/// [`dice`] with `a`'s pairs already made (a report is compared with many candidates).
fn dice_with(pa: &[u64], a: &str, b: &str) -> f64 {
    let pb = pairs(b);
    if pa.is_empty() || pb.is_empty() {
        return if a.trim() == b.trim() { 1.0 } else { 0.0 };
    }
    // Both sorted: the pairs they share (as multisets) by one merge, with no map to build.
    let (mut i, mut j, mut shared) = (0, 0, 0);
    while i < pa.len() && j < pb.len() {
        match pa[i].cmp(&pb[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (2 * shared) as f64 / (pa.len() + pb.len()) as f64
}

/// A text's adjacent character pairs (whitespace ignored), each packed in a `u64`, sorted.
fn pairs(s: &str) -> Vec<u64> {
    let chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out: Vec<u64> = chars
        .windows(2)
        .map(|w| (u64::from(u32::from(w[0])) << 32) | u64::from(u32::from(w[1])))
        .collect();
    out.sort_unstable();
    out
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
        self.consider_batch(tx, &[(report.clone(), tracing::Span::current())])
            .await
    }
}

/// The new reports among `events`, each with the span of its event.
fn reports_of(events: &[events_pb::Event]) -> anyhow::Result<Vec<(NewReport, tracing::Span)>> {
    let mut reports = Vec::new();
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
            reports.push((report, feed::event_span(CONSUMER, event)));
        }
    }
    Ok(reports)
}

/// Each report's best match: why it is the same place, and the match's place among the
/// report's candidates.
type Bests = Vec<Option<(String, usize)>>;

/// A batch's reports, their candidates and best matches, looked up before its transaction.
type Looked = (Vec<(NewReport, tracing::Span)>, Vec<Vec<Candidate>>, Bests);

impl Apply for Clusterer {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        self.consider_batch(tx, &reports_of(events)?).await?;
        Ok(())
    }

    /// The candidates are looked up through the read pool, so on SQLite the single writer is
    /// not held while they are: they are only candidates, and everything the batch changes is
    /// read again (and, on PostgreSQL, locked) under its transaction.
    async fn prepare(&self, events: &[events_pb::Event]) -> anyhow::Result<Prepared> {
        let reports = reports_of(events)?;
        if reports.is_empty() {
            return Ok(Prepared::nothing_to_apply());
        }
        let mut conn = self.db.pool().acquire().await.map_err(StoreError::from)?;
        let candidates = self.candidates(&mut conn, &reports).await?;
        let bests = self.bests(&reports, &candidates);
        // No report resembles anything: the batch changes nothing.
        if bests.iter().all(Option::is_none) {
            return Ok(Prepared::nothing_to_apply());
        }
        Ok(Prepared::new::<Looked>((reports, candidates, bests)))
    }

    async fn apply_prepared(
        &self,
        tx: &mut Tx,
        events: &[events_pb::Event],
        prepared: Prepared,
    ) -> anyhow::Result<()> {
        match prepared.take::<Looked>() {
            Some((reports, candidates, bests)) => {
                self.decide(tx, &reports, &candidates, bests).await?;
            }
            None => self.apply(tx, events).await?,
        }
        Ok(())
    }
}

/// A cluster as a batch holds it: the cluster (its `cases` left empty), and how many cases
/// it holds.
type HeldCluster = (Cluster, i64);

/// A batch's changes, made in memory report by report and written when the batch ends: the
/// cases and clusters it read (with its changes applied), and what to write.
#[derive(Default)]
struct Pending {
    /// Cases read (what clustering reads of them), by id (`None`: no such case), as changed
    /// so far.
    cases: HashMap<String, Option<Membership>>,
    /// Changed cases, in the order first changed (each one version past the one read).
    changed: Vec<String>,
    /// Their ids.
    changed_ids: HashSet<String>,
    /// Clusters touched, by id (`None`: no such cluster), with how many cases each holds, as
    /// changed so far.
    clusters: HashMap<String, Option<HeldCluster>>,
    /// Clusters formed.
    formed: Vec<Cluster>,
    /// Events, in order.
    events: Vec<EventRow>,
}

impl Pending {
    async fn case(&mut self, tx: &mut Tx, id: &str) -> Result<Option<&mut Membership>, StoreError> {
        if !self.cases.contains_key(id) {
            let case = store::get_memberships(tx, &[id.to_string()])
                .await?
                .remove(id);
            self.cases.insert(id.to_string(), case);
        }
        Ok(self.cases.get_mut(id).and_then(Option::as_mut))
    }

    async fn cluster(
        &mut self,
        tx: &mut Tx,
        id: &str,
    ) -> Result<Option<&mut HeldCluster>, StoreError> {
        if !self.clusters.contains_key(id) {
            let cluster = store::get_cluster_sizes(tx.conn(), &[id.to_string()])
                .await?
                .remove(id);
            self.clusters.insert(id.to_string(), cluster);
        }
        Ok(self.clusters.get_mut(id).and_then(Option::as_mut))
    }

    /// The cluster of candidate `c` as this batch left it (read when the batch read it).
    fn cluster_of(&self, c: &Candidate) -> Option<String> {
        self.cases
            .get(&c.id)
            .and_then(Option::as_ref)
            .and_then(|case| case.cluster.clone())
    }

    /// [`move_case`] into `cluster_id` (read already), in memory.
    fn join(&mut self, case_id: &str, cluster_id: &str, now: Micros) {
        let Some(Some(case)) = self.cases.get_mut(case_id) else {
            return;
        };
        // Written once at the end: one version more than read, however often the batch
        // changed it.
        if self.changed_ids.insert(case_id.to_string()) {
            self.changed.push(case_id.to_string());
            case.version += 1;
        }
        case.cluster = Some(cluster_id.to_string());
        case.update_time = now;
        if let Some(Some((_, size))) = self.clusters.get_mut(cluster_id) {
            *size += 1;
        }
    }

    /// [`emit_clustered`], with the cluster as this batch left it.
    fn clustered(&mut self, meta: &EventMeta, cluster_id: &str, case_id: &str, now: Micros) {
        let held = self.clusters.get(cluster_id).and_then(Option::as_ref);
        let event = pb::CaseClustered {
            cluster: held.map(|(c, _)| convert::cluster(c)),
            case: format!("cases/{case_id}"),
            by_staff: false,
            size: held.map_or(0, |(_, size)| i32::try_from(*size).unwrap_or(i32::MAX)),
        };
        self.events.push(EventRow::new(
            meta,
            &format!("cases/{case_id}"),
            &event,
            now,
        ));
    }

    /// Writes everything: the clusters formed, the changed memberships at the versions read (a
    /// membership changed meanwhile fails the batch, which is applied again), the events.
    async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        store::create_clusters(tx, &self.formed).await?;
        let writes: Vec<&Membership> = self
            .changed
            .iter()
            .filter_map(|id| self.cases.get(id).and_then(Option::as_ref))
            .collect();
        let written = store::set_memberships(tx, &writes).await?;
        if written != writes.len() as u64 {
            return Err(StoreError::Unavailable(sqlx::Error::Protocol(format!(
                "{} of {} cases changed while being clustered",
                writes.len() as u64 - written,
                writes.len()
            ))));
        }
        feed::append_rows(tx, self.events).await
    }
}

impl Clusterer {
    /// Looks at each new report of a batch in order, exactly as [`Clusterer::consider`] would
    /// one after the other, with a few statements for the whole batch: the candidates at each
    /// building are read once for all the batch's reports there, each case and cluster is
    /// read at most once, and the changes are written together at the end.
    pub async fn consider_batch(
        &self,
        tx: &mut Tx,
        reports: &[(NewReport, tracing::Span)],
    ) -> Result<(), StoreError> {
        let candidates = self.candidates(tx.conn(), reports).await?;
        let bests = self.bests(reports, &candidates);
        self.decide(tx, reports, &candidates, bests).await
    }

    /// Each report's candidates: recent open cases of its category at its building or nearby,
    /// strictly earlier than it, newest first.
    async fn candidates(
        &self,
        conn: &mut sqlx::AnyConnection,
        reports: &[(NewReport, tracing::Span)],
    ) -> Result<Vec<Vec<Candidate>>, StoreError> {
        let window = i64::from(self.config.window_hours) * 3_600_000_000;
        // First round of lookups, all in one or two statements: the candidates at each
        // (category, building), for every report there at once (the most recent before the
        // latest of them, enough for each report's own most recent; checked below, and a
        // report they might not cover is looked up alone in a second round), and each
        // located report's candidates nearby.
        let mut groups: HashMap<(&str, &str), Vec<&NewReport>> = HashMap::new();
        for (r, _) in reports {
            if !r.building.is_empty() {
                groups
                    .entry((r.category.as_str(), r.building.as_str()))
                    .or_default()
                    .push(r);
            }
        }
        let mut lookups = Vec::new();
        let mut group_at = HashMap::new();
        for (key, group) in &groups {
            let latest = group
                .iter()
                .map(|r| (r.create_time, r.id.as_str()))
                .max()
                .unwrap_or_default();
            let since = group
                .iter()
                .map(|r| r.create_time - window)
                .min()
                .unwrap_or_default();
            let limit = store::CANDIDATES + 2 * group.len() as i64;
            group_at.insert(*key, lookups.len());
            lookups.push(store::Lookup {
                probe: store::Probe::Building {
                    category: key.0,
                    building: key.1,
                    limit,
                },
                since,
                before: latest,
            });
        }
        let mut nearby_at = Vec::with_capacity(reports.len());
        for (r, _) in reports {
            nearby_at.push(r.location.map(|at| {
                lookups.push(store::Lookup {
                    probe: store::Probe::Nearby {
                        category: &r.category,
                        at,
                        meters: self.config.distance_meters,
                    },
                    since: r.create_time - window,
                    before: (r.create_time, r.id.as_str()),
                });
                lookups.len() - 1
            }));
        }
        let found = store::candidates(conn, &lookups).await?;
        // Each report's candidates at its building, from its group's; the second round for
        // those the group's do not cover.
        let mut at_building: Vec<Option<Vec<Candidate>>> = Vec::with_capacity(reports.len());
        let mut again = Vec::new();
        for (report, _) in reports {
            if report.building.is_empty() {
                at_building.push(Some(Vec::new()));
                continue;
            }
            let since = report.create_time - window;
            let before = (report.create_time, report.id.as_str());
            let limit = store::CANDIDATES
                + 2 * groups[&(report.category.as_str(), report.building.as_str())].len() as i64;
            let rows = &found[group_at[&(report.category.as_str(), report.building.as_str())]];
            let complete = (rows.len() as i64) < limit;
            let earlier = rows
                .iter()
                .filter(|c| (c.create_time, c.id.as_str()) < before);
            // Newest first: the report's own candidates are the first of these.
            let mine: Vec<&Candidate> = earlier
                .clone()
                .take_while(|c| c.create_time >= since)
                .take(store::CANDIDATES as usize)
                .collect();
            let covered = complete
                || mine.len() as i64 == store::CANDIDATES
                || earlier.clone().any(|c| c.create_time < since);
            if covered {
                at_building.push(Some(mine.into_iter().cloned().collect()));
            } else {
                at_building.push(None);
                again.push(store::Lookup {
                    probe: store::Probe::Building {
                        category: &report.category,
                        building: &report.building,
                        limit: store::CANDIDATES,
                    },
                    since,
                    before,
                });
            }
        }
        let mut second = store::candidates(conn, &again).await?.into_iter();
        let mut per_report = Vec::with_capacity(reports.len());
        for (i, building) in at_building.into_iter().enumerate() {
            let mut candidates = match building {
                Some(list) => list,
                None => second.next().unwrap_or_default(),
            };
            if let Some(k) = nearby_at[i] {
                candidates.extend(found[k].iter().cloned());
            }
            let mut seen = HashSet::new();
            candidates.retain(|c| seen.insert(c.id.clone()));
            per_report.push(candidates);
        }
        Ok(per_report)
    }

    /// Links each report to its best candidate, in order, as one by one would, and writes the
    /// changes. Only the reports and their best matches can change, so only they are read
    /// (and, on PostgreSQL, locked) under `tx` — whatever the candidates' lookup saw of them.
    async fn decide(
        &self,
        tx: &mut Tx,
        reports: &[(NewReport, tracing::Span)],
        per_report: &[Vec<Candidate>],
        bests: Bests,
    ) -> Result<(), StoreError> {
        let best: Vec<Option<(String, &Candidate)>> = bests
            .into_iter()
            .zip(per_report)
            .map(|(best, candidates)| best.map(|(reason, k)| (reason, &candidates[k])))
            .collect();
        // The reports that have a match and their best matches (nothing else can change) read
        // at once, their memberships written at the versions read; nothing is locked, and
        // intake's consumer of routing's feed, which changes the same cases' state but never
        // their memberships, neither waits for this batch nor fails it. Then the clusters
        // they are in, together. A batch without a match reads nothing here.
        let mut ids = Vec::new();
        for ((report, _), best) in reports.iter().zip(&best) {
            if let Some((_, other)) = best {
                ids.push(report.id.clone());
                ids.push(other.id.clone());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let mut pending = Pending::default();
        let mut cases = store::get_memberships(tx, &ids).await?;
        for id in ids {
            let case = cases.remove(&id);
            pending.cases.entry(id).or_insert(case);
        }
        let mut cluster_ids: Vec<String> = best
            .iter()
            .flatten()
            .filter_map(|(_, c)| pending.cluster_of(c))
            .collect();
        cluster_ids.sort();
        cluster_ids.dedup();
        let mut clusters = store::get_cluster_sizes(tx.conn(), &cluster_ids).await?;
        for id in cluster_ids {
            let cluster = clusters.remove(&id);
            pending.clusters.insert(id, cluster);
        }
        for ((report, span), best) in reports.iter().zip(best) {
            let Some((reason, other)) = best else {
                continue;
            };
            let meta = span.in_scope(|| EventMeta::current(format!("system:{CONSUMER}")));
            self.link(tx, &mut pending, report, reason, other, &meta)
                .instrument(span.clone())
                .await?;
        }
        pending.write(tx).await
    }

    /// Each report's best match among its candidates (it depends on the candidates' words
    /// and places only).
    fn bests(
        &self,
        reports: &[(NewReport, tracing::Span)],
        per_report: &[Vec<Candidate>],
    ) -> Bests {
        reports
            .iter()
            .zip(per_report)
            .map(|((report, _), candidates)| self.best(report, candidates))
            .collect()
    }

    /// The most similar of `candidates` at the same place: why it is the same place, and
    /// where it is among them.
    fn best(&self, report: &NewReport, candidates: &[Candidate]) -> Option<(String, usize)> {
        let mine = pairs(&report.text);
        candidates
            .iter()
            .enumerate()
            .filter_map(|(k, c)| {
                let reason = same_place(report, c, self.config.distance_meters)?;
                let score = dice_with(&mine, &report.text, &c.text);
                (score >= self.config.min_text_similarity).then_some((score, reason, k))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, reason, k)| (reason, k))
    }

    /// [`Clusterer::consider`]'s decision for one report of a batch whose best match is
    /// `other`, made in `pending` (against the cases and clusters as the batch has changed
    /// them).
    async fn link(
        &self,
        tx: &mut Tx,
        pending: &mut Pending,
        report: &NewReport,
        reason: String,
        other: &Candidate,
        meta: &EventMeta,
    ) -> Result<(), StoreError> {
        let Some(case) = pending.case(tx, &report.id).await? else {
            return Ok(());
        };
        if case.cluster.is_some() || !case.state.is_open() {
            return Ok(());
        }
        let now = self.clock.now_micros();
        let cluster_id = match pending.cluster_of(other) {
            Some(id) => {
                pending.cluster(tx, &id).await?;
                id
            }
            None => {
                let cluster = Cluster {
                    id: uuid::Uuid::now_v7().to_string(),
                    category: report.category.clone(),
                    reason,
                    create_time: now,
                    cases: Vec::new(),
                };
                let id = cluster.id.clone();
                pending
                    .clusters
                    .insert(id.clone(), Some((cluster.clone(), 0)));
                pending.formed.push(cluster);
                if pending.case(tx, &other.id).await?.is_none() {
                    return Ok(());
                }
                pending.join(&other.id, &id, now);
                pending.clustered(meta, &id, &other.id, now);
                id
            }
        };
        pending.join(&report.id, &cluster_id, now);
        pending.clustered(meta, &cluster_id, &report.id, now);
        tracing::info!(case = %report.id, cluster = %cluster_id, "report linked to a cluster");
        Ok(())
    }
}

/// Puts `case` into `cluster` (or none). The caller runs it in its transaction; a concurrent
/// change to the case's membership makes it fail, and the whole transaction is retried.
pub async fn move_case(
    tx: &mut Tx,
    case: &mut Case,
    cluster: Option<&str>,
    now: Micros,
) -> Result<(), StoreError> {
    if store::set_membership(tx, case, cluster, now).await? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(sqlx::Error::Protocol(format!(
            "case {} changed while being clustered",
            case.id
        ))))
    }
}

/// Appends `CaseClustered` for `case_id`, with the cluster as it now stands (its members
/// counted, not listed).
pub async fn emit_clustered(
    tx: &mut Tx,
    meta: &EventMeta,
    cluster_id: &str,
    case_id: &str,
    by_staff: bool,
    now: Micros,
) -> Result<(), StoreError> {
    let held = store::get_cluster_sizes(tx.conn(), &[cluster_id.to_string()])
        .await?
        .remove(cluster_id);
    let event = pb::CaseClustered {
        cluster: held.as_ref().map(|(c, _)| convert::cluster(c)),
        case: format!("cases/{case_id}"),
        by_staff,
        size: held.map_or(0, |(_, size)| i32::try_from(size).unwrap_or(i32::MAX)),
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
        // Pairs count as a multiset: a repeated pair is shared as often as both have it.
        assert_eq!(dice("aaaa", "aa"), 0.5);
        assert_eq!(dice("abcd", "a b c e"), 4.0 / 6.0);
        assert_eq!(dice("ab", "cd"), 0.0);
        assert_eq!(dice("a", "a"), 1.0);
        assert_eq!(dice("", "x"), 0.0);
        let (x, y) = ("streetlight out", "the streetlight is out");
        assert_eq!(dice(x, y), dice(y, x));
        assert!((0.0..=1.0).contains(&dice(x, y)));
    }
}

/// Cases written straight to a test database, and their `CaseSubmitted` events as a
/// consumer receives them.
#[cfg(test)]
pub(crate) mod testing {
    use crate::{
        domain::{Case, CaseState, Channel, LatLng, Place, Reporter, Submission, Urgency},
        grpc::convert::{self, Personal},
        store,
    };
    use minqing_kit::{
        db::Db,
        feed::{EventMeta, EventRow},
        time::Micros,
    };
    use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as pb};

    /// A submitted case of category `category` at `building` (and `location`).
    pub fn case(
        id: &str,
        category: &str,
        building: &str,
        location: Option<(f64, f64)>,
        text: (&str, &str),
        create_time: Micros,
    ) -> Case {
        Case {
            id: id.into(),
            request_id: format!("req-{id}"),
            recorded_by: "window_staff:window-07".into(),
            submission: Submission {
                channel: Channel::Hotline,
                channel_details: Default::default(),
                reporter: Reporter::default(),
                place: Place {
                    district: "620102".into(),
                    street: "620102001".into(),
                    community: "620102001001".into(),
                    grid: "620102001001-g01".into(),
                    building: building.into(),
                },
                location: location.map(|(latitude, longitude)| LatLng {
                    latitude,
                    longitude,
                }),
                address: String::new(),
                category: category.into(),
                title: text.0.into(),
                description: text.1.into(),
                attachments: Vec::new(),
                urgency: Urgency::Normal,
                occur_time: None,
            },
            state: CaseState::Submitted,
            disposition: None,
            handling_unit: String::new(),
            due_time: None,
            cluster: None,
            supplement_count: 0,
            withdraw_reason: String::new(),
            create_time,
            update_time: create_time,
            version: 1,
            cluster_version: 0,
        }
    }

    /// Writes `cases` with their `CaseSubmitted` events; returns the events as delivered.
    pub async fn submit(db: &Db, cases: &[Case]) -> Vec<events_pb::Event> {
        for c in cases {
            let event = EventRow::new(
                &EventMeta::current("window_staff:window-07"),
                &c.name(),
                &pb::CaseSubmitted {
                    case: Some(convert::case(c, Personal::Shown)),
                },
                c.create_time,
            );
            store::submit_case(db, c, "hash", event).await.unwrap();
        }
        minqing_kit::testing::whole_feed(db)
            .await
            .into_iter()
            .map(|e| minqing_kit::feed::to_proto(e, "intake"))
            .collect()
    }
}

#[cfg(test)]
mod batch_tests {
    //! The clusterer applied to a whole batch in one transaction links exactly as it does
    //! applied to each report alone.

    use std::collections::HashMap;

    use prost::{Message, Name};
    use sqlx::Row;

    use super::{Clusterer, testing};
    use crate::{config::ClusterConfig, store};
    use minqing_kit::{
        backend_tests,
        db::{Backend, Db},
        feed::Apply,
        testing::TestDatabase,
        time::Clock,
    };
    use minqing_proto::minqing::intake::v1 as pb;

    const B1: &str = "620102001001-g01-b01";
    const B2: &str = "620102001001-g01-b02";
    const LIGHTS: &str = "onsite-environment-02";

    /// Reports over three hours: similar ones at two buildings, some with coordinates (one at
    /// a third building but within 150 m of the first), unrelated text, another category, and
    /// more at one building than one batch's candidates would cover on their own.
    fn reports(start: i64) -> Vec<crate::domain::Case> {
        let lights = ("路灯不亮", "3号楼门口的路灯不亮了，晚上很黑");
        let lights2 = ("路灯坏了", "3号楼路灯坏了好几天，晚上走路很黑");
        let noise = ("噪音", "楼下商铺音响太吵，影响休息");
        let near = Some((36.0651, 103.8184));
        let mut out = vec![
            testing::case("c00", LIGHTS, B1, near, lights, start),
            testing::case("c01", LIGHTS, B1, None, lights2, start + 1_000_000),
            testing::case("c02", LIGHTS, B1, None, noise, start + 2_000_000),
            testing::case(
                "c03",
                LIGHTS,
                "620102001001-g01-b03",
                Some((36.0652, 103.8185)),
                lights,
                start + 3_000_000,
            ),
            testing::case("c04", LIGHTS, B2, None, lights, start + 4_000_000),
            testing::case(
                "c05",
                "onsite-environment-05",
                B1,
                None,
                lights,
                start + 5_000_000,
            ),
            testing::case("c06", LIGHTS, B2, None, lights2, start + 6_000_000),
            testing::case("c07", LIGHTS, B1, None, noise, start + 7_000_000),
        ];
        for i in 0..40 {
            let b = if i % 3 == 0 { B2 } else { B1 };
            let text = if i % 5 == 0 { noise } else { lights2 };
            out.push(testing::case(
                &format!("c1{i:02}"),
                LIGHTS,
                b,
                None,
                text,
                start + 10_000_000 + i * 60_000_000,
            ));
        }
        // Reports whose events are not delivered (another consumer's share, say) but which
        // are candidates all the same: so many between the batch's reports at one building
        // that the batch's shared lookup cannot cover the earliest, which is looked up alone.
        for i in 0..60 {
            out.push(testing::case(
                &format!("c2{i:02}"),
                LIGHTS,
                B1,
                None,
                lights2,
                start + 10_000_001 + i * 40_000_000,
            ));
        }
        out
    }

    /// The events delivered: all but those of the `c2…` reports.
    fn delivered(
        events: Vec<minqing_proto::minqing::events::v1::Event>,
    ) -> Vec<minqing_proto::minqing::events::v1::Event> {
        events
            .into_iter()
            .filter(|e| !e.subject.starts_with("cases/c2"))
            .collect()
    }

    /// Each case's cluster (named by its oldest member) and etag, and the feed's
    /// `CaseClustered` events with their clusters' sizes.
    async fn snapshot(db: &Db) -> Vec<String> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT id, cluster_id, version + COALESCE(cluster_version, 0) FROM cases \
             LEFT JOIN case_clusters ON case_clusters.case_id = cases.id ORDER BY id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        let mut first: HashMap<String, String> = HashMap::new();
        for r in &rows {
            if let Some(c) = r.get::<Option<String>, _>(1) {
                first.entry(c).or_insert_with(|| r.get(0));
            }
        }
        for r in &rows {
            let cluster = r
                .get::<Option<String>, _>(1)
                .map(|c| first[&c].clone())
                .unwrap_or_default();
            out.push(format!(
                "case {} cluster {cluster} version {}",
                r.get::<String, _>(0),
                r.get::<i64, _>(2)
            ));
        }
        // No case leaves a cluster here: the n-th case to join one makes it n strong.
        let mut joined: HashMap<String, i32> = HashMap::new();
        for e in minqing_kit::testing::whole_feed(db).await {
            if e.kind == pb::CaseClustered::full_name() {
                let c = pb::CaseClustered::decode(e.payload.as_slice()).unwrap();
                let cluster = c.cluster.unwrap_or_default();
                assert!(
                    cluster.cases.is_empty(),
                    "members are not listed: {cluster:?}"
                );
                let n = joined.entry(cluster.name.clone()).or_default();
                *n += 1;
                assert_eq!(c.size, *n, "{} joining {}", c.case, cluster.name);
                out.push(format!(
                    "event {} {} size {} reason {}",
                    e.kind, e.subject, c.size, cluster.reason
                ));
            }
        }
        out
    }

    async fn a_batch_clusters_as_one_by_one_does(backend: Backend) {
        let (Some(one), Some(each)) = (
            TestDatabase::new(backend).await,
            TestDatabase::new(backend).await,
        ) else {
            return;
        };
        let clock = Clock::manual("2026-11-23T02:00:00Z".parse().unwrap());
        let cases = reports(clock.now_micros());
        let batch_db = one.db("intake", &store::MIGRATIONS).await;
        let single_db = each.db("intake", &store::MIGRATIONS).await;
        let clusterer = |db: &Db| Clusterer {
            config: ClusterConfig::default(),
            clock: clock.clone(),
            db: db.clone(),
        };

        // The batch as the consumer applies it: candidates looked up before the transaction.
        let events = delivered(testing::submit(&batch_db, &cases).await);
        let batched = clusterer(&batch_db);
        let prepared = batched.prepare(&events).await.unwrap();
        let mut tx = batch_db.begin().await.unwrap();
        batched
            .apply_prepared(&mut tx, &events, prepared)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let clusterer = clusterer(&single_db);
        let events = delivered(testing::submit(&single_db, &cases).await);
        for e in &events {
            let mut tx = single_db.begin().await.unwrap();
            clusterer
                .apply(&mut tx, std::slice::from_ref(e))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }

        let (b, s) = (snapshot(&batch_db).await, snapshot(&single_db).await);
        assert_eq!(b, s);
        let text = b.join("\n");
        assert!(text.contains("case c01 cluster c00"), "{text}");
        assert!(
            text.contains("case c03 cluster c00"),
            "within 150 m\n{text}"
        );
        assert!(text.contains("case c02 cluster c02"), "other words\n{text}");
        assert!(
            text.contains("case c07 cluster c02"),
            "the same other words\n{text}"
        );
        assert!(
            text.contains("case c05 cluster  "),
            "another category\n{text}"
        );
        assert!(text.contains("case c06 cluster c04"), "{text}");
        assert!(text.contains("case c139 cluster c"), "{text}");
        batch_db.close().await;
        single_db.close().await;
    }

    backend_tests!(a_batch_clusters_as_one_by_one_does);
}
