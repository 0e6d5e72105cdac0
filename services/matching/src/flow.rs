//! An exact min-cost flow for assigning needs' places to volunteers.
//!
//! Written here rather than taken from a crate: `pathfinding`'s Kuhn–Munkres needs a dense
//! rows×columns weight matrix (2,000 × 20,000 = 40 M weights, ~320 MB, and O(n²m) time) and
//! has no capacities, so places and multi-task volunteers would have to be copied out into
//! even larger matrices; `mcmf` wraps C++ (LEMON) through FFI and is unmaintained. Neither
//! fits a sparse, capacitated problem that must finish in well under two seconds.
//!
//! **The network.** Each need `i` supplies `demand[i]` places. A place goes along an edge
//! `need → bucket` (capacity 1, cost = how poorly the volunteer fits) to one of a volunteer's
//! buckets — one per week their eligible needs start in, capped by how many of their largest
//! eligible tasks fit in that week's remaining minutes — then to the volunteer (capped by open
//! tasks left) and the sink; or it stays unfilled along `need → sink` at `unfilled_cost[i]`,
//! a cost larger than any difference real edges can make, so the optimum fills as many
//! places as possible (urgent needs' places first) and only then minimises the total cost.
//!
//! **The algorithm.** Successive shortest paths: one Dijkstra per place, from its need, over
//! reduced costs kept non-negative by node potentials, stopping as soon as the sink is
//! settled (the Jonker–Volgenant trick: only settled nodes' potentials move, by
//! `dist − dist(sink)`, which keeps every reduced cost non-negative). Augmenting along a
//! shortest path from a supply node to the sink keeps the flow optimal for the supplies
//! routed so far, so the flow after the last place is a min-cost flow. With volunteers
//! plentiful most paths are one edge long and each Dijkstra touches little of the graph.
//!
//! **Pricing out pruned edges.** A need may have thousands of eligible volunteers; the solver
//! starts from each need's best `k` and proves the result optimal for all of them: every
//! potential is ≤ 0, so an omitted edge of cost ≥ `threshold[i]` (need `i`'s best omitted
//! cost) has reduced cost ≥ `threshold[i] + π(i)`. If that is ≥ 0 for every need, no omitted
//! edge can improve the flow; otherwise the offending needs get more edges and it solves
//! again ([`solve_priced`]).

use std::{cmp::Reverse, collections::BinaryHeap};

/// A volunteer's capacity for one week of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The volunteer (index into `volunteer_slots`).
    pub volunteer: u32,
    /// Places it may take.
    pub slots: u32,
}

/// A possible assignment of one place of a need to a volunteer's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The need.
    pub need: u32,
    /// The bucket.
    pub bucket: u32,
    /// How poorly it fits (≥ 0).
    pub cost: i64,
}

/// A problem: needs with places, volunteers with capacities, buckets, and edges.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// Places per need.
    pub demands: Vec<u32>,
    /// Cost of leaving one of a need's places unfilled.
    pub unfilled_cost: Vec<i64>,
    /// Places per volunteer over the whole plan.
    pub volunteer_slots: Vec<u32>,
    /// Buckets.
    pub buckets: Vec<Bucket>,
    /// Edges (costs ≥ 0).
    pub edges: Vec<Edge>,
}

/// An optimal assignment.
#[derive(Debug, Clone, Default)]
pub struct Solution {
    /// Indices of the edges used.
    pub chosen: Vec<usize>,
    /// Places left unfilled per need.
    pub unfilled: Vec<u32>,
    /// Total cost (edges plus unfilled places).
    pub cost: i64,
    /// Final potential of each need node (≤ 0).
    pub need_potential: Vec<i64>,
}

struct Arc {
    to: u32,
    cap: i32,
    cost: i64,
}

/// Solves `inst` exactly.
pub fn solve(inst: &Instance) -> Solution {
    let n = inst.demands.len();
    let b = inst.buckets.len();
    let v = inst.volunteer_slots.len();
    let t = n + b + v;
    let nodes = t + 1;
    let mut arcs: Vec<Arc> = Vec::with_capacity(2 * (inst.edges.len() + n + b + v));
    let mut from: Vec<u32> = Vec::with_capacity(arcs.capacity());
    let mut add = |arcs: &mut Vec<Arc>, u: usize, w: usize, cap: u32, cost: i64| {
        arcs.push(Arc {
            to: w as u32,
            cap: cap.min(i32::MAX as u32) as i32,
            cost,
        });
        from.push(u as u32);
        arcs.push(Arc {
            to: u as u32,
            cap: 0,
            cost: -cost,
        });
        from.push(w as u32);
    };
    for e in &inst.edges {
        add(&mut arcs, e.need as usize, n + e.bucket as usize, 1, e.cost);
    }
    for (i, &d) in inst.demands.iter().enumerate() {
        add(&mut arcs, i, t, d, inst.unfilled_cost[i]);
    }
    for (k, bucket) in inst.buckets.iter().enumerate() {
        add(
            &mut arcs,
            n + k,
            n + b + bucket.volunteer as usize,
            bucket.slots,
            0,
        );
    }
    for (j, &s) in inst.volunteer_slots.iter().enumerate() {
        add(&mut arcs, n + b + j, t, s, 0);
    }
    // Adjacency in compressed rows.
    let mut start = vec![0u32; nodes + 1];
    for &u in &from {
        start[u as usize + 1] += 1;
    }
    for i in 0..nodes {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut adj = vec![0u32; arcs.len()];
    for (a, &u) in from.iter().enumerate() {
        adj[fill[u as usize] as usize] = a as u32;
        fill[u as usize] += 1;
    }

    const INF: i64 = i64::MAX / 4;
    let mut pi = vec![0i64; nodes];
    let mut dist = vec![INF; nodes];
    let mut done = vec![false; nodes];
    let mut pred = vec![u32::MAX; nodes];
    let mut touched: Vec<u32> = Vec::new();
    let mut settled: Vec<u32> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::new();

    for s in 0..n {
        for _ in 0..inst.demands[s] {
            dist[s] = 0;
            touched.push(s as u32);
            heap.push(Reverse((0, s as u32)));
            while let Some(Reverse((d, u))) = heap.pop() {
                let u = u as usize;
                if done[u] || d > dist[u] {
                    continue;
                }
                done[u] = true;
                settled.push(u as u32);
                if u == t {
                    break;
                }
                for &a in &adj[start[u] as usize..start[u + 1] as usize] {
                    let arc = &arcs[a as usize];
                    if arc.cap <= 0 {
                        continue;
                    }
                    let w = arc.to as usize;
                    let nd = d + arc.cost + pi[u] - pi[w];
                    debug_assert!(
                        arc.cost + pi[u] - pi[w] >= 0,
                        "reduced costs stay non-negative"
                    );
                    if nd < dist[w] {
                        if dist[w] == INF {
                            touched.push(w as u32);
                        }
                        dist[w] = nd;
                        pred[w] = a;
                        heap.push(Reverse((nd, w as u32)));
                    }
                }
            }
            heap.clear();
            // The need→sink arc always has room for an unrouted place, so the sink is reached.
            let dt = dist[t];
            for &u in &settled {
                pi[u as usize] += dist[u as usize] - dt;
            }
            let mut w = t;
            while w != s {
                let a = pred[w] as usize;
                arcs[a].cap -= 1;
                arcs[a ^ 1].cap += 1;
                w = from[a] as usize;
            }
            for &u in &touched {
                dist[u as usize] = INF;
                done[u as usize] = false;
            }
            touched.clear();
            settled.clear();
        }
    }

    let chosen: Vec<usize> = (0..inst.edges.len())
        .filter(|&e| arcs[2 * e].cap == 0)
        .collect();
    let mut unfilled = inst.demands.clone();
    for &e in &chosen {
        unfilled[inst.edges[e].need as usize] -= 1;
    }
    let cost = objective(inst, &chosen);
    Solution {
        chosen,
        unfilled,
        cost,
        need_potential: pi[..n].to_vec(),
    }
}

/// The cost of using `chosen` edges (and leaving the rest of each need's places unfilled).
pub fn objective(inst: &Instance, chosen: &[usize]) -> i64 {
    let mut filled = vec![0u32; inst.demands.len()];
    let mut cost = 0;
    for &e in chosen {
        cost += inst.edges[e].cost;
        filled[inst.edges[e].need as usize] += 1;
    }
    for (i, &d) in inst.demands.iter().enumerate() {
        cost += i64::from(d.saturating_sub(filled[i])) * inst.unfilled_cost[i];
    }
    cost
}

/// Whether `chosen` respects every capacity.
pub fn feasible(inst: &Instance, chosen: &[usize]) -> bool {
    let mut per_need = vec![0u32; inst.demands.len()];
    let mut per_bucket = vec![0u32; inst.buckets.len()];
    let mut per_volunteer = vec![0u32; inst.volunteer_slots.len()];
    let mut pairs = std::collections::HashSet::new();
    for &e in chosen {
        let edge = inst.edges[e];
        if !pairs.insert((edge.need, edge.bucket)) {
            return false;
        }
        per_need[edge.need as usize] += 1;
        per_bucket[edge.bucket as usize] += 1;
        per_volunteer[inst.buckets[edge.bucket as usize].volunteer as usize] += 1;
    }
    per_need.iter().zip(&inst.demands).all(|(a, b)| a <= b)
        && per_bucket
            .iter()
            .zip(&inst.buckets)
            .all(|(a, b)| *a <= b.slots)
        && per_volunteer
            .iter()
            .zip(&inst.volunteer_slots)
            .all(|(a, b)| a <= b)
}

/// A need's best edges: `(bucket, cost)` sorted by cost, and the cost of the best edge left
/// out (`None` when none was).
pub type Fetched = (Vec<(u32, i64)>, Option<i64>);

/// Solves with each need's best `k` edges at first, fetching more (`fetch(need, k)`) for
/// needs whose omitted edges could still improve the flow, until none could: the result is
/// optimal for every edge `fetch` could return. `base` carries everything but the edges.
pub fn solve_priced(
    base: &Instance,
    initial_k: impl Fn(usize) -> usize,
    mut fetch: impl FnMut(usize, usize) -> Fetched,
) -> (Instance, Solution, usize) {
    let n = base.demands.len();
    let mut k: Vec<usize> = (0..n).map(&initial_k).collect();
    let mut lists: Vec<Fetched> = (0..n).map(|i| fetch(i, k[i])).collect();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut inst = base.clone();
        inst.edges = lists
            .iter()
            .enumerate()
            .flat_map(|(i, (edges, _))| {
                edges.iter().map(move |&(bucket, cost)| Edge {
                    need: i as u32,
                    bucket,
                    cost,
                })
            })
            .collect();
        let solution = solve(&inst);
        let short: Vec<usize> = (0..n)
            .filter(|&i| {
                lists[i]
                    .1
                    .is_some_and(|threshold| threshold + solution.need_potential[i] < 0)
            })
            .collect();
        if short.is_empty() {
            return (inst, solution, rounds);
        }
        for i in short {
            k[i] = k[i].saturating_mul(4).max(k[i] + 16);
            lists[i] = fetch(i, k[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The best objective over every subset of edges that respects the capacities.
    fn brute_force(inst: &Instance) -> i64 {
        let e = inst.edges.len();
        assert!(e <= 16);
        let mut best = i64::MAX;
        for mask in 0u32..(1 << e) {
            let chosen: Vec<usize> = (0..e).filter(|i| mask & (1 << i) != 0).collect();
            if feasible(inst, &chosen) {
                best = best.min(objective(inst, &chosen));
            }
        }
        best
    }

    fn random_instance(rng: &mut StdRng) -> Instance {
        let n = rng.random_range(1..=4);
        let v = rng.random_range(1..=4);
        let mut inst = Instance {
            demands: (0..n).map(|_| rng.random_range(1..=3)).collect(),
            volunteer_slots: (0..v).map(|_| rng.random_range(1..=3)).collect(),
            ..Default::default()
        };
        let total: i64 = inst.demands.iter().map(|&d| i64::from(d)).sum();
        // Larger than any difference edges can make; some needs more urgent than others.
        inst.unfilled_cost = (0..n)
            .map(|_| (total + 1) * 101 * rng.random_range(1..=3))
            .collect();
        for j in 0..v {
            for _ in 0..rng.random_range(1..=2) {
                inst.buckets.push(Bucket {
                    volunteer: j as u32,
                    slots: rng.random_range(1..=2),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..rng.random_range(0..=14) {
            let need = rng.random_range(0..n) as u32;
            let bucket = rng.random_range(0..inst.buckets.len()) as u32;
            if seen.insert((need, bucket)) {
                inst.edges.push(Edge {
                    need,
                    bucket,
                    cost: rng.random_range(0..=100),
                });
            }
        }
        inst
    }

    #[test]
    fn optimal_against_brute_force_on_small_cases() {
        let mut rng = StdRng::seed_from_u64(20261123);
        for case in 0..3_000 {
            let inst = random_instance(&mut rng);
            let solution = solve(&inst);
            assert!(feasible(&inst, &solution.chosen), "case {case}: infeasible");
            assert_eq!(
                solution.cost,
                brute_force(&inst),
                "case {case}: not optimal: {inst:?}"
            );
            assert!(solution.need_potential.iter().all(|p| *p <= 0));
        }
    }

    #[test]
    fn pricing_from_few_edges_reaches_the_full_optimum() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..2_000 {
            let full = random_instance(&mut rng);
            let mut by_need: Vec<Vec<(u32, i64)>> = vec![Vec::new(); full.demands.len()];
            for e in &full.edges {
                by_need[e.need as usize].push((e.bucket, e.cost));
            }
            for list in &mut by_need {
                list.sort_by_key(|&(b, c)| (c, b));
            }
            let base = Instance {
                edges: vec![],
                ..full.clone()
            };
            let (inst, solution, _) = solve_priced(
                &base,
                |_| 1,
                |i, k| {
                    let list = &by_need[i];
                    let kept = list.iter().copied().take(k).collect();
                    (kept, list.get(k).map(|&(_, c)| c))
                },
            );
            assert!(feasible(&inst, &solution.chosen));
            assert_eq!(solution.cost, brute_force(&full), "case {case}");
        }
    }

    #[test]
    fn fills_the_most_places_before_minimising_cost() {
        // Two needs, one volunteer: the cheap need wins only if it fills as many places.
        let inst = Instance {
            demands: vec![1, 1],
            unfilled_cost: vec![1_000, 1_000],
            volunteer_slots: vec![1, 1],
            buckets: vec![
                Bucket {
                    volunteer: 0,
                    slots: 1,
                },
                Bucket {
                    volunteer: 1,
                    slots: 1,
                },
            ],
            edges: vec![
                Edge {
                    need: 0,
                    bucket: 0,
                    cost: 1,
                },
                Edge {
                    need: 1,
                    bucket: 0,
                    cost: 0,
                },
                Edge {
                    need: 0,
                    bucket: 1,
                    cost: 90,
                },
            ],
        };
        let s = solve(&inst);
        assert_eq!(s.unfilled, vec![0, 0]);
        assert_eq!(s.cost, 90);
    }
}
