//! The volunteers matching ranks, in memory: entries with posting lists by skill, by
//! community and by map cell, so one need's best candidates among 100,000 volunteers are found
//! by looking only at those who could qualify.
//!
//! Postings carry each volunteer's community and position, so the distance rule is applied
//! while scanning a list, without touching the (much larger, scattered) entries of those who
//! live too far away; entries are read only for volunteers within reach.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use crate::rank::{self, Entry, Exclusion, Fit, NeedView, Point, Purpose, Rules};

/// Map cells are this many degrees on a side (about 5.5 km north–south).
const CELL_DEG: f64 = 0.05;

fn cell_of(p: Point) -> (i32, i32) {
    (
        (p.lat / CELL_DEG).floor() as i32,
        (p.lng / CELL_DEG).floor() as i32,
    )
}

/// One volunteer in a posting list: enough to apply the distance rule without the entry.
#[derive(Debug, Clone, Copy)]
struct Posting {
    slot: u32,
    community: u32,
    /// Position; NaN when unknown.
    lat: f64,
    lng: f64,
}

impl Posting {
    fn point(&self) -> Option<Point> {
        (!self.lat.is_nan()).then_some(Point {
            lat: self.lat,
            lng: self.lng,
        })
    }
}

/// Volunteers by slot, with posting lists.
#[derive(Debug, Default, Clone)]
pub struct Pool {
    entries: Vec<Option<Entry>>,
    by_id: HashMap<String, u32>,
    by_skill: HashMap<String, Vec<Posting>>,
    by_community: HashMap<String, Vec<Posting>>,
    by_cell: HashMap<(i32, i32), Vec<Posting>>,
    places: HashMap<String, u32>,
    live: usize,
}

/// A need's best candidates and why the others were left out.
#[derive(Debug, Clone, Default)]
pub struct Ranked {
    /// Best first: `(slot, fit)`.
    pub top: Vec<(u32, Fit)>,
    /// Volunteers passing every rule.
    pub eligible: u32,
    /// Volunteers in the pool.
    pub considered: u32,
    /// Left out, by reason.
    pub exclusions: BTreeMap<Exclusion, u32>,
    /// The fit cost of the best one left out of `top` (for pricing), if any.
    pub next_cost: Option<i64>,
}

/// A fit's cost in the flow: how far the score falls short of 1, in millionths.
pub fn cost(fit: &Fit) -> i64 {
    ((1.0 - fit.score).clamp(0.0, 1.0) * 1e6).round() as i64
}

/// Where a need's candidates come from.
struct Sources<'p> {
    lists: Vec<&'p [Posting]>,
    /// The rule everyone outside `lists` fails.
    skipped: Exclusion,
    /// With cells: their range (the community list then skips those inside it).
    range: Option<CellRange>,
    /// The need's position.
    point: Option<Point>,
    /// The need's interned community.
    community: u32,
    /// The need's interned `[community, grid, building]`.
    ids: [u32; 3],
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Volunteers in the pool.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The entry in `slot`.
    pub fn entry(&self, slot: u32) -> Option<&Entry> {
        self.entries.get(slot as usize).and_then(Option::as_ref)
    }

    /// Slots in use (an upper bound on slot numbers).
    pub fn slots(&self) -> usize {
        self.entries.len()
    }

    /// The entry for volunteer `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).and_then(|s| self.entry(*s))
    }

    fn intern(&mut self, code: &str) -> u32 {
        if code.is_empty() {
            return 0;
        }
        let next = self.places.len() as u32 + 1;
        *self.places.entry(code.to_string()).or_insert(next)
    }

    fn place_id(&self, code: &str) -> u32 {
        // 0 for unknown or empty codes: no entry carries 0, so they never match.
        self.places.get(code).copied().unwrap_or(0)
    }

    fn unlist(&mut self, slot: u32) {
        let Some(Some(old)) = self.entries.get(slot as usize) else {
            return;
        };
        let skills: Vec<String> = old.skills.iter().map(|s| s.0.clone()).collect();
        let community = old.community.clone();
        let cell = old.point.map(cell_of);
        let remove = |list: Option<&mut Vec<Posting>>| {
            if let Some(list) = list {
                list.retain(|p| p.slot != slot);
            }
        };
        for s in skills {
            remove(self.by_skill.get_mut(&s));
        }
        remove(self.by_community.get_mut(&community));
        if let Some(c) = cell {
            remove(self.by_cell.get_mut(&c));
        }
    }

    /// Puts `entry` in, replacing an older version of it; an entry older than the one held
    /// is ignored (reloads may race).
    pub fn upsert(&mut self, mut entry: Entry) {
        let slot = match self.by_id.get(&entry.id) {
            Some(&slot) => {
                if let Some(Some(old)) = self.entries.get(slot as usize)
                    && old.version > entry.version
                {
                    return;
                }
                self.unlist(slot);
                if self.entries[slot as usize].is_none() {
                    self.live += 1;
                }
                slot
            }
            None => {
                let slot = self.entries.len() as u32;
                self.entries.push(None);
                self.by_id.insert(entry.id.clone(), slot);
                self.live += 1;
                slot
            }
        };
        entry.place_ids = [
            self.intern(&entry.community),
            self.intern(&entry.grid),
            self.intern(&entry.building),
        ];
        let posting = Posting {
            slot,
            community: entry.place_ids[0],
            lat: entry.point.map_or(f64::NAN, |p| p.lat),
            lng: entry.point.map_or(f64::NAN, |p| p.lng),
        };
        for (s, _) in &entry.skills {
            self.by_skill.entry(s.clone()).or_default().push(posting);
        }
        self.by_community
            .entry(entry.community.clone())
            .or_default()
            .push(posting);
        if let Some(p) = entry.point {
            self.by_cell.entry(cell_of(p)).or_default().push(posting);
        }
        self.entries[slot as usize] = Some(entry);
    }

    /// Takes volunteer `id` out (retired).
    pub fn remove(&mut self, id: &str) {
        if let Some(&slot) = self.by_id.get(id) {
            self.unlist(slot);
            if self.entries[slot as usize].take().is_some() {
                self.live -= 1;
            }
        }
    }

    /// The postings worth looking at for `need`.
    fn sources(&self, need: &NeedView<'_>, rules: &Rules) -> Sources<'_> {
        let spec = need.spec;
        let ids = [
            self.place_id(&spec.place.community),
            self.place_id(&spec.place.grid),
            self.place_id(&spec.place.building),
        ];
        let skill_list: Option<&[Posting]> = if spec.skills.is_empty() {
            None
        } else {
            Some(
                spec.skills
                    .iter()
                    .map(|s| self.by_skill.get(&s.skill).map_or(&[][..], Vec::as_slice))
                    .min_by_key(|l| l.len())
                    .unwrap_or(&[]),
            )
        };
        let community: &[Posting] = self
            .by_community
            .get(&spec.place.community)
            .map_or(&[][..], Vec::as_slice);
        let base = |lists, skipped, range| Sources {
            lists,
            skipped,
            range,
            point: need.point,
            community: ids[0],
            ids,
        };
        let Some(point) = need.point else {
            // Without the need's position only its own community qualifies.
            return match skill_list {
                Some(l) if l.len() < community.len() => base(vec![l], Exclusion::Skill, None),
                _ => base(vec![community], Exclusion::Distance, None),
            };
        };
        let range = CellRange::around(point, rules.max_distance_m);
        let mut lists: Vec<&[Posting]> = Vec::new();
        let mut spatial = community.len();
        for key in range.keys() {
            if let Some(l) = self.by_cell.get(&key) {
                spatial += l.len();
                lists.push(l);
            }
        }
        match skill_list {
            Some(l) if l.len() <= spatial => base(vec![l], Exclusion::Skill, None),
            _ => {
                lists.push(community);
                base(lists, Exclusion::Distance, Some(range))
            }
        }
    }

    /// Calls `f` for every volunteer the index cannot rule out, and counts the others.
    fn scan<'p>(
        &'p self,
        src: &Sources<'_>,
        rules: &Rules,
        mut far: impl FnMut(),
        mut f: impl FnMut(u32, &'p Entry),
    ) -> u32 {
        let last = src.lists.len().saturating_sub(1);
        let mut looked = 0;
        for (li, list) in src.lists.iter().enumerate() {
            for p in *list {
                // The community list is added to the cells: skip those the cells covered.
                if src.range.is_some()
                    && li == last
                    && let (Some(r), Some(pt)) = (src.range, p.point())
                    && r.contains(cell_of(pt))
                {
                    continue;
                }
                looked += 1;
                if p.community != src.community || src.community == 0 {
                    let within = match (src.point, p.point()) {
                        (Some(a), Some(b)) => a.distance_m(b) <= rules.max_distance_m,
                        _ => false,
                    };
                    if !within {
                        far();
                        continue;
                    }
                }
                if let Some(e) = self.entry(p.slot) {
                    f(p.slot, e);
                }
            }
        }
        looked
    }

    /// Ranks the pool for `need`: the best `k` (by score, then registration order), how many
    /// qualify, and why the rest do not. Volunteers the index rules out without examining them
    /// (no such skill, too far away) are counted under SKILL or DISTANCE.
    pub fn rank(&self, need: &NeedView<'_>, rules: &Rules, k: usize) -> Ranked {
        let src = self.sources(need, rules);
        let mut ranked = Ranked {
            considered: self.live as u32,
            ..Default::default()
        };
        let mut heap: BinaryHeap<Reverse<(u64, Reverse<u32>)>> = BinaryHeap::with_capacity(k + 2);
        let mut far = 0u32;
        let mut exclusions: BTreeMap<Exclusion, u32> = BTreeMap::new();
        let mut eligible = 0u32;
        let looked = self.scan(
            &src,
            rules,
            || far += 1,
            |slot, e| match rank::evaluate_with(e, need, rules, Purpose::Offer, Some(src.ids)) {
                Ok(fit) => {
                    eligible += 1;
                    // Scores are ≥ 0, so their bit patterns order like the numbers.
                    let key = (fit.score.max(0.0).to_bits(), Reverse(slot));
                    if heap.len() <= k {
                        heap.push(Reverse(key));
                    } else if let Some(Reverse(min)) = heap.peek()
                        && key > *min
                    {
                        heap.pop();
                        heap.push(Reverse(key));
                    }
                }
                Err(x) => *exclusions.entry(x).or_default() += 1,
            },
        );
        ranked.eligible = eligible;
        ranked.exclusions = exclusions;
        if far > 0 {
            *ranked.exclusions.entry(Exclusion::Distance).or_default() += far;
        }
        let skipped = (self.live as u32).saturating_sub(looked);
        if skipped > 0 {
            *ranked.exclusions.entry(src.skipped).or_default() += skipped;
        }
        let mut kept: Vec<(u64, u32)> = heap
            .into_iter()
            .map(|Reverse((bits, Reverse(slot)))| (bits, slot))
            .collect();
        kept.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let fit_of = |slot: u32| {
            self.entry(slot).and_then(|e| {
                rank::evaluate_with(e, need, rules, Purpose::Offer, Some(src.ids)).ok()
            })
        };
        if kept.len() > k {
            ranked.next_cost = fit_of(kept[k].1).map(|f| cost(&f));
            kept.truncate(k);
        }
        ranked.top = kept
            .into_iter()
            .filter_map(|(_, slot)| fit_of(slot).map(|f| (slot, f)))
            .collect();
        ranked
    }

    /// Calls `f` for every volunteer eligible for `need`.
    pub fn for_each_eligible(
        &self,
        need: &NeedView<'_>,
        rules: &Rules,
        mut f: impl FnMut(u32, &Entry, Fit),
    ) {
        let src = self.sources(need, rules);
        self.scan(
            &src,
            rules,
            || {},
            |slot, e| {
                if let Ok(fit) = rank::evaluate_with(e, need, rules, Purpose::Offer, Some(src.ids))
                {
                    f(slot, e, fit);
                }
            },
        );
    }
}

/// The map cells within a distance of a point.
#[derive(Debug, Clone, Copy)]
struct CellRange {
    lat: (i32, i32),
    lng: (i32, i32),
}

impl CellRange {
    fn around(p: Point, meters: f64) -> Self {
        const M_PER_DEGREE: f64 = 111_194.9;
        let dlat = meters / M_PER_DEGREE;
        let dlng = meters / (M_PER_DEGREE * p.lat.to_radians().cos().max(0.01));
        let (a, b) = (
            cell_of(Point {
                lat: p.lat - dlat,
                lng: p.lng - dlng,
            }),
            cell_of(Point {
                lat: p.lat + dlat,
                lng: p.lng + dlng,
            }),
        );
        CellRange {
            lat: (a.0, b.0),
            lng: (a.1, b.1),
        }
    }

    fn keys(self) -> impl Iterator<Item = (i32, i32)> {
        (self.lat.0..=self.lat.1).flat_map(move |a| (self.lng.0..=self.lng.1).map(move |b| (a, b)))
    }

    fn contains(self, c: (i32, i32)) -> bool {
        (self.lat.0..=self.lat.1).contains(&c.0) && (self.lng.0..=self.lng.1).contains(&c.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        calendar::Calendar,
        config::Weights,
        domain::{
            Availability, Capacity, ClaimPolicy, NeedSpec, Place, SkillRequirement, Urgency,
            VolunteerState, WeeklyWindow,
        },
        rank::Load,
    };
    use std::collections::HashSet;

    fn entry(id: &str, community: &str, lat: f64, skill: &str) -> Entry {
        Entry {
            id: id.into(),
            version: 1,
            display_name: id.into(),
            state: VolunteerState::Active,
            pause_until: None,
            consent_offers: true,
            party_member: false,
            skills: vec![(skill.into(), None)],
            languages: vec![],
            community: community.into(),
            grid: format!("{community}-g01"),
            building: format!("{community}-g01-b01"),
            place_ids: [0; 3],
            point: Some(Point { lat, lng: 103.8 }),
            availability: Availability {
                weekly: (1..=7)
                    .map(|day| WeeklyWindow {
                        day,
                        start: 0,
                        end: 1440,
                    })
                    .collect(),
                exceptions: vec![],
            },
            capacity: Capacity {
                weekly_minutes: 600,
                max_open_tasks: 3,
            },
            load: Load::default(),
        }
    }

    #[test]
    fn ranking_uses_the_index_and_counts_everyone() {
        let mut pool = Pool::new();
        pool.upsert(entry("near", "c1", 36.0, "care"));
        pool.upsert(entry("same-community-far", "c1", 36.2, "care"));
        pool.upsert(entry("far", "c2", 36.2, "care"));
        pool.upsert(entry("other-skill", "c1", 36.0, "tutoring"));
        let spec = NeedSpec {
            title: "t".into(),
            description: String::new(),
            place: Place {
                community: "c1".into(),
                grid: "c1-g01".into(),
                building: "c1-g01-b02".into(),
                ..Default::default()
            },
            address: String::new(),
            location: None,
            category: String::new(),
            skills: vec![SkillRequirement {
                skill: "care".into(),
                credential_required: false,
            }],
            languages: vec![],
            start: 0,
            end: 3_600_000_000 * 4,
            effort_minutes: 60,
            people_needed: 1,
            claim_policy: ClaimPolicy::FirstCome,
            open_to: vec![],
            party_members_only: false,
            urgency: Urgency::Normal,
        };
        let asked = HashSet::new();
        let view = NeedView {
            spec: &spec,
            point: Some(Point {
                lat: 36.0,
                lng: 103.8,
            }),
            asked: &asked,
            week: 0,
        };
        let rules = Rules {
            weights: Weights::default(),
            max_distance_m: 5_000.0,
            calendar: Calendar::new(480),
            now: 0,
        };
        let ranked = pool.rank(&view, &rules, 10);
        let ids: Vec<&str> = ranked
            .top
            .iter()
            .map(|(s, _)| pool.entry(*s).unwrap().id.as_str())
            .collect();
        assert_eq!(ids, vec!["near", "same-community-far"]);
        assert_eq!(ranked.eligible, 2);
        assert_eq!(ranked.considered, 4);
        assert_eq!(ranked.exclusions.get(&Exclusion::Distance), Some(&1));
        assert_eq!(ranked.exclusions.get(&Exclusion::Skill), Some(&1));
        // Updates move volunteers between lists; removal takes them out.
        let mut moved = entry("far", "c1", 36.0, "care");
        moved.version = 2;
        pool.upsert(moved);
        pool.remove("near");
        let ranked = pool.rank(&view, &rules, 10);
        assert_eq!(ranked.eligible, 2);
        assert_eq!(pool.len(), 3);
    }
}
