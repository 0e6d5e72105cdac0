//! Batch planning: an optimal assignment of many needs' places to many volunteers.
//!
//! Every eligible (need, volunteer) pair is scored once (on all cores); each need keeps its
//! best few; the flow ([`crate::flow`]) finds the optimum over those and proves it optimal
//! over every eligible pair, fetching more candidates for the needs that could still gain.
//!
//! Capacity: a volunteer takes at most as many places as they have open-task room, and in
//! each week (of the needs' starts) at most as many as their largest eligible task that week
//! fits into the minutes left — so any combination the plan picks fits both limits.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    domain::{Need, Urgency},
    flow::{self, Bucket, Instance},
    pool::{Pool, cost},
    rank::{Fit, NeedView, Point, Rules},
};

/// A need to plan.
#[derive(Debug, Clone)]
pub struct PlanNeed {
    /// The need.
    pub need: Need,
    /// Where its work is.
    pub point: Option<Point>,
    /// Volunteers already asked.
    pub asked: HashSet<String>,
    /// Places to fill.
    pub places: u32,
}

/// One planned offer.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index into the plan's needs.
    pub need: usize,
    /// The volunteer's pool slot.
    pub slot: u32,
    /// Their fit.
    pub fit: Fit,
}

/// A plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Planned offers, by need.
    pub assignments: Vec<Planned>,
    /// `(need index, places unfilled, eligible volunteers)`.
    pub unfilled: Vec<(usize, u32, u32)>,
    /// Volunteers eligible for at least one need.
    pub volunteers_considered: u32,
    /// Places asked for.
    pub places_requested: u32,
    /// Edges in the final flow.
    pub edges: usize,
    /// Solve rounds (1 when the first candidates sufficed).
    pub rounds: usize,
}

fn urgency_rank(u: Urgency) -> i64 {
    match u {
        Urgency::Low => 1,
        Urgency::Normal => 2,
        Urgency::High => 3,
        Urgency::Emergency => 4,
    }
}

/// One thread's scan: per need `(index, best edges, eligible count)`, and its largest
/// efforts per (slot, week).
type ScanPart = (Vec<(usize, Vec<(u32, i64)>, u32)>, Vec<u32>);

struct Scan {
    /// Per need: best `k0 + 1` as `(slot, cost)`, sorted.
    best: Vec<Vec<(u32, i64)>>,
    eligible: Vec<u32>,
    /// Per (slot, week index): the largest eligible effort; 0 when none.
    max_effort: Vec<u32>,
}

fn view<'a>(n: &'a PlanNeed, rules: &Rules) -> NeedView<'a> {
    NeedView {
        spec: &n.need.spec,
        point: n.point,
        asked: &n.asked,
        week: rules.calendar.week(n.need.spec.start),
    }
}

fn best_k(pool: &Pool, n: &PlanNeed, rules: &Rules, k: usize) -> (Vec<(u32, i64)>, Option<i64>) {
    let ranked = pool.rank(&view(n, rules), rules, k);
    (
        ranked.top.iter().map(|(s, f)| (*s, cost(f))).collect(),
        ranked.next_cost,
    )
}

/// Plans `needs` against `pool`.
pub fn plan(pool: &Pool, needs: &[PlanNeed], rules: &Rules, threads: usize) -> Plan {
    let mut weeks: Vec<i64> = needs
        .iter()
        .map(|n| rules.calendar.week(n.need.spec.start))
        .collect();
    weeks.sort_unstable();
    weeks.dedup();
    let week_index: HashMap<i64, usize> = weeks.iter().enumerate().map(|(i, w)| (*w, i)).collect();
    let nw = weeks.len().max(1);
    let k0 = |n: &PlanNeed| (4 * n.places as usize).max(16);

    // Score every eligible pair once, splitting the needs between threads.
    let threads = threads.clamp(1, 16);
    let scan_part = |part: usize| -> ScanPart {
        let mut max_effort = vec![0u32; pool.slots() * nw];
        let mut out = Vec::new();
        for (i, n) in needs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % threads == part)
        {
            let k = k0(n) + 1;
            let w = week_index[&rules.calendar.week(n.need.spec.start)];
            let effort = n.need.spec.effort_minutes;
            let mut eligible = 0u32;
            let mut best: Vec<(u32, i64)> = Vec::with_capacity(k + 1);
            pool.for_each_eligible(&view(n, rules), rules, |slot, _, fit| {
                eligible += 1;
                let cell = &mut max_effort[slot as usize * nw + w];
                *cell = (*cell).max(effort);
                let c = cost(&fit);
                if best.len() < k || best.last().is_some_and(|l| (c, slot) < (l.1, l.0)) {
                    let at = best.partition_point(|x| (x.1, x.0) < (c, slot));
                    best.insert(at, (slot, c));
                    best.truncate(k);
                }
            });
            out.push((i, best, eligible));
        }
        (out, max_effort)
    };
    let parts: Vec<_> = if threads == 1 || needs.len() < 2 {
        vec![scan_part(0)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|p| s.spawn(move || scan_part(p)))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    };
    let mut scan = Scan {
        best: vec![Vec::new(); needs.len()],
        eligible: vec![0; needs.len()],
        max_effort: vec![0; pool.slots() * nw],
    };
    for (results, max_effort) in parts {
        for (i, best, eligible) in results {
            scan.best[i] = best;
            scan.eligible[i] = eligible;
        }
        for (a, b) in scan.max_effort.iter_mut().zip(max_effort) {
            *a = (*a).max(b);
        }
    }

    // Buckets: one per (volunteer, week) with an eligible need; volunteers numbered densely.
    let mut inst = Instance::default();
    let mut bucket_of: HashMap<(u32, usize), u32> = HashMap::new();
    let mut volunteer_of: HashMap<u32, u32> = HashMap::new();
    let mut slot_of: Vec<u32> = Vec::new();
    for slot in 0..pool.slots() as u32 {
        let Some(e) = pool.entry(slot) else { continue };
        for (w, week) in weeks.iter().enumerate() {
            let effort = scan.max_effort[slot as usize * nw + w];
            if effort == 0 {
                continue;
            }
            let left = e
                .capacity
                .weekly_minutes
                .saturating_sub(e.load.week_minutes(*week));
            // Every eligible task fits on its own (eligibility checked it), so one place is
            // always safe; more only as many as the largest eligible task fits.
            let slots = (left / effort).max(1);
            let v = *volunteer_of.entry(slot).or_insert_with(|| {
                slot_of.push(slot);
                inst.volunteer_slots
                    .push(e.capacity.max_open_tasks.saturating_sub(e.load.open_tasks));
                (slot_of.len() - 1) as u32
            });
            bucket_of.insert((slot, w), inst.buckets.len() as u32);
            inst.buckets.push(Bucket {
                volunteer: v,
                slots,
            });
        }
    }
    let total: i64 = needs.iter().map(|n| i64::from(n.places)).sum();
    inst.demands = needs.iter().map(|n| n.places).collect();
    // Larger than any sum of edge-cost differences: fill places first, urgent ones first.
    inst.unfilled_cost = needs
        .iter()
        .map(|n| (total + 1) * 1_000_001 * urgency_rank(n.need.spec.urgency))
        .collect();
    let week_of_need: Vec<usize> = needs
        .iter()
        .map(|n| week_index[&rules.calendar.week(n.need.spec.start)])
        .collect();
    let to_edges = |i: usize, list: &[(u32, i64)], k: usize| -> flow::Fetched {
        let w = week_of_need[i];
        let kept: Vec<(u32, i64)> = list
            .iter()
            .take(k)
            .filter_map(|(slot, c)| bucket_of.get(&(*slot, w)).map(|b| (*b, *c)))
            .collect();
        (kept, list.get(k).map(|x| x.1))
    };
    let mut first: Vec<Option<flow::Fetched>> = scan
        .best
        .iter()
        .enumerate()
        .map(|(i, list)| Some(to_edges(i, list, k0(&needs[i]))))
        .collect();
    let (inst, solution, rounds) = flow::solve_priced(
        &inst,
        |i| k0(&needs[i]),
        |i, k| {
            if let Some(f) = first[i].take() {
                return f;
            }
            let (list, next) = best_k(pool, &needs[i], rules, k.max(k0(&needs[i])));
            let (kept, _) = to_edges(i, &list, list.len());
            (kept, next)
        },
    );

    let mut plan = Plan {
        places_requested: total as u32,
        edges: inst.edges.len(),
        rounds,
        ..Default::default()
    };
    let mut by_need: BTreeMap<usize, Vec<Planned>> = BTreeMap::new();
    for &e in &solution.chosen {
        let edge = inst.edges[e];
        let slot = slot_of[inst.buckets[edge.bucket as usize].volunteer as usize];
        let need = edge.need as usize;
        let Some(entry) = pool.entry(slot) else {
            continue;
        };
        let Ok(fit) = crate::rank::evaluate(
            entry,
            &view(&needs[need], rules),
            rules,
            crate::rank::Purpose::Offer,
        ) else {
            continue;
        };
        by_need
            .entry(need)
            .or_default()
            .push(Planned { need, slot, fit });
    }
    for (_, mut list) in by_need {
        list.sort_by(|a, b| b.fit.score.total_cmp(&a.fit.score));
        plan.assignments.extend(list);
    }
    plan.unfilled = solution
        .unfilled
        .iter()
        .enumerate()
        .filter(|(_, u)| **u > 0)
        .map(|(i, u)| (i, *u, scan.eligible[i]))
        .collect();
    plan.volunteers_considered = volunteer_of.len() as u32;
    plan
}
