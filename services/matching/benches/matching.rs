//! Matching benchmarks: the best 10 candidates for one need among 100,000 volunteers, and an
//! optimal plan of 2,000 needs over 20,000 volunteers. Synthetic city: volunteers and needs
//! spread over 30 km × 30 km in 400 communities of 4 grids, 24 skills, varied weekly
//! availability and capacities. Run: `cargo bench -p minqing-matching --bench matching`.
//! The batch benchmark prints the process's peak resident memory when it ends (run it alone,
//! `-- batch`, for a figure that is the plan's own).

use std::{collections::HashSet, hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use minqing_matching::{
    calendar::Calendar,
    config::Weights,
    domain::{
        Availability, Capacity, ClaimPolicy, Need, NeedSource, NeedSpec, NeedState, Place,
        SkillRequirement, Urgency, VolunteerState, WeeklyWindow,
    },
    plan::{self, PlanNeed},
    pool::Pool,
    rank::{Entry, Load, NeedView, Point, Rules},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const SKILLS: [&str; 24] = [
    "elderly-care",
    "tutoring",
    "first-aid",
    "electrical",
    "plumbing",
    "driving",
    "cooking",
    "cleaning",
    "legal-advice",
    "counselling",
    "sign-language",
    "child-care",
    "disability-care",
    "it-help",
    "gardening",
    "carpentry",
    "nursing",
    "translation",
    "sports",
    "music",
    "art",
    "energy-retrofit",
    "mutual-help",
    "reading",
];
// 2026-11-23 09:00 UTC, a Monday.
const NOW: i64 = 1_795_424_400_000_000;
const LAT0: f64 = 36.0;
const LNG0: f64 = 103.7;

fn community(i: usize) -> (String, Point) {
    // 400 communities on a 20 × 20 lattice over ~30 km.
    let (r, c) = (i / 20, i % 20);
    (
        format!("c{i:03}"),
        Point {
            lat: LAT0 + r as f64 * 0.0135,
            lng: LNG0 + c as f64 * 0.0167,
        },
    )
}

fn entry(rng: &mut StdRng, i: usize) -> Entry {
    let ci = rng.random_range(0..400);
    let (code, center) = community(ci);
    let grid = rng.random_range(1..=4);
    let mut skills: Vec<(String, Option<Option<i64>>)> = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let s = SKILLS[rng.random_range(0..SKILLS.len())].to_string();
        if !skills.iter().any(|(x, _)| *x == s) {
            let credential = rng
                .random_bool(0.3)
                .then_some(Some(NOW + 400 * 86_400_000_000));
            skills.push((s, credential));
        }
    }
    let mut weekly = Vec::new();
    for day in 1..=7u8 {
        if rng.random_bool(0.5) {
            let start = rng.random_range(8..18) * 60;
            weekly.push(WeeklyWindow {
                day,
                start,
                end: start + rng.random_range(2..5) * 60,
            });
        }
    }
    Entry {
        id: format!("v{i:06}"),
        version: 1,
        display_name: format!("V{i}"),
        state: VolunteerState::Active,
        pause_until: None,
        consent_offers: rng.random_bool(0.95),
        party_member: rng.random_bool(0.2),
        skills,
        languages: vec!["zh".into()],
        community: code.clone(),
        grid: format!("{code}-g{grid:02}"),
        building: format!("{code}-g{grid:02}-b{:02}", rng.random_range(1..=10)),
        place_ids: [0; 3],
        point: Some(Point {
            lat: center.lat + rng.random_range(-0.006..0.006),
            lng: center.lng + rng.random_range(-0.008..0.008),
        }),
        availability: Availability {
            weekly,
            exceptions: vec![],
        },
        capacity: Capacity {
            weekly_minutes: rng.random_range(2..=10) * 60,
            max_open_tasks: rng.random_range(1..=4),
        },
        load: Load {
            open_tasks: rng.random_range(0..=1),
            weeks: vec![],
            offers: (0..rng.random_range(0..3))
                .map(|k| NOW - k * 86_400_000_000)
                .collect(),
        },
    }
}

fn need(rng: &mut StdRng, i: usize, skills: usize) -> Need {
    let ci = rng.random_range(0..400);
    let (code, _) = community(ci);
    let grid = rng.random_range(1..=4);
    let start = NOW + rng.random_range(1..6) * 86_400_000_000;
    Need {
        id: format!("n{i:05}"),
        request_id: String::new(),
        source: NeedSource::Community,
        case: None,
        spec: NeedSpec {
            title: "t".into(),
            description: String::new(),
            place: Place {
                district: "d".into(),
                street: "s".into(),
                community: code.clone(),
                grid: format!("{code}-g{grid:02}"),
                building: format!("{code}-g{grid:02}-b01"),
            },
            address: String::new(),
            location: None,
            category: String::new(),
            skills: (0..skills)
                .map(|_| SkillRequirement {
                    skill: SKILLS[rng.random_range(0..8)].into(),
                    credential_required: false,
                })
                .collect::<Vec<_>>()
                .into_iter()
                .fold(Vec::new(), |mut acc: Vec<SkillRequirement>, s| {
                    if !acc.iter().any(|x| x.skill == s.skill) {
                        acc.push(s);
                    }
                    acc
                }),
            languages: vec![],
            start,
            end: start + rng.random_range(1..=3) * 86_400_000_000,
            effort_minutes: rng.random_range(1..=3) * 60,
            people_needed: rng.random_range(1..=2),
            claim_policy: ClaimPolicy::FirstCome,
            open_to: vec![],
            party_members_only: false,
            urgency: if rng.random_bool(0.1) {
                Urgency::High
            } else {
                Urgency::Normal
            },
        },
        state: NeedState::Open,
        menu: None,
        people_accepted: 0,
        people_pending: 0,
        people_done: 0,
        posted_by: String::new(),
        create_time: NOW,
        update_time: NOW,
        publish_time: Some(NOW),
        cancel_reason: String::new(),
        version: 1,
    }
}

fn pool(n: usize, seed: u64) -> Pool {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pool = Pool::new();
    for i in 0..n {
        pool.upsert(entry(&mut rng, i));
    }
    pool
}

fn rules() -> Rules {
    Rules {
        weights: Weights::default(),
        max_distance_m: 5_000.0,
        calendar: Calendar::new(480),
        now: NOW,
    }
}

fn point_of(n: &Need) -> Point {
    let i: usize = n.spec.place.community[1..].parse().unwrap_or(0);
    community(i).1
}

fn online(c: &mut Criterion) {
    let pool = pool(100_000, 1);
    let rules = rules();
    let mut rng = StdRng::seed_from_u64(2);
    let asked = HashSet::new();
    let mut group = c.benchmark_group("online_best_10_of_100k");
    group.measurement_time(Duration::from_secs(8));
    for (label, skills) in [("one_skill", 1), ("no_skill", 0), ("two_skills", 2)] {
        let needs: Vec<Need> = (0..64).map(|i| need(&mut rng, i, skills)).collect();
        let mut k = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                let n = &needs[k % needs.len()];
                k += 1;
                let view = NeedView {
                    spec: &n.spec,
                    point: Some(point_of(n)),
                    asked: &asked,
                    week: rules.calendar.week(n.spec.start),
                };
                black_box(pool.rank(&view, &rules, 10))
            })
        });
    }
    group.finish();
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn batch(c: &mut Criterion) {
    let pool = pool(20_000, 3);
    let rules = rules();
    let mut rng = StdRng::seed_from_u64(4);
    let needs: Vec<PlanNeed> = (0..2_000)
        .map(|i| {
            let n = need(&mut rng, i, 1);
            PlanNeed {
                point: Some(point_of(&n)),
                places: n.spec.people_needed,
                asked: HashSet::new(),
                need: n,
            }
        })
        .collect();
    let places: u32 = needs.iter().map(|n| n.places).sum();
    let once = plan::plan(&pool, &needs, &rules, 2);
    eprintln!(
        "batch: {} needs, {places} places, {} filled, {} volunteers eligible somewhere, {} edges, {} solve round(s)",
        needs.len(),
        once.assignments.len(),
        once.volunteers_considered,
        once.edges,
        once.rounds
    );
    let mut group = c.benchmark_group("batch_optimal");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("2000_needs_x_20000_volunteers_2_threads", |b| {
        b.iter(|| black_box(plan::plan(&pool, &needs, &rules, 2)))
    });
    group.bench_function("2000_needs_x_20000_volunteers_1_thread", |b| {
        b.iter(|| black_box(plan::plan(&pool, &needs, &rules, 1)))
    });
    group.finish();
    if let Some(mib) = peak_rss_mib() {
        eprintln!("batch: peak resident memory of this process {mib:.0} MiB");
    }
}

criterion_group!(benches, online, batch);
criterion_main!(benches);
