//! Deciding a route: find the rules matching a case through the index (category × place),
//! check their remaining conditions, order them (priority, then the lowest level, then the
//! most specific, then file order), and take the first whose target can be found — falling
//! back upward within a rule — or, when none matches or none can be placed, the community of
//! the case's place. Every step is recorded in words.

use std::sync::Arc;

use super::{Rule, RuleSet};
use crate::{
    directory::Directory,
    domain::{CaseFacts, Decision, Disposition, Level, Step, Unit, UnitKind},
    knowledge::Knowledge,
    workdays::{LocalTime, in_window},
};
use minqing_kit::time::Micros;

/// At most this many matching rules are tried and reported.
const MAX_TRIED: usize = 20;

/// What a decision needs.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    /// The rules in force.
    pub rules: &'a RuleSet,
    /// The units.
    pub units: &'a Directory,
    /// Catalogue and gazetteer.
    pub knowledge: &'a Knowledge,
    /// Local time.
    pub local: LocalTime,
    /// Time limit when the catalogue does not know the category.
    pub default_time_limit: u32,
}

/// A decision, and units it needs created (a community nobody registered).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Units to create with it.
    pub create: Vec<Unit>,
}

struct Ctx<'f> {
    facts: &'f CaseFacts,
    chain: Vec<&'f str>,
    text: String,
    weekday: crate::domain::Weekday,
    minute: u32,
    exclude: &'f [String],
    steps: Vec<Step>,
}

fn step(text: impl Into<String>, rule: &str, unit: &str) -> Step {
    Step {
        text: text.into(),
        rule: rule.to_string(),
        unit: unit.to_string(),
    }
}

impl Rule {
    fn matches_rest(&self, ctx: &Ctx<'_>) -> bool {
        (self.channels.is_empty() || self.channels.contains(&ctx.facts.channel))
            && (self.urgencies.is_empty() || self.urgencies.contains(&ctx.facts.urgency))
            && (self.days.is_empty() || self.days.contains(&ctx.weekday))
            && self
                .time_of_day
                .is_none_or(|(a, b)| in_window(ctx.minute, a, b))
            && (self.keywords.is_empty() || self.keywords.iter().any(|k| ctx.text.contains(k)))
    }

    fn why(&self, ctx: &Ctx<'_>) -> String {
        let mut parts = Vec::new();
        if !self.categories.is_empty() {
            parts.push(format!("category {}", ctx.facts.category));
        }
        if !self.places.is_empty() {
            let hit = self
                .places
                .iter()
                .find(|p| ctx.chain.contains(&p.as_str()))
                .map_or("", String::as_str);
            parts.push(format!("place {hit} covers the case's place"));
        }
        if !self.channels.is_empty() {
            parts.push(format!("channel {}", ctx.facts.channel.slug()));
        }
        if !self.urgencies.is_empty() {
            parts.push(format!("urgency {}", ctx.facts.urgency.slug()));
        }
        if !self.keywords.is_empty() {
            let hit = self
                .keywords
                .iter()
                .find(|k| ctx.text.contains(k.as_str()))
                .map_or("", String::as_str);
            parts.push(format!("keyword {hit:?}"));
        }
        if let Some((a, b)) = self.time_of_day {
            parts.push(format!(
                "submitted within {}-{}",
                crate::workdays::format_hhmm(a),
                crate::workdays::format_hhmm(b)
            ));
        }
        if !self.days.is_empty() {
            parts.push(format!("submitted on {}", ctx.weekday.slug()));
        }
        if parts.is_empty() {
            "it matches every case".into()
        } else {
            parts.join("; ")
        }
    }
}

impl Decider<'_> {
    /// Decides the route of `facts` at `now`, never choosing a unit in `exclude`.
    pub fn decide(&self, facts: &CaseFacts, exclude: &[String], now: Micros) -> Outcome {
        let mut chain: Vec<&str> = facts.place.codes().collect();
        chain.reverse();
        if !self.knowledge.city.is_empty() {
            chain.push(&self.knowledge.city);
        }
        let (weekday, minute) = self.local.weekday_minutes(facts.submit_time);
        let mut ctx = Ctx {
            facts,
            chain,
            text: format!("{} {}", facts.title, facts.description).to_lowercase(),
            weekday,
            minute,
            exclude,
            steps: Vec::new(),
        };
        let matched = self.candidates(&ctx);
        let matched_ids: Vec<String> = matched
            .iter()
            .take(MAX_TRIED)
            .map(|&i| self.rules.rules[i as usize].id.clone())
            .collect();
        if matched.is_empty() {
            ctx.steps.push(step(
                format!(
                    "no rule of rule set {} matches this case",
                    self.rules.version
                ),
                "",
                "",
            ));
        }
        for &i in matched.iter().take(MAX_TRIED) {
            let rule = &self.rules.rules[i as usize];
            let why = rule.why(&ctx);
            ctx.steps.push(step(
                format!("rule {} matched: {why}", rule.id),
                &rule.id,
                "",
            ));
            if let Some(mut out) = self.apply(rule, &mut ctx, now) {
                out.decision.matched_rules = matched_ids;
                out.decision.reason = format!(
                    "rule {} ({why}): {} by {}{}",
                    rule.id,
                    out.decision.disposition.slug(),
                    out.decision.unit_display_name,
                    if out.decision.fell_back {
                        " after falling back upward"
                    } else {
                        ""
                    }
                );
                out.decision.steps = std::mem::take(&mut ctx.steps);
                return out;
            }
        }
        let mut out = self.default_route(&mut ctx, now);
        out.decision.matched_rules = matched_ids;
        out.decision.steps = std::mem::take(&mut ctx.steps);
        out
    }

    /// Positions of the (at most [`MAX_TRIED`]) best rules matching the case, best first.
    /// The index lists for the case's category and places are each in rank order; merging
    /// them and stopping at [`MAX_TRIED`] matches makes the cost depend on how many rules
    /// rank above the winners, not on how many rules there are.
    fn candidates(&self, ctx: &Ctx<'_>) -> Vec<u32> {
        let set = self.rules;
        let mut lists: Vec<&[u32]> = Vec::with_capacity(16);
        for cat in [ctx.facts.category.as_str(), ""] {
            let Some(by_place) = set.index.get(cat) else {
                continue;
            };
            for place in ctx.chain.iter().copied().chain([""]) {
                if let Some(list) = by_place.get(place) {
                    lists.push(list);
                }
            }
        }
        let mut heads = vec![0usize; lists.len()];
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (li, list) in lists.iter().enumerate() {
                if let Some(&rank) = list.get(heads[li])
                    && best.is_none_or(|(_, b)| rank < b)
                {
                    best = Some((li, rank));
                }
            }
            let Some((li, rank)) = best else { break };
            heads[li] += 1;
            // A rule listed under two of the case's places comes out twice in a row.
            if last == Some(rank) {
                continue;
            }
            last = Some(rank);
            let position = set.by_rank[rank as usize];
            if set.rules[position as usize].matches_rest(ctx) {
                out.push(position);
                if out.len() >= MAX_TRIED {
                    break;
                }
            }
        }
        out
    }

    fn open_at(&self, unit: &Unit, ctx: &Ctx<'_>) -> bool {
        unit.working_hours.is_empty()
            || unit.working_hours.iter().any(|h| {
                (h.days.is_empty() || h.days.contains(&ctx.weekday))
                    && in_window(ctx.minute, h.open, h.close)
            })
    }

    /// The lowest active unit of `kind` for the case (open ones first).
    fn find(&self, kind: UnitKind, ctx: &Ctx<'_>, any_category: bool) -> Option<Arc<Unit>> {
        self.units
            .lowest(
                kind,
                &ctx.chain,
                |u| {
                    (any_category || u.handles(&ctx.facts.category))
                        && !ctx.exclude.iter().any(|e| e == &u.id)
                },
                |u| self.open_at(u, ctx),
            )
            .cloned()
    }

    fn time_limit(&self, rule: Option<&Rule>, category: &str) -> u32 {
        rule.and_then(|r| r.time_limit_working_days)
            .or_else(|| {
                self.knowledge
                    .items
                    .get(category)
                    .map(|i| i.time_limit_working_days)
            })
            .unwrap_or(self.default_time_limit)
    }

    /// Places a rule's target; `None` when nothing can take it (the next rule is tried).
    fn apply(&self, rule: &Rule, ctx: &mut Ctx<'_>, now: Micros) -> Option<Outcome> {
        let mut create = Vec::new();
        let mut fell_back = false;
        let (unit, coordinator) = if rule.disposition == Disposition::Emergency {
            let line = rule.emergency_line?;
            let found = self.units.lowest(
                UnitKind::EmergencyLine,
                &ctx.chain,
                |u| u.emergency_line == Some(line) && !ctx.exclude.iter().any(|e| e == &u.id),
                |_| true,
            );
            let Some(unit) = found.cloned() else {
                ctx.steps.push(step(
                    format!(
                        "no active {} emergency line covers the case's place",
                        line.slug()
                    ),
                    &rule.id,
                    "",
                ));
                return None;
            };
            let community = self.community_of(ctx, &mut create, false);
            (unit, community.map(|c| c.id.clone()).unwrap_or_default())
        } else if let Some(id) = &rule.unit {
            match self.units.get(id) {
                Some(u) if u.active && !ctx.exclude.contains(id) => (u.clone(), String::new()),
                _ => {
                    ctx.steps.push(step(
                        format!("unit {id} is not registered, inactive, or refused this case"),
                        &rule.id,
                        id,
                    ));
                    let mut found = None;
                    for k in &rule.fallback {
                        if let Some(u) = self.try_kind(*k, rule, ctx) {
                            found = Some(u);
                            break;
                        }
                    }
                    fell_back = true;
                    (found?, String::new())
                }
            }
        } else if let Some(kind) = rule.unit_kind {
            let mut found = self.try_kind(kind, rule, ctx);
            let mut tried = vec![kind];
            for k in &rule.fallback {
                if found.is_some() {
                    break;
                }
                fell_back = true;
                tried.push(*k);
                found = self.try_kind(*k, rule, ctx);
            }
            // Then climb the ladder above the last kind tried.
            let mut next = tried.last().and_then(|k| k.above());
            while found.is_none() {
                let Some(k) = next else { break };
                fell_back = true;
                found = self.try_kind(k, rule, ctx);
                next = k.above();
            }
            (found?, String::new())
        } else {
            // A referral to a body that is not a registered unit: the community explains it
            // to the resident and hands the papers on.
            let c = self.community_of(ctx, &mut create, true)?;
            (c, String::new())
        };
        if fell_back {
            ctx.steps.push(step(
                format!("fell back upward to {} ({})", unit.id, unit.kind.slug()),
                &rule.id,
                &unit.id,
            ));
        }
        ctx.steps.push(step(
            format!(
                "{} goes to {} ({})",
                rule.disposition.slug(),
                unit.display_name,
                unit.id
            ),
            &rule.id,
            &unit.id,
        ));
        let mut decision = self.base_decision(Some(rule), &unit, now, ctx.facts);
        decision.fell_back = fell_back;
        decision.coordinator = coordinator;
        match rule.disposition {
            Disposition::Supplement => {
                decision.missing_documents = if rule.missing_documents.is_empty() {
                    self.knowledge
                        .items
                        .get(&ctx.facts.category)
                        .map(|i| i.required_documents.clone())
                        .unwrap_or_default()
                } else {
                    rule.missing_documents.clone()
                };
            }
            Disposition::Escalated => {
                let approver_kind = rule
                    .approver_kind
                    .or_else(|| unit.kind.above())
                    .unwrap_or(UnitKind::StreetOffice);
                let mut next = Some(approver_kind);
                while let Some(k) = next {
                    if let Some(a) = self.find(k, ctx, true) {
                        ctx.steps.push(step(
                            format!("approval is asked of {} ({})", a.display_name, a.id),
                            &rule.id,
                            &a.id,
                        ));
                        decision.approver = a.id.clone();
                        break;
                    }
                    next = k.above();
                }
                if decision.approver.is_empty() {
                    ctx.steps.push(step(
                        "no unit above covers the case's place to approve it; staff must name the approver",
                        &rule.id,
                        "",
                    ));
                }
            }
            Disposition::Referred => {
                decision.referral_reason = rule.referral_reason.clone();
                decision.competent_body = if rule.competent_body.is_empty() {
                    unit.display_name.clone()
                } else {
                    rule.competent_body.clone()
                };
            }
            Disposition::Emergency => decision.emergency_line = rule.emergency_line,
            Disposition::Immediate | Disposition::Committed => {}
        }
        Some(Outcome { decision, create })
    }

    fn try_kind(&self, kind: UnitKind, rule: &Rule, ctx: &mut Ctx<'_>) -> Option<Arc<Unit>> {
        let found = self.find(kind, ctx, false);
        if found.is_none() {
            ctx.steps.push(step(
                format!(
                    "no active {} covering the case's place handles {}",
                    kind.slug(),
                    ctx.facts.category
                ),
                &rule.id,
                "",
            ));
        }
        found
    }

    /// The community of the case's place: its registered unit, or one created for it (or the
    /// street office / district when the place is known only that far).
    fn community_of(
        &self,
        ctx: &mut Ctx<'_>,
        create: &mut Vec<Unit>,
        respect_exclude: bool,
    ) -> Option<Arc<Unit>> {
        let excluded = |id: &str| respect_exclude && ctx.exclude.iter().any(|e| e == id);
        for level in [Level::Community, Level::Street, Level::District] {
            let code = ctx.facts.place.code(level);
            if code.is_empty() {
                continue;
            }
            let kind = UnitKind::at_level(level);
            if let Some(u) = self
                .units
                .at(code)
                .iter()
                .find(|u| u.kind == kind && u.active && !excluded(&u.id))
            {
                return Some(u.clone());
            }
            let id = format!("{}-{}", kind.slug().replace('_', "-"), code.to_lowercase());
            if excluded(&id) {
                continue;
            }
            if let Some(u) = self.units.get(&id) {
                // Registered under the conventional id but inactive or elsewhere: still the
                // place's own unit, and a case is never left with nowhere to go.
                return Some(u.clone());
            }
            if let Some(u) = create.iter().find(|u| u.id == id) {
                return Some(Arc::new(u.clone()));
            }
            let unit = Unit {
                id: id.clone(),
                kind,
                display_name: self.knowledge.place_name(code),
                display_name_en: String::new(),
                places: vec![code.to_string()],
                categories: Vec::new(),
                emergency_line: None,
                working_hours: Vec::new(),
                contacts: Vec::new(),
                acceptance_window_minutes: 0,
                needs_reporter_contact: false,
                active: true,
                description: "Registered by routing: a case came from this place and no unit was registered for it.".into(),
                create_time: 0,
                update_time: 0,
                version: 1,
            };
            ctx.steps.push(step(
                format!(
                    "no {} unit is registered for {code}; registering {id}",
                    kind.slug()
                ),
                "",
                &id,
            ));
            create.push(unit.clone());
            return Some(Arc::new(unit));
        }
        None
    }

    fn default_route(&self, ctx: &mut Ctx<'_>, now: Micros) -> Outcome {
        let mut create = Vec::new();
        let unit = self
            .community_of(ctx, &mut create, true)
            .or_else(|| self.community_of(ctx, &mut create, false));
        let Some(unit) = unit else {
            // Unreachable for a case with a place (intake requires a district at least);
            // a hypothetical case without one is refused before deciding.
            let decision = Decision {
                rule: String::new(),
                disposition: Disposition::Committed,
                unit: String::new(),
                unit_display_name: String::new(),
                due_time: None,
                time_limit_working_days: 0,
                reason: "the case has no place".into(),
                steps: Vec::new(),
                fell_back: false,
                missing_documents: Vec::new(),
                approver: String::new(),
                referral_reason: String::new(),
                competent_body: String::new(),
                emergency_line: None,
                rule_set_version: self.rules.version.clone(),
                decide_time: now,
                matched_rules: Vec::new(),
                coordinator: String::new(),
            };
            return Outcome { decision, create };
        };
        ctx.steps.push(step(
            format!(
                "the case goes to the community of its place: {} ({})",
                unit.display_name, unit.id
            ),
            "",
            &unit.id,
        ));
        let mut decision = self.base_decision(None, &unit, now, ctx.facts);
        decision.reason = format!(
            "no rule placed this case: committed to {}, the community of its place",
            unit.display_name
        );
        Outcome { decision, create }
    }

    fn base_decision(
        &self,
        rule: Option<&Rule>,
        unit: &Unit,
        now: Micros,
        facts: &CaseFacts,
    ) -> Decision {
        let disposition = rule.map_or(Disposition::Committed, |r| r.disposition);
        let limit = match disposition {
            Disposition::Immediate | Disposition::Emergency => 0,
            _ => self.time_limit(rule, &facts.category),
        };
        let due_time = match disposition {
            Disposition::Supplement | Disposition::Escalated => None,
            _ => Some(self.local.add_working_days(now, limit)),
        };
        Decision {
            rule: rule.map(|r| r.id.clone()).unwrap_or_default(),
            disposition,
            unit: unit.id.clone(),
            unit_display_name: unit.display_name.clone(),
            due_time,
            time_limit_working_days: limit as i32,
            reason: String::new(),
            steps: Vec::new(),
            fell_back: false,
            missing_documents: Vec::new(),
            approver: String::new(),
            referral_reason: String::new(),
            competent_body: String::new(),
            emergency_line: None,
            rule_set_version: self.rules.version.clone(),
            decide_time: now,
            matched_rules: Vec::new(),
            coordinator: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{Channel, EmergencyLine, Place, Urgency},
        knowledge::tests::tiny,
    };

    fn unit(id: &str, kind: UnitKind, places: &[&str], cats: &[&str]) -> Unit {
        Unit {
            id: id.into(),
            kind,
            display_name: id.into(),
            display_name_en: String::new(),
            places: places.iter().map(|s| s.to_string()).collect(),
            categories: cats.iter().map(|s| s.to_string()).collect(),
            emergency_line: None,
            working_hours: Vec::new(),
            contacts: Vec::new(),
            acceptance_window_minutes: 0,
            needs_reporter_contact: false,
            active: true,
            description: String::new(),
            create_time: 0,
            update_time: 0,
            version: 1,
        }
    }

    fn facts(category: &str, title: &str, urgency: Urgency) -> CaseFacts {
        CaseFacts {
            case_id: "c1".into(),
            category: category.into(),
            place: Place {
                district: "620102".into(),
                street: "620102001".into(),
                community: "620102001001".into(),
                grid: "620102001001-g01".into(),
                building: "620102001001-g01-b01".into(),
                ..Default::default()
            },
            channel: Channel::Hotline,
            urgency,
            title: title.into(),
            description: String::new(),
            submit_time: 0,
            volunteer_suitable: false,
            category_name: String::new(),
            liaison_station: String::new(),
            deputy: String::new(),
            cluster: String::new(),
            attachments: Vec::new(),
        }
    }

    const RULES: &str = r#"
version = "t1"
[[rule]]
id = "lights-grid"
categories = ["lights"]
disposition = "committed"
unit_kind = "grid"
time_limit_working_days = 2
[[rule]]
id = "lights-street"
categories = ["lights"]
disposition = "committed"
unit_kind = "street_office"
[[rule]]
id = "fire"
priority = 100
urgencies = ["emergency"]
keywords = ["fire", "火"]
disposition = "emergency"
emergency_line = "fire"
[[rule]]
id = "papers"
categories = ["dibao"]
disposition = "supplement"
unit_kind = "community"
missing_documents = ["ID card"]
[[rule]]
id = "building"
categories = ["repairs"]
disposition = "escalated"
unit_kind = "community"
[[rule]]
id = "water"
categories = ["water"]
disposition = "referred"
unit_kind = "utility"
referral_reason = "the water company handles supply faults"
"#;

    fn decide(units: Vec<Unit>, f: &CaseFacts, exclude: &[String]) -> Outcome {
        let rules = RuleSet::parse(RULES, "t", 0, None).unwrap();
        let dir = Directory::new(units);
        let k = tiny();
        Decider {
            rules: &rules,
            units: &dir,
            knowledge: &k,
            local: LocalTime::new(480),
            default_time_limit: 5,
        }
        .decide(f, exclude, 1_000_000)
    }

    fn ladder() -> Vec<Unit> {
        vec![
            unit("grid-1", UnitKind::Grid, &["620102001001-g01"], &[]),
            unit("comm-1", UnitKind::Community, &["620102001001"], &[]),
            unit("street-1", UnitKind::StreetOffice, &["620102001"], &[]),
        ]
    }

    #[test]
    fn the_lowest_level_wins_and_says_why() {
        let out = decide(ladder(), &facts("lights", "dark", Urgency::Normal), &[]);
        let d = out.decision;
        assert_eq!(d.rule, "lights-grid");
        assert_eq!(d.unit, "grid-1");
        assert_eq!(d.disposition, Disposition::Committed);
        assert_eq!(d.time_limit_working_days, 2);
        assert_eq!(d.matched_rules, ["lights-grid", "lights-street"]);
        assert!(d.steps[0].text.contains("category lights"), "{:?}", d.steps);
    }

    #[test]
    fn a_refusing_unit_is_never_chosen_again_and_routing_falls_back_upward() {
        let out = decide(
            ladder(),
            &facts("lights", "dark", Urgency::Normal),
            &["grid-1".into()],
        );
        assert_eq!(out.decision.unit, "comm-1");
        assert!(out.decision.fell_back);
        assert_eq!(out.decision.rule, "lights-grid");
    }

    #[test]
    fn emergencies_go_to_the_right_line_and_the_community_coordinates() {
        let mut units = ladder();
        let mut fire = unit("fire-119", UnitKind::EmergencyLine, &["620100"], &[]);
        fire.emergency_line = Some(EmergencyLine::Fire);
        let mut police = unit("police-110", UnitKind::EmergencyLine, &["620100"], &[]);
        police.emergency_line = Some(EmergencyLine::Police);
        units.extend([fire, police]);
        let out = decide(
            units,
            &facts("lights", "楼道着火了", Urgency::Emergency),
            &[],
        );
        assert_eq!(out.decision.disposition, Disposition::Emergency);
        assert_eq!(out.decision.unit, "fire-119");
        assert_eq!(out.decision.coordinator, "comm-1");
    }

    #[test]
    fn supplement_escalation_and_referral_carry_their_details() {
        let mut units = ladder();
        units.push(unit("water-co", UnitKind::Utility, &["620102"], &["water"]));
        let s = decide(units.clone(), &facts("dibao", "x", Urgency::Normal), &[]).decision;
        assert_eq!(s.disposition, Disposition::Supplement);
        assert_eq!(s.missing_documents, ["ID card"]);
        assert_eq!(s.due_time, None);
        let e = decide(units.clone(), &facts("repairs", "x", Urgency::Normal), &[]).decision;
        assert_eq!(
            (e.unit.as_str(), e.approver.as_str()),
            ("comm-1", "street-1")
        );
        let r = decide(units, &facts("water", "x", Urgency::Normal), &[]).decision;
        assert_eq!(r.unit, "water-co");
        assert!(r.referral_reason.contains("water company"));
    }

    #[test]
    fn no_match_goes_to_the_community_created_if_need_be() {
        let out = decide(ladder(), &facts("other", "x", Urgency::Normal), &[]);
        assert_eq!(out.decision.unit, "comm-1");
        assert!(out.create.is_empty());
        let out = decide(vec![], &facts("other", "x", Urgency::Normal), &[]);
        assert_eq!(out.decision.unit, "community-620102001001");
        assert_eq!(out.create.len(), 1);
        assert_eq!(out.decision.rule, "");
    }
}
