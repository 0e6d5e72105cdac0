//! Domain values out to the wire (and an intake case in to routing's facts).

use minqing_kit::time::to_timestamp;
use minqing_proto::minqing::{intake::v1 as ipb, routing::v1 as pb, r#type::v1 as tpb};

use crate::{
    domain::{
        Assignment, Attachment, CaseFacts, Channel, Contact, Decision, Escalation, Place,
        ProgressNote, Referral, Route, Unit, Urgency,
    },
    rules::{Rule, RuleSet},
    workdays::format_hhmm,
};

/// A place on the wire.
pub fn place(p: &Place) -> tpb::Place {
    tpb::Place {
        district: p.district.clone(),
        street: p.street.clone(),
        community: p.community.clone(),
        grid: p.grid.clone(),
        building: p.building.clone(),
        location: p.location_e6.map(|(lat, lng)| tpb::LatLng {
            latitude: lat as f64 / 1e6,
            longitude: lng as f64 / 1e6,
        }),
        address: p.address.clone(),
    }
}

/// Attachments on the wire.
pub fn attachments(items: &[Attachment]) -> Vec<tpb::Attachment> {
    items
        .iter()
        .map(|a| tpb::Attachment {
            uri: a.uri.clone(),
            media_type: a.media_type.clone(),
            description: a.description.clone(),
        })
        .collect()
}

/// Attachments off the wire (already checked, or from intake).
pub fn attachments_in(items: &[tpb::Attachment]) -> Vec<Attachment> {
    items
        .iter()
        .map(|a| Attachment {
            uri: a.uri.clone(),
            media_type: a.media_type.clone(),
            description: a.description.clone(),
        })
        .collect()
}

fn name_or_empty(prefix: &str, id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!("{prefix}/{id}")
    }
}

/// Facts on the wire.
pub fn facts(f: &CaseFacts) -> pb::CaseFacts {
    pb::CaseFacts {
        case: name_or_empty("cases", &f.case_id),
        category: f.category.clone(),
        place: Some(place(&f.place)),
        channel: f.channel.wire(),
        urgency: f.urgency.wire(),
        title: f.title.clone(),
        description: f.description.clone(),
        submit_time: Some(to_timestamp(f.submit_time)),
        volunteer_suitable: f.volunteer_suitable,
        category_name: f.category_name.clone(),
        liaison_station: name_or_empty("stations", &f.liaison_station),
        deputy: name_or_empty("deputies", &f.deputy),
        cluster: name_or_empty("clusters", &f.cluster),
        attachments: attachments(&f.attachments),
    }
}

/// What intake accepted, as routing's facts and the reporter's contact.
pub fn facts_from_case(c: &ipb::Case) -> Option<(CaseFacts, Option<Contact>)> {
    let id = c.name.strip_prefix("cases/")?.to_string();
    let p = c.place.clone().unwrap_or_default();
    let details = c.channel_details.clone().unwrap_or_default();
    let facts = CaseFacts {
        case_id: id,
        category: c.category.clone(),
        place: Place {
            district: p.district,
            street: p.street,
            community: p.community,
            grid: p.grid,
            building: p.building,
            address: p.address,
            location_e6: p.location.map(|l| {
                (
                    (l.latitude * 1e6).round() as i64,
                    (l.longitude * 1e6).round() as i64,
                )
            }),
        },
        channel: Channel::from_wire(c.channel).unwrap_or(Channel::Hotline),
        urgency: Urgency::from_wire(c.urgency).unwrap_or(Urgency::Normal),
        title: c.title.clone(),
        description: c.description.clone(),
        submit_time: c
            .create_time
            .as_ref()
            .and_then(minqing_kit::time::from_timestamp)
            .unwrap_or_default(),
        volunteer_suitable: false,
        category_name: String::new(),
        liaison_station: details.liaison_station,
        deputy: details.deputy,
        cluster: c
            .cluster
            .strip_prefix("clusters/")
            .unwrap_or_default()
            .to_string(),
        attachments: attachments_in(&c.attachments),
    };
    let contact = c
        .reporter
        .as_ref()
        .filter(|r| !r.anonymous)
        .and_then(|r| r.contact.as_ref())
        .map(|k| Contact {
            name: k.name.clone(),
            phone: k.phone.clone(),
            postal_address: k.postal_address.clone(),
            online_address: k.online_address.clone(),
            preferred_method: k.preferred_method,
            needs_appointed_visit: k.needs_appointed_visit,
            visit_note: k.visit_note.clone(),
        });
    Some((facts, contact))
}

/// A contact on the wire.
pub fn contact(c: &Contact) -> tpb::Contact {
    tpb::Contact {
        name: c.name.clone(),
        phone: c.phone.clone(),
        postal_address: c.postal_address.clone(),
        online_address: c.online_address.clone(),
        preferred_method: c.preferred_method,
        needs_appointed_visit: c.needs_appointed_visit,
        visit_note: c.visit_note.clone(),
    }
}

/// A unit on the wire.
pub fn unit(u: &Unit) -> pb::Unit {
    pb::Unit {
        name: u.name(),
        kind: u.kind.wire(),
        display_name: u.display_name.clone(),
        display_name_en: u.display_name_en.clone(),
        places: u.places.clone(),
        categories: u.categories.clone(),
        emergency_line: u.emergency_line.map_or(0, |l| l.wire()),
        working_hours: u
            .working_hours
            .iter()
            .map(|h| pb::WorkingHours {
                days: h.days.iter().map(|d| d.wire()).collect(),
                open: format_hhmm(h.open),
                close: format_hhmm(h.close),
            })
            .collect(),
        contacts: u
            .contacts
            .iter()
            .map(|c| pb::UnitContact {
                role: c.role.clone(),
                name: c.name.clone(),
                phone: c.phone.clone(),
                online_address: c.online_address.clone(),
            })
            .collect(),
        acceptance_window_minutes: u.acceptance_window_minutes as i32,
        needs_reporter_contact: u.needs_reporter_contact,
        active: u.active,
        description: u.description.clone(),
        level: u.kind.level().map_or(0, |l| l as i32),
        create_time: Some(to_timestamp(u.create_time)),
        update_time: Some(to_timestamp(u.update_time)),
        etag: u.version.to_string(),
    }
}

/// A decision on the wire.
pub fn decision(d: &Decision, f: &CaseFacts) -> pb::RouteDecision {
    pb::RouteDecision {
        facts: Some(facts(f)),
        rule: name_or_empty("rules", &d.rule),
        disposition: d.disposition.wire(),
        unit: name_or_empty("units", &d.unit),
        unit_display_name: d.unit_display_name.clone(),
        due_time: d.due_time.map(to_timestamp),
        time_limit_working_days: d.time_limit_working_days,
        reason: d.reason.clone(),
        steps: d
            .steps
            .iter()
            .map(|s| pb::DecisionStep {
                text: s.text.clone(),
                rule: name_or_empty("rules", &s.rule),
                unit: name_or_empty("units", &s.unit),
            })
            .collect(),
        fell_back: d.fell_back,
        missing_documents: d.missing_documents.clone(),
        approver: name_or_empty("units", &d.approver),
        referral_reason: d.referral_reason.clone(),
        competent_body: d.competent_body.clone(),
        emergency_line: d.emergency_line.map_or(0, |l| l.wire()),
        rule_set_version: d.rule_set_version.clone(),
        decide_time: Some(to_timestamp(d.decide_time)),
        matched_rules: d
            .matched_rules
            .iter()
            .map(|r| format!("rules/{r}"))
            .collect(),
    }
}

fn progress(p: &ProgressNote) -> pb::ProgressNote {
    pb::ProgressNote {
        note: p.note.clone(),
        attachments: attachments(&p.attachments),
        time: Some(to_timestamp(p.time)),
        actor: p.actor.clone(),
    }
}

/// An assignment on the wire; the reporter's contact only when `contact` is given (the unit
/// needs it and the report is not anonymous).
pub fn assignment(a: &Assignment, f: &CaseFacts, contact: Option<&Contact>) -> pb::Assignment {
    pb::Assignment {
        name: a.name(),
        case: format!("cases/{}", a.case_id),
        unit: format!("units/{}", a.unit),
        unit_display_name: a.unit_display_name.clone(),
        disposition: a.disposition.wire(),
        state: a.state.wire(),
        facts: Some(facts(f)),
        reporter_contact: contact.filter(|_| a.shows_contact).map(self::contact),
        due_time: a.due_time.map(to_timestamp),
        accept_by: Some(to_timestamp(a.accept_by)),
        decision: Some(decision(&a.decision, f)),
        create_time: Some(to_timestamp(a.create_time)),
        accept_time: a.accept_time.map(to_timestamp),
        end_time: a.end_time.map(to_timestamp),
        end_reason: a.end_reason.clone(),
        result: a.result.clone(),
        evidence: attachments(&a.evidence),
        progress: a.progress.iter().map(progress).collect(),
        missing_documents: a.missing_documents.clone(),
        acceptance_overdue: a.acceptance_overdue,
        etag: a.version.to_string(),
    }
}

/// An escalation on the wire.
pub fn escalation(e: &Escalation) -> pb::Escalation {
    pb::Escalation {
        approver: name_or_empty("units", &e.approver),
        approver_display_name: e.approver_display_name.clone(),
        reason: e.reason.clone(),
        requested_by: e.requested_by.clone(),
        request_time: Some(to_timestamp(e.request_time)),
        approved: e.approved,
        decision_note: e.decision_note.clone(),
        decide_time: e.decide_time.map(to_timestamp),
        answer_due_time: e.answer_due_time.map(to_timestamp),
        answer_time_limit_working_days: if e.decide_time.is_some() { 3 } else { 0 },
    }
}

/// A referral on the wire.
pub fn referral(r: &Referral) -> pb::Referral {
    pb::Referral {
        unit: name_or_empty("units", &r.unit),
        competent_body: r.competent_body.clone(),
        reason: r.reason.clone(),
        refer_time: Some(to_timestamp(r.refer_time)),
    }
}

/// A route on the wire, with `assignments` (empty for events and lists).
pub fn route(r: &Route, assignments: Vec<pb::Assignment>) -> pb::CaseRoute {
    pb::CaseRoute {
        case: r.case_name(),
        facts: Some(facts(&r.facts)),
        state: r.state.wire(),
        disposition: r.disposition.wire(),
        handling_unit: name_or_empty("units", &r.handling_unit),
        handling_unit_display_name: r.handling_unit_display_name.clone(),
        coordinating_unit: name_or_empty("units", &r.coordinating_unit),
        coordinating_unit_display_name: r.coordinating_unit_display_name.clone(),
        current_assignment: name_or_empty("assignments", &r.current_assignment),
        due_time: r.due_time.map(to_timestamp),
        time_limit_working_days: r.time_limit_working_days,
        clock_start_time: r.clock_start_time.map(to_timestamp),
        missing_documents: r.missing_documents.clone(),
        escalation: r.escalation.as_ref().map(escalation),
        referral: r.referral.as_ref().map(referral),
        emergency_line: r.emergency_line.map_or(0, |l| l.wire()),
        // The facts are the route's own, given once.
        decision: Some(pb::RouteDecision {
            facts: None,
            ..decision(&r.decision, &r.facts)
        }),
        result: r.result.clone(),
        assignments,
        route_count: r.route_count,
        create_time: Some(to_timestamp(r.create_time)),
        update_time: Some(to_timestamp(r.update_time)),
        etag: r.version.to_string(),
    }
}

/// A rule on the wire.
pub fn rule(r: &Rule) -> pb::Rule {
    pb::Rule {
        name: format!("rules/{}", r.id),
        description: r.description.clone(),
        r#match: Some(pb::RuleMatch {
            categories: r.categories.clone(),
            places: r.places.clone(),
            channels: r.channels.iter().map(|c| c.wire()).collect(),
            urgencies: r.urgencies.iter().map(|u| u.wire()).collect(),
            keywords: r.keywords.clone(),
            time_of_day: r
                .time_of_day
                .map(|(a, b)| format!("{}-{}", format_hhmm(a), format_hhmm(b)))
                .unwrap_or_default(),
            days: r.days.iter().map(|d| d.wire()).collect(),
        }),
        action: Some(pb::RuleAction {
            disposition: r.disposition.wire(),
            unit_kind: r.unit_kind.map_or(0, |k| k.wire()),
            unit: r
                .unit
                .as_ref()
                .map(|u| format!("units/{u}"))
                .unwrap_or_default(),
            fallback: r.fallback.iter().map(|k| k.wire()).collect(),
            time_limit_working_days: r.time_limit_working_days.map_or(-1, |n| n as i32),
            missing_documents: r.missing_documents.clone(),
            approver_kind: r.approver_kind.map_or(0, |k| k.wire()),
            referral_reason: r.referral_reason.clone(),
            competent_body: r.competent_body.clone(),
            emergency_line: r.emergency_line.map_or(0, |l| l.wire()),
        }),
        priority: r.priority,
        position: r.position as i32,
    }
}

/// A rule set on the wire.
pub fn rule_set(s: &RuleSet) -> pb::RuleSet {
    pb::RuleSet {
        version: s.version.clone(),
        source: s.source.clone(),
        sha256: s.sha256.clone(),
        load_time: Some(to_timestamp(s.load_time)),
        rule_count: s.rules.len() as i32,
        warnings: s.warnings.clone(),
    }
}
