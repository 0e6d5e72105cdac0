//! The volunteers matching ranks, in memory: entries with posting lists by skill, by
//! community and by map cell, so one need's best candidates among 100,000 volunteers are found
//! by looking only at those who could qualify.

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

/// Volunteers by slot, with posting lists.
#[derive(Debug, Default, Clone)]
pub struct Pool {
    entries: Vec<Option<Entry>>,
    by_id: HashMap<String, u32>,
    by_skill: HashMap<String, Vec<u32>>,
    by_community: HashMap<String, Vec<u32>>,
    by_cell: HashMap<(i32, i32), Vec<u32>>,
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

    fn unlist(&mut self, slot: u32) {
        let Some(Some(old)) = self.entries.get(slot as usize) else {
            return;
        };
        let remove = |list: Option<&mut Vec<u32>>| {
            if let Some(list) = list {
                list.retain(|s| *s != slot);
            }
        };
        let (skills, community, cell) = (
            old.skills.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
            old.community.clone(),
            old.point.map(cell_of),
        );
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
    pub fn upsert(&mut self, entry: Entry) {
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
        for (s, _) in &entry.skills {
            self.by_skill.entry(s.clone()).or_default().push(slot);
        }
        self.by_community
            .entry(entry.community.clone())
            .or_default()
            .push(slot);
        if let Some(p) = entry.point {
            self.by_cell.entry(cell_of(p)).or_default().push(slot);
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

    /// The slots worth evaluating for `need`, and the rule that rules out everyone else.
    fn candidates(
        &self,
        need: &NeedView<'_>,
        rules: &Rules,
    ) -> (Vec<&[u32]>, Exclusion, Option<CellRange>) {
        let spec = need.spec;
        let skill_list: Option<&[u32]> = if spec.skills.is_empty() {
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
        let community: &[u32] = self
            .by_community
            .get(&spec.place.community)
            .map_or(&[][..], Vec::as_slice);
        let Some(point) = need.point else {
            // Without the need's position only its own community qualifies.
            return match skill_list {
                Some(l) if l.len() < community.len() => (vec![l], Exclusion::Skill, None),
                _ => (vec![community], Exclusion::Distance, None),
            };
        };
        let range = CellRange::around(point, rules.max_distance_m);
        let mut lists: Vec<&[u32]> = Vec::new();
        let mut spatial = community.len();
        for key in range.keys() {
            if let Some(l) = self.by_cell.get(&key) {
                spatial += l.len();
                lists.push(l);
            }
        }
        match skill_list {
            Some(l) if l.len() <= spatial => (vec![l], Exclusion::Skill, None),
            _ => {
                lists.push(community);
                (lists, Exclusion::Distance, Some(range))
            }
        }
    }

    /// Ranks the pool for `need`: the best `k` (by score, then registration order), how many
    /// qualify, and why the rest do not.
    pub fn rank(&self, need: &NeedView<'_>, rules: &Rules, k: usize) -> Ranked {
        let (lists, skipped_reason, range) = self.candidates(need, rules);
        let mut ranked = Ranked {
            considered: self.live as u32,
            ..Default::default()
        };
        let mut heap: BinaryHeap<Reverse<(u64, Reverse<u32>)>> = BinaryHeap::with_capacity(k + 2);
        let mut looked = 0u32;
        let last = lists.len().saturating_sub(1);
        for (li, list) in lists.iter().enumerate() {
            for &slot in *list {
                let Some(e) = self.entry(slot) else { continue };
                // The community list is added to the cells: skip those the cells covered.
                if li == last
                    && let (Some(r), Some(p)) = (range, e.point)
                    && r.contains(cell_of(p))
                {
                    continue;
                }
                looked += 1;
                match rank::evaluate(e, need, rules, Purpose::Offer) {
                    Ok(fit) => {
                        ranked.eligible += 1;
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
                    Err(x) => *ranked.exclusions.entry(x).or_default() += 1,
                }
            }
        }
        let skipped = (self.live as u32).saturating_sub(looked);
        if skipped > 0 {
            *ranked.exclusions.entry(skipped_reason).or_default() += skipped;
        }
        let mut kept: Vec<(u64, u32)> = heap
            .into_iter()
            .map(|Reverse((bits, Reverse(slot)))| (bits, slot))
            .collect();
        kept.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        if kept.len() > k {
            let (_, slot) = kept[k];
            ranked.next_cost = self
                .entry(slot)
                .and_then(|e| rank::evaluate(e, need, rules, Purpose::Offer).ok())
                .map(|f| cost(&f));
            kept.truncate(k);
        }
        ranked.top = kept
            .into_iter()
            .filter_map(|(_, slot)| {
                let e = self.entry(slot)?;
                rank::evaluate(e, need, rules, Purpose::Offer)
                    .ok()
                    .map(|f| (slot, f))
            })
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
        let (lists, _, range) = self.candidates(need, rules);
        let last = lists.len().saturating_sub(1);
        for (li, list) in lists.iter().enumerate() {
            for &slot in *list {
                let Some(e) = self.entry(slot) else { continue };
                if li == last
                    && let (Some(r), Some(p)) = (range, e.point)
                    && r.contains(cell_of(p))
                {
                    continue;
                }
                if let Ok(fit) = rank::evaluate(e, need, rules, Purpose::Offer) {
                    f(slot, e, fit);
                }
            }
        }
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
