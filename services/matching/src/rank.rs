//! The rules of matching: which volunteers may be offered a need (the hard rules, each with
//! the reason a volunteer was left out), and how well each fits (the score and its parts).
//!
//! The same functions serve the in-memory index (ranking 100,000 volunteers in a few
//! milliseconds) and the transactions that make offers, claims and acceptances, which check a
//! volunteer again against what the database holds at that moment.

use std::collections::HashSet;

use crate::{
    calendar::Calendar,
    config::Weights,
    domain::{Availability, Capacity, NeedSpec, Reason, ReasonKind, Volunteer, VolunteerState},
};
use minqing_kit::time::Micros;

/// How far back offers count for fairness.
pub const FAIRNESS_WINDOW: Micros = 30 * 86_400_000_000;

/// A point, with the cosine of its latitude kept for fast distances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Degrees.
    pub lat: f64,
    /// Degrees.
    pub lng: f64,
}

impl Point {
    /// Metres between two points. An equirectangular approximation: within a city (tens of
    /// kilometres) it is within 0.1% of the great-circle distance and several times faster,
    /// which matters when 100,000 volunteers are ranked.
    pub fn distance_m(self, other: Point) -> f64 {
        const M_PER_DEGREE: f64 = 111_194.9;
        let mean_lat = ((self.lat + other.lat) / 2.0).to_radians();
        let dx = (other.lng - self.lng) * mean_lat.cos() * M_PER_DEGREE;
        let dy = (other.lat - self.lat) * M_PER_DEGREE;
        (dx * dx + dy * dy).sqrt()
    }
}

/// What a volunteer already carries: open tasks, minutes per week, recent offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Load {
    /// Open assignments (pending, offered, accepted).
    pub open_tasks: u32,
    /// `(week, minutes)`: effort of open assignments and minutes of done ones, by the week
    /// their need's window starts.
    pub weeks: Vec<(i64, u32)>,
    /// When recent offers were made (the last 30 days or so).
    pub offers: Vec<Micros>,
}

impl Load {
    /// Minutes committed in `week`.
    pub fn week_minutes(&self, week: i64) -> u32 {
        self.weeks
            .iter()
            .filter(|(w, _)| *w == week)
            .map(|(_, m)| *m)
            .sum()
    }

    /// Offers made in the 30 days before `now`.
    pub fn recent_offers(&self, now: Micros) -> u32 {
        self.offers
            .iter()
            .filter(|t| **t > now - FAIRNESS_WINDOW && **t <= now)
            .count() as u32
    }

    /// The latest offer.
    pub fn last_offer(&self) -> Option<Micros> {
        self.offers.iter().copied().max()
    }
}

/// A volunteer as matching sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Id.
    pub id: String,
    /// The volunteer row's version this entry reflects.
    pub version: i64,
    /// How they are shown.
    pub display_name: String,
    /// State.
    pub state: VolunteerState,
    /// Paused until.
    pub pause_until: Option<Micros>,
    /// Consented to offers.
    pub consent_offers: bool,
    /// Party member.
    pub party_member: bool,
    /// `(skill, credential expiry)`: `Some(None)` a credential without expiry, `None` none.
    pub skills: Vec<(String, Option<Option<Micros>>)>,
    /// Languages.
    pub languages: Vec<String>,
    /// Home community code.
    pub community: String,
    /// Home grid code.
    pub grid: String,
    /// Home building code.
    pub building: String,
    /// Interned ids of community, grid and building (0 = not interned): set by the pool so
    /// ranking compares integers, not strings.
    pub place_ids: [u32; 3],
    /// Home point (own coordinates, else the building's, grid's or community's).
    pub point: Option<Point>,
    /// Availability.
    pub availability: Availability,
    /// Capacity.
    pub capacity: Capacity,
    /// Load.
    pub load: Load,
}

impl Entry {
    /// The entry for `volunteer` carrying `load`, located at `point`.
    pub fn new(volunteer: &Volunteer, load: Load, point: Option<Point>) -> Self {
        let p = &volunteer.profile;
        Entry {
            id: volunteer.id.clone(),
            version: volunteer.version,
            display_name: volunteer.public_name(),
            state: volunteer.state,
            pause_until: volunteer.pause_until,
            consent_offers: p.consent.offers,
            party_member: p.party_member,
            skills: p
                .skills
                .iter()
                .map(|s| {
                    (
                        s.skill.clone(),
                        s.credential.as_ref().map(|c| c.expire_time),
                    )
                })
                .collect(),
            languages: p.languages.clone(),
            community: p.home.community.clone(),
            grid: p.home.grid.clone(),
            building: p.home.building.clone(),
            place_ids: [0; 3],
            point,
            availability: p.availability.clone(),
            capacity: p.capacity,
            load,
        }
    }

    fn active(&self, now: Micros) -> bool {
        match self.state {
            VolunteerState::Active => true,
            VolunteerState::Paused => self.pause_until.is_some_and(|u| u <= now),
            VolunteerState::Retired => false,
        }
    }
}

/// Why a volunteer was left out (the wire enum's numbers), in the order the rules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exclusion {
    /// Paused, retired, or (for offers) no consent to offers.
    NotActive = 1,
    /// Lacks a skill.
    Skill = 2,
    /// Lacks a valid credential.
    Credential = 3,
    /// Speaks none of the languages.
    Language = 4,
    /// Not free long enough.
    Availability = 5,
    /// Over capacity.
    Capacity = 6,
    /// Too far.
    Distance = 7,
    /// Already asked.
    AlreadyAsked = 8,
    /// Party members only.
    PartyMembersOnly = 9,
}

/// Whether the volunteer is being offered the task (needs consent to offers) or claims it
/// themself (does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Offer, plan or reassignment.
    Offer,
    /// The volunteer's own claim.
    Claim,
}

/// A need as matching sees it.
#[derive(Debug, Clone)]
pub struct NeedView<'a> {
    /// Its facts.
    pub spec: &'a NeedSpec,
    /// Where the work is.
    pub point: Option<Point>,
    /// Volunteers already asked (offered, assigned, declined, expired), by id.
    pub asked: &'a HashSet<String>,
    /// The week its window starts.
    pub week: i64,
}

/// What the rules need besides the volunteer and the need.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Score weights.
    pub weights: Weights,
    /// Distance limit outside the need's community.
    pub max_distance_m: f64,
    /// The city's calendar.
    pub calendar: Calendar,
    /// Now.
    pub now: Micros,
}

/// The numbers behind a volunteer's fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The score, 0 to 1.
    pub score: f64,
    /// Skill part.
    pub skill: f64,
    /// Proximity part.
    pub proximity: f64,
    /// What proximity rests on.
    pub nearness: Nearness,
    /// Availability part.
    pub availability: f64,
    /// Load part.
    pub load: f64,
    /// Fairness part.
    pub fairness: f64,
    /// Metres, when both points are known.
    pub distance_m: Option<f64>,
    /// Minutes free in the window.
    pub free_minutes: u32,
    /// Minutes committed in the need's week.
    pub week_minutes: u32,
    /// Offers in the last 30 days.
    pub recent_offers: u32,
    /// Required skills backed by a valid credential.
    pub credentialed: u32,
}

/// How near a volunteer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nearness {
    /// Same building.
    Building,
    /// Same grid.
    Grid,
    /// Same community.
    Community,
    /// Elsewhere (by distance).
    Elsewhere,
}

/// Checks the hard rules and scores the fit.
pub fn evaluate(
    e: &Entry,
    need: &NeedView<'_>,
    rules: &Rules,
    purpose: Purpose,
) -> Result<Fit, Exclusion> {
    evaluate_with(e, need, rules, purpose, None)
}

/// [`evaluate`], comparing places by the pool's interned ids (`[community, grid, building]`
/// of the need; 0 where the pool does not know the code) when the entry has them.
pub fn evaluate_with(
    e: &Entry,
    need: &NeedView<'_>,
    rules: &Rules,
    purpose: Purpose,
    need_ids: Option<[u32; 3]>,
) -> Result<Fit, Exclusion> {
    let spec = need.spec;
    if !e.active(rules.now) || (purpose == Purpose::Offer && !e.consent_offers) {
        return Err(Exclusion::NotActive);
    }
    if spec.party_members_only && !e.party_member {
        return Err(Exclusion::PartyMembersOnly);
    }
    if !need.asked.is_empty() && need.asked.contains(&e.id) {
        return Err(Exclusion::AlreadyAsked);
    }
    let mut credentialed = 0u32;
    for req in &spec.skills {
        let Some((_, credential)) = e.skills.iter().find(|(s, _)| *s == req.skill) else {
            return Err(Exclusion::Skill);
        };
        let valid = matches!(credential, Some(expiry) if expiry.is_none_or(|x| x > spec.end));
        if valid {
            credentialed += 1;
        } else if req.credential_required {
            return Err(Exclusion::Credential);
        }
    }
    if !spec.languages.is_empty() && !spec.languages.iter().any(|l| e.languages.contains(l)) {
        return Err(Exclusion::Language);
    }
    let same = |level: usize, code: &str, mine: &str| match need_ids {
        Some(ids) if e.place_ids[level] != 0 => ids[level] == e.place_ids[level],
        _ => !code.is_empty() && code == mine,
    };
    let nearness = if same(2, &spec.place.building, &e.building) {
        Nearness::Building
    } else if same(1, &spec.place.grid, &e.grid) {
        Nearness::Grid
    } else if same(0, &spec.place.community, &e.community) {
        Nearness::Community
    } else {
        Nearness::Elsewhere
    };
    let distance_m = need.point.zip(e.point).map(|(a, b)| a.distance_m(b));
    if nearness == Nearness::Elsewhere && distance_m.is_none_or(|d| d > rules.max_distance_m) {
        return Err(Exclusion::Distance);
    }
    let week_minutes = e.load.week_minutes(need.week);
    if e.load.open_tasks >= e.capacity.max_open_tasks
        || week_minutes + spec.effort_minutes > e.capacity.weekly_minutes
    {
        return Err(Exclusion::Capacity);
    }
    let free_minutes = rules
        .calendar
        .free_minutes(&e.availability, spec.start, spec.end);
    if free_minutes < spec.effort_minutes {
        return Err(Exclusion::Availability);
    }

    let skill = if spec.skills.is_empty() {
        0.6
    } else {
        0.6 + 0.4 * f64::from(credentialed) / spec.skills.len() as f64
    };
    let proximity = match nearness {
        Nearness::Building => 1.0,
        Nearness::Grid => 0.85,
        Nearness::Community => 0.7,
        Nearness::Elsewhere => {
            0.6 * (1.0 - distance_m.unwrap_or(rules.max_distance_m) / rules.max_distance_m)
                .clamp(0.0, 1.0)
        }
    };
    let availability =
        (f64::from(free_minutes) / (3.0 * f64::from(spec.effort_minutes.max(1)))).min(1.0);
    let open_room =
        1.0 - f64::from(e.load.open_tasks) / f64::from(e.capacity.max_open_tasks.max(1));
    let week_room = 1.0 - f64::from(week_minutes) / f64::from(e.capacity.weekly_minutes.max(1));
    let load = (0.5 * open_room + 0.5 * week_room).clamp(0.0, 1.0);
    let recent_offers = e.load.recent_offers(rules.now);
    let fairness = 1.0 / (1.0 + f64::from(recent_offers) / 2.0);
    let w = rules.weights;
    let score = w.skill * skill
        + w.proximity * proximity
        + w.availability * availability
        + w.load * load
        + w.fairness * fairness;
    Ok(Fit {
        score,
        skill,
        proximity,
        nearness,
        availability,
        load,
        fairness,
        distance_m,
        free_minutes,
        week_minutes,
        recent_offers,
        credentialed,
    })
}

fn hours(minutes: u32) -> String {
    if minutes.is_multiple_of(60) {
        format!("{} h", minutes / 60)
    } else {
        format!("{:.1} h", f64::from(minutes) / 60.0)
    }
}

/// The parts of a fit in words, largest contribution first.
pub fn explain(e: &Entry, need: &NeedView<'_>, fit: &Fit, rules: &Rules) -> Vec<Reason> {
    let spec = need.spec;
    let w = rules.weights;
    let skill_text = if spec.skills.is_empty() {
        "no particular skill needed".to_string()
    } else {
        let names: Vec<&str> = spec.skills.iter().map(|s| s.skill.as_str()).collect();
        format!(
            "has {} ({} of {} backed by a valid credential)",
            names.join(", "),
            fit.credentialed,
            spec.skills.len()
        )
    };
    let near_text = match fit.nearness {
        Nearness::Building => format!("same building ({})", spec.place.building),
        Nearness::Grid => format!("same grid ({})", spec.place.grid),
        Nearness::Community => format!("same community ({})", spec.place.community),
        Nearness::Elsewhere => match fit.distance_m {
            Some(d) if d >= 1000.0 => format!("{:.1} km away", d / 1000.0),
            Some(d) => format!("{} m away", d.round()),
            None => "distance unknown".into(),
        },
    };
    let window = ((spec.end - spec.start) / 60_000_000).max(0) as u32;
    let mut reasons = vec![
        Reason {
            kind: ReasonKind::Skill,
            value: fit.skill,
            weight: w.skill,
            summary: skill_text,
        },
        Reason {
            kind: ReasonKind::Proximity,
            value: fit.proximity,
            weight: w.proximity,
            summary: near_text,
        },
        Reason {
            kind: ReasonKind::Availability,
            value: fit.availability,
            weight: w.availability,
            summary: format!(
                "free {} of the {} window for {} of work",
                hours(fit.free_minutes),
                hours(window),
                hours(spec.effort_minutes)
            ),
        },
        Reason {
            kind: ReasonKind::Load,
            value: fit.load,
            weight: w.load,
            summary: format!(
                "{} of {} open tasks, {} of {} that week",
                e.load.open_tasks,
                e.capacity.max_open_tasks,
                hours(fit.week_minutes),
                hours(e.capacity.weekly_minutes)
            ),
        },
        Reason {
            kind: ReasonKind::Fairness,
            value: fit.fairness,
            weight: w.fairness,
            summary: match fit.recent_offers {
                0 => "not asked in the last 30 days".into(),
                1 => "asked once in the last 30 days".into(),
                n => format!("asked {n} times in the last 30 days"),
            },
        },
    ];
    if !spec.languages.is_empty() {
        let spoken: Vec<&str> = spec
            .languages
            .iter()
            .filter(|l| e.languages.contains(l))
            .map(String::as_str)
            .collect();
        reasons.push(Reason {
            kind: ReasonKind::Language,
            value: 1.0,
            weight: 0.0,
            summary: format!("speaks {}", spoken.join(", ")),
        });
    }
    reasons.sort_by(|a, b| (b.value * b.weight).total_cmp(&(a.value * a.weight)));
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClaimPolicy, Place, SkillRequirement, Urgency, WeeklyWindow};

    pub(crate) fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            version: 1,
            display_name: id.into(),
            state: VolunteerState::Active,
            pause_until: None,
            consent_offers: true,
            party_member: false,
            skills: vec![
                ("elderly-care".into(), None),
                ("first-aid".into(), Some(Some(2_000))),
            ],
            languages: vec!["zh".into()],
            community: "c1".into(),
            grid: "c1-g01".into(),
            building: "c1-g01-b01".into(),
            place_ids: [0; 3],
            point: Some(Point {
                lat: 36.06,
                lng: 103.82,
            }),
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

    fn spec() -> NeedSpec {
        NeedSpec {
            title: "t".into(),
            description: String::new(),
            place: Place {
                district: "d".into(),
                street: "s".into(),
                community: "c1".into(),
                grid: "c1-g01".into(),
                building: "c1-g01-b02".into(),
            },
            address: String::new(),
            location: None,
            category: String::new(),
            skills: vec![SkillRequirement {
                skill: "elderly-care".into(),
                credential_required: false,
            }],
            languages: vec![],
            start: 0,
            end: 4 * 3_600_000_000,
            effort_minutes: 60,
            people_needed: 1,
            claim_policy: ClaimPolicy::FirstCome,
            open_to: vec![],
            party_members_only: false,
            urgency: Urgency::Normal,
        }
    }

    fn rules() -> Rules {
        Rules {
            weights: Weights::default(),
            max_distance_m: 5_000.0,
            calendar: Calendar::new(480),
            now: 1_000,
        }
    }

    #[test]
    fn every_hard_rule_excludes() {
        let asked = HashSet::new();
        let s = spec();
        fn view<'a>(s: &'a NeedSpec, asked: &'a HashSet<String>) -> NeedView<'a> {
            NeedView {
                spec: s,
                point: Some(Point {
                    lat: 36.06,
                    lng: 103.82,
                }),
                asked,
                week: 0,
            }
        }
        let r = rules();
        assert!(evaluate(&entry("a"), &view(&s, &asked), &r, Purpose::Offer).is_ok());

        let mut e = entry("a");
        e.consent_offers = false;
        assert_eq!(
            evaluate(&e, &view(&s, &asked), &r, Purpose::Offer),
            Err(Exclusion::NotActive)
        );
        assert!(
            evaluate(&e, &view(&s, &asked), &r, Purpose::Claim).is_ok(),
            "claims need no offer consent"
        );

        let mut s2 = s.clone();
        s2.skills.push(SkillRequirement {
            skill: "driving".into(),
            credential_required: false,
        });
        assert_eq!(
            evaluate(&entry("a"), &view(&s2, &asked), &r, Purpose::Offer),
            Err(Exclusion::Skill)
        );

        // The first-aid credential expires at 2,000 µs, before the window ends.
        let mut s3 = s.clone();
        s3.skills = vec![SkillRequirement {
            skill: "first-aid".into(),
            credential_required: true,
        }];
        assert_eq!(
            evaluate(&entry("a"), &view(&s3, &asked), &r, Purpose::Offer),
            Err(Exclusion::Credential)
        );
        s3.end = 1_500;
        s3.start = 0;
        s3.effort_minutes = 0;
        assert!(evaluate(&entry("a"), &view(&s3, &asked), &r, Purpose::Offer).is_ok());

        let mut s4 = s.clone();
        s4.languages = vec!["en".into()];
        assert_eq!(
            evaluate(&entry("a"), &view(&s4, &asked), &r, Purpose::Offer),
            Err(Exclusion::Language)
        );

        let mut e = entry("a");
        e.availability.weekly.clear();
        assert_eq!(
            evaluate(&e, &view(&s, &asked), &r, Purpose::Offer),
            Err(Exclusion::Availability)
        );

        let mut e = entry("a");
        e.load.open_tasks = 3;
        assert_eq!(
            evaluate(&e, &view(&s, &asked), &r, Purpose::Offer),
            Err(Exclusion::Capacity)
        );
        let mut e = entry("a");
        e.load.weeks = vec![(0, 590)];
        assert_eq!(
            evaluate(&e, &view(&s, &asked), &r, Purpose::Offer),
            Err(Exclusion::Capacity)
        );

        let mut e = entry("a");
        e.community = "c2".into();
        e.grid = "c2-g01".into();
        e.building = "c2-g01-b01".into();
        e.point = Some(Point {
            lat: 36.2,
            lng: 103.82,
        });
        assert_eq!(
            evaluate(&e, &view(&s, &asked), &r, Purpose::Offer),
            Err(Exclusion::Distance)
        );

        let asked_a: HashSet<String> = ["a".to_string()].into();
        let v = NeedView {
            spec: &s,
            point: None,
            asked: &asked_a,
            week: 0,
        };
        assert_eq!(
            evaluate(&entry("a"), &v, &r, Purpose::Offer),
            Err(Exclusion::AlreadyAsked)
        );

        let mut s5 = s.clone();
        s5.party_members_only = true;
        assert_eq!(
            evaluate(&entry("a"), &view(&s5, &asked), &r, Purpose::Offer),
            Err(Exclusion::PartyMembersOnly)
        );
    }

    #[test]
    fn nearer_and_less_asked_volunteers_score_higher() {
        let asked = HashSet::new();
        let s = spec();
        let v = NeedView {
            spec: &s,
            point: Some(Point {
                lat: 36.06,
                lng: 103.82,
            }),
            asked: &asked,
            week: 0,
        };
        let r = rules();
        let near = evaluate(&entry("a"), &v, &r, Purpose::Offer).unwrap();
        let mut far = entry("b");
        far.grid = "c1-g02".into();
        let far_fit = evaluate(&far, &v, &r, Purpose::Offer).unwrap();
        assert!(near.score > far_fit.score);
        let mut busy = entry("c");
        busy.load.offers = vec![500, 600, 700];
        let busy_fit = evaluate(&busy, &v, &r, Purpose::Offer).unwrap();
        assert!(near.score > busy_fit.score);
        let reasons = explain(&entry("a"), &v, &near, &r);
        assert_eq!(reasons.len(), 5);
        assert!(reasons.iter().any(|x| x.summary == "same grid (c1-g01)"));
        let total: f64 = reasons.iter().map(|x| x.value * x.weight).sum();
        assert!((total - near.score).abs() < 1e-9);
    }
}
