//! Routing rules as data: a TOML file of `[[rule]]` tables, each a match (category, place at
//! any level, channel, urgency, keywords, time of day, days) and an action (disposition, unit
//! kind or unit, upward fallbacks, time limit, missing papers, approver, referral, emergency
//! line). A file that does not parse or contradicts itself is refused whole, with every
//! problem named; the engine (`engine.rs`) indexes a loaded set for fast decisions.

mod engine;

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use engine::{Decider, Outcome};

use crate::{
    domain::{Channel, Disposition, EmergencyLine, UnitKind, Urgency, Weekday},
    knowledge::Knowledge,
    workdays::parse_hhmm,
};
use minqing_kit::time::Micros;

/// The sample rules shipped with Minqing, for the sample city.
pub const SAMPLE: &str = include_str!("../../data/rules.toml");

/// One rule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Id.
    pub id: String,
    /// For people.
    pub description: String,
    /// Higher wins.
    pub priority: i32,
    /// Position in the file.
    pub position: usize,
    /// Catalogue items (any of).
    pub categories: Vec<String>,
    /// Place codes (any of).
    pub places: Vec<String>,
    /// Channels (any of).
    pub channels: Vec<Channel>,
    /// Urgencies (any of).
    pub urgencies: Vec<Urgency>,
    /// Keywords, lower-cased (any of).
    pub keywords: Vec<String>,
    /// Time of day window, minutes after midnight (may wrap).
    pub time_of_day: Option<(u32, u32)>,
    /// Days (any of).
    pub days: Vec<Weekday>,
    /// Disposition.
    pub disposition: Disposition,
    /// Target kind.
    pub unit_kind: Option<UnitKind>,
    /// Target unit id.
    pub unit: Option<String>,
    /// Fallback kinds.
    pub fallback: Vec<UnitKind>,
    /// Time limit override.
    pub time_limit_working_days: Option<u32>,
    /// Papers missing (SUPPLEMENT).
    pub missing_documents: Vec<String>,
    /// Approver kind (ESCALATED).
    pub approver_kind: Option<UnitKind>,
    /// Referral reason (REFERRED).
    pub referral_reason: String,
    /// Competent body (REFERRED).
    pub competent_body: String,
    /// Emergency line (EMERGENCY).
    pub emergency_line: Option<EmergencyLine>,
}

impl Rule {
    /// How low the rule hands cases: 5 for buildings … 1 for districts, 0 off the ladder.
    pub fn rank(&self) -> u8 {
        self.unit_kind
            .and_then(UnitKind::level)
            .map_or(0, |l| l as u8)
    }

    /// How many kinds of condition it sets.
    pub fn specificity(&self) -> u8 {
        [
            !self.categories.is_empty(),
            !self.places.is_empty(),
            !self.channels.is_empty(),
            !self.urgencies.is_empty(),
            !self.keywords.is_empty(),
            self.time_of_day.is_some(),
            !self.days.is_empty(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count() as u8
    }

    /// The match conditions in a canonical form, to find two rules matching the same cases.
    fn match_key(&self) -> String {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v.join(",")
        };
        let mut ch: Vec<i32> = self.channels.iter().map(|c| c.wire()).collect();
        ch.sort_unstable();
        ch.dedup();
        let mut ur: Vec<i32> = self.urgencies.iter().map(|c| c.wire()).collect();
        ur.sort_unstable();
        ur.dedup();
        let mut dy: Vec<i32> = self.days.iter().map(|c| c.wire()).collect();
        dy.sort_unstable();
        dy.dedup();
        // Priority and rank decide between rules matching the same cases; only when both
        // are equal would file order alone decide.
        format!(
            "{}|{}|{ch:?}|{ur:?}|{}|{:?}|{dy:?}|{}|{}",
            sorted(&self.categories),
            sorted(&self.places),
            sorted(&self.keywords),
            self.time_of_day,
            self.priority,
            self.rank()
        )
    }

    /// The action in a canonical form.
    fn action_key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}",
            self.disposition,
            self.unit_kind,
            self.unit,
            self.fallback,
            self.time_limit_working_days,
            self.missing_documents,
            self.approver_kind,
            self.referral_reason,
            self.competent_body,
            self.emergency_line
        )
    }
}

/// A loaded, checked rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The file's version line.
    pub version: String,
    /// Where it came from.
    pub source: String,
    /// SHA-256 of the text.
    pub sha256: String,
    /// When loaded.
    pub load_time: Micros,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Notes that did not stop loading.
    pub warnings: Vec<String>,
    by_id: HashMap<String, usize>,
    /// category ("" any) → place ("" any) → ranks (see `by_rank`) of the rules there.
    index: HashMap<Box<str>, HashMap<Box<str>, Vec<u32>>>,
    /// Rule positions, best first: priority, then the lowest level, then the most specific,
    /// then file order. Precomputed so a decision only sorts small integers.
    by_rank: Vec<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    version: String,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    places: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    urgencies: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    time_of_day: Option<String>,
    #[serde(default)]
    days: Vec<String>,
    disposition: String,
    #[serde(default)]
    unit_kind: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    fallback: Vec<String>,
    #[serde(default)]
    time_limit_working_days: Option<i64>,
    #[serde(default)]
    missing_documents: Vec<String>,
    #[serde(default)]
    approver_kind: Option<String>,
    #[serde(default)]
    referral_reason: Option<String>,
    #[serde(default)]
    competent_body: Option<String>,
    #[serde(default)]
    emergency_line: Option<String>,
}

/// Most rules a file may hold.
pub const MAX_RULES: usize = 100_000;

/// Whether `id` is a valid rule or unit id: 1 to 63 of a-z, 0-9, '-', starting alphanumeric.
pub fn valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn enum_list<T: Copy>(
    errors: &mut Vec<String>,
    at: &str,
    field: &str,
    values: &[String],
    parse: impl Fn(&str) -> Option<T>,
) -> Vec<T> {
    values
        .iter()
        .filter_map(|v| {
            let parsed = parse(v.trim());
            if parsed.is_none() {
                errors.push(format!("{at}: {field}: unknown value {v:?}"));
            }
            parsed
        })
        .collect()
}

fn enum_one<T>(
    errors: &mut Vec<String>,
    at: &str,
    field: &str,
    value: &Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let v = value.as_ref()?;
    let parsed = parse(v.trim());
    if parsed.is_none() {
        errors.push(format!("{at}: {field}: unknown value {v:?}"));
    }
    parsed
}

impl RuleSet {
    /// Parses and checks `text`; every problem is listed when it is refused. With
    /// `knowledge`, categories and places unknown to the catalogue or gazetteer are warned of.
    pub fn parse(
        text: &str,
        source: &str,
        now: Micros,
        knowledge: Option<&Knowledge>,
    ) -> Result<RuleSet, Vec<String>> {
        let file: FileText = toml::from_str(text).map_err(|e| vec![format!("{source}: {e}")])?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        if file.version.trim().is_empty() || file.version.len() > 100 {
            errors.push("version: must be 1 to 100 characters".into());
        }
        if file.rules.len() > MAX_RULES {
            errors.push(format!("at most {MAX_RULES} rules"));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        let mut by_id = HashMap::new();
        for (position, r) in file.rules.into_iter().enumerate() {
            let at = format!("rule {:?} (#{})", r.id, position + 1);
            if !valid_id(&r.id) {
                errors.push(format!(
                    "{at}: id must be 1 to 63 characters of a-z, 0-9 and '-'"
                ));
            }
            if by_id.insert(r.id.clone(), position).is_some() {
                errors.push(format!("{at}: the id is used by an earlier rule"));
            }
            if let Some(rule) = check_rule(r, position, &at, &mut errors, &mut warnings, knowledge)
            {
                rules.push(rule);
            }
        }
        // Two rules matching exactly the same cases at the same priority and level but
        // deciding differently: which one wins would depend only on file order — refused as
        // a contradiction rather than silently resolved.
        let mut seen: HashMap<String, &Rule> = HashMap::new();
        for r in &rules {
            if let Some(other) = seen.get(&r.match_key()) {
                if other.action_key() != r.action_key() {
                    errors.push(format!(
                        "rule {:?} matches exactly the cases rule {:?} matches, at the same priority, but decides differently",
                        r.id, other.id
                    ));
                } else {
                    warnings.push(format!(
                        "rule {:?} repeats rule {:?} and never decides anything",
                        r.id, other.id
                    ));
                }
            } else {
                seen.insert(r.match_key(), r);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut by_rank: Vec<u32> = (0..rules.len() as u32).collect();
        by_rank.sort_by_key(|&i| {
            let r = &rules[i as usize];
            (
                std::cmp::Reverse(r.priority),
                std::cmp::Reverse(r.rank()),
                std::cmp::Reverse(r.specificity()),
                r.position,
            )
        });
        let mut rank_of = vec![0u32; rules.len()];
        for (rank, &i) in by_rank.iter().enumerate() {
            rank_of[i as usize] = rank as u32;
        }
        let mut index: HashMap<Box<str>, HashMap<Box<str>, Vec<u32>>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let i = rank_of[i] as usize;
            let cats: Vec<&str> = if r.categories.is_empty() {
                vec![""]
            } else {
                r.categories.iter().map(String::as_str).collect()
            };
            let places: Vec<&str> = if r.places.is_empty() {
                vec![""]
            } else {
                r.places.iter().map(String::as_str).collect()
            };
            for c in &cats {
                let by_place = index.entry((*c).into()).or_default();
                for p in &places {
                    let list = by_place.entry((*p).into()).or_default();
                    if list.last() != Some(&(i as u32)) {
                        list.push(i as u32);
                    }
                }
            }
        }
        // Each list in rank order, so a decision can merge them best first and stop early.
        for by_place in index.values_mut() {
            for list in by_place.values_mut() {
                list.sort_unstable();
                list.dedup();
            }
        }
        Ok(RuleSet {
            version: file.version.trim().to_string(),
            source: source.to_string(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            load_time: now,
            by_id: rules
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect(),
            rules,
            warnings,
            index,
            by_rank,
        })
    }

    /// One rule.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.by_id.get(id).map(|&i| &self.rules[i])
    }
}

fn check_rule(
    r: RuleText,
    position: usize,
    at: &str,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
    knowledge: Option<&Knowledge>,
) -> Option<Rule> {
    let before = errors.len();
    let text_ok = |s: &str, max: usize| !s.trim().is_empty() && s.chars().count() <= max;
    if r.description.chars().count() > 1000 {
        errors.push(format!("{at}: description: at most 1000 characters"));
    }
    for (field, list) in [
        ("categories", &r.categories),
        ("places", &r.places),
        ("keywords", &r.keywords),
        ("missing_documents", &r.missing_documents),
    ] {
        if list.iter().any(|s| !text_ok(s, 200)) {
            errors.push(format!(
                "{at}: {field}: entries must be 1 to 200 characters"
            ));
        }
        if list.len() > 1000 {
            errors.push(format!("{at}: {field}: at most 1000 entries"));
        }
    }
    let channels = enum_list(errors, at, "channels", &r.channels, Channel::from_slug);
    let urgencies = enum_list(errors, at, "urgencies", &r.urgencies, Urgency::from_slug);
    let days = enum_list(errors, at, "days", &r.days, Weekday::from_slug);
    let fallback = enum_list(errors, at, "fallback", &r.fallback, UnitKind::from_slug);
    let unit_kind = enum_one(errors, at, "unit_kind", &r.unit_kind, UnitKind::from_slug);
    let approver_kind = enum_one(
        errors,
        at,
        "approver_kind",
        &r.approver_kind,
        UnitKind::from_slug,
    );
    let emergency_line = enum_one(
        errors,
        at,
        "emergency_line",
        &r.emergency_line,
        EmergencyLine::from_slug,
    );
    let disposition = Disposition::from_slug(r.disposition.trim());
    if disposition.is_none() {
        errors.push(format!(
            "{at}: disposition: must be immediate, committed, supplement, escalated, referred or emergency (is {:?})",
            r.disposition
        ));
    }
    let time_of_day = r.time_of_day.as_ref().and_then(|t| {
        let parsed = t
            .split_once('-')
            .and_then(|(a, b)| Some((parse_hhmm(a)?, parse_hhmm(b)?)))
            .filter(|(a, b)| a != b);
        if parsed.is_none() {
            errors.push(format!(
                "{at}: time_of_day: must be \"HH:MM-HH:MM\" with different ends (is {t:?})"
            ));
        }
        parsed
    });
    let time_limit = match r.time_limit_working_days {
        None | Some(-1) => None,
        Some(n) if (0..=365).contains(&n) => Some(n as u32),
        Some(n) => {
            errors.push(format!(
                "{at}: time_limit_working_days: must be 0 to 365 (is {n})"
            ));
            None
        }
    };
    if let Some(u) = &r.unit
        && !valid_id(u.strip_prefix("units/").unwrap_or(u))
    {
        errors.push(format!("{at}: unit: not a unit id ({u:?})"));
    }
    let unit = r
        .unit
        .as_ref()
        .map(|u| u.strip_prefix("units/").unwrap_or(u).to_string());
    let referral_reason = r.referral_reason.unwrap_or_default().trim().to_string();
    let competent_body = r.competent_body.unwrap_or_default().trim().to_string();

    // Contradictions between the parts of one rule.
    if let Some(d) = disposition {
        if unit.is_some() && unit_kind.is_some() {
            errors.push(format!("{at}: names both a unit and a unit_kind; give one"));
        }
        match d {
            Disposition::Emergency => {
                if emergency_line.is_none() {
                    errors.push(format!("{at}: an emergency rule needs an emergency_line"));
                }
                if unit_kind.is_some_and(|k| k != UnitKind::EmergencyLine) {
                    errors.push(format!(
                        "{at}: an emergency rule hands the case to an emergency line, not a {}",
                        unit_kind.map_or("", UnitKind::slug)
                    ));
                }
            }
            _ => {
                if emergency_line.is_some() {
                    errors.push(format!(
                        "{at}: emergency_line is only for the emergency disposition"
                    ));
                }
            }
        }
        if d == Disposition::Referred {
            if referral_reason.is_empty() {
                errors.push(format!(
                    "{at}: a referral needs a referral_reason to tell the resident"
                ));
            }
            if unit.is_none() && unit_kind.is_none() && competent_body.is_empty() {
                errors.push(format!(
                    "{at}: a referral needs the competent body: a unit, a unit_kind or competent_body"
                ));
            }
        } else if !referral_reason.is_empty() || !competent_body.is_empty() {
            errors.push(format!(
                "{at}: referral_reason and competent_body are only for the referred disposition"
            ));
        }
        if !matches!(d, Disposition::Emergency | Disposition::Referred)
            && unit.is_none()
            && unit_kind.is_none()
        {
            errors.push(format!(
                "{at}: needs a unit or a unit_kind to hand cases to"
            ));
        }
        if d != Disposition::Supplement && !r.missing_documents.is_empty() {
            errors.push(format!(
                "{at}: missing_documents is only for the supplement disposition"
            ));
        }
        if d == Disposition::Escalated {
            if let (Some(a), Some(k)) = (approver_kind, unit_kind) {
                let above = a.level().zip(k.level()).is_some_and(|(a, k)| a < k);
                if !above {
                    errors.push(format!(
                        "{at}: approver_kind {} is not above unit_kind {}: an escalation goes up",
                        a.slug(),
                        k.slug()
                    ));
                }
            }
        } else if approver_kind.is_some() {
            errors.push(format!(
                "{at}: approver_kind is only for the escalated disposition"
            ));
        }
        if d == Disposition::Immediate && time_limit.is_some_and(|n| n > 0) {
            errors.push(format!(
                "{at}: an immediate case is done on the spot; its time limit cannot be {} days",
                time_limit.unwrap_or_default()
            ));
        }
    }
    // Fallbacks climb: each must be a ladder kind above the one before it.
    let mut last = unit_kind.and_then(UnitKind::level);
    for k in &fallback {
        match (k.level(), last) {
            (None, _) => errors.push(format!(
                "{at}: fallback {} is not on the ladder; fallbacks climb grid → community → street_office → district_department",
                k.slug()
            )),
            (Some(l), Some(prev)) if l >= prev => errors.push(format!(
                "{at}: fallback {} is not above the level before it; fallbacks climb upward",
                k.slug()
            )),
            (Some(l), _) => last = Some(l),
        }
    }
    if let Some(k) = knowledge {
        for c in &r.categories {
            if !k.items.is_empty() && !k.items.contains_key(c) {
                warnings.push(format!("{at}: category {c} is not in the catalogue"));
            }
        }
        for p in &r.places {
            if !k.places.is_empty() && !k.knows_place(p) {
                warnings.push(format!("{at}: place {p} is not in the gazetteer"));
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let dedup = |v: Vec<String>| -> Vec<String> {
        let mut seen = HashSet::new();
        v.into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| seen.insert(s.clone()))
            .collect()
    };
    Some(Rule {
        id: r.id,
        description: r.description.trim().to_string(),
        priority: r.priority,
        position,
        categories: dedup(r.categories),
        places: dedup(r.places),
        channels,
        urgencies,
        keywords: dedup(r.keywords.iter().map(|k| k.to_lowercase()).collect()),
        time_of_day,
        days,
        disposition: disposition?,
        unit_kind,
        unit,
        fallback,
        time_limit_working_days: time_limit,
        missing_documents: dedup(r.missing_documents),
        approver_kind,
        referral_reason,
        competent_body,
        emergency_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuleSet, Vec<String>> {
        RuleSet::parse(text, "test", 0, None)
    }

    #[test]
    fn the_sample_loads() {
        let set = parse(SAMPLE).unwrap();
        assert!(set.rules.len() >= 20, "{}", set.rules.len());
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    }

    #[test]
    fn contradictions_are_refused_with_every_problem_named() {
        let text = r#"
version = "x"
[[rule]]
id = "a"
categories = ["c1"]
disposition = "committed"
unit_kind = "grid"
[[rule]]
id = "b"
categories = ["c1"]
disposition = "supplement"
unit_kind = "grid"
[[rule]]
id = "a"
disposition = "emergency"
[[rule]]
id = "d"
disposition = "referred"
unit_kind = "utility"
[[rule]]
id = "e"
disposition = "committed"
unit_kind = "community"
fallback = ["grid"]
[[rule]]
id = "f"
disposition = "escalated"
unit_kind = "community"
approver_kind = "grid"
time_of_day = "25:00-01:00"
"#;
        let errors = parse(text).unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "decides differently",
            "used by an earlier rule",
            "needs an emergency_line",
            "needs a referral_reason",
            "climb upward",
            "an escalation goes up",
            "time_of_day",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unparsable_files_and_unknown_fields_are_refused() {
        assert!(parse("not = [toml").is_err());
        let e = parse("version = \"x\"\n[[rule]]\nid = \"a\"\ndisposition = \"committed\"\nunit_kind = \"grid\"\ncolour = \"red\"\n").unwrap_err();
        assert!(e[0].contains("colour"), "{e:?}");
        let e = parse("version = \"x\"\n[[rule]]\nid = \"a\"\ndisposition = \"sometimes\"\nunit_kind = \"grid\"\n").unwrap_err();
        assert!(e[0].contains("disposition"), "{e:?}");
    }
}
