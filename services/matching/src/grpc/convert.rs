//! Domain values out to the wire.

use minqing_kit::time::to_timestamp;
use minqing_proto::minqing::{matching::v1 as pb, r#type::v1 as tpb};

use crate::domain::{
    Assignment, Contact, Menu, Need, Organisation, Place, Reason, Team, Volunteer,
};
use minqing_intake::domain::LatLng;

/// Whether the caller sees personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personal {
    /// Shown.
    Shown,
    /// Cleared.
    Hidden,
}

fn ts(t: Option<i64>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

/// A place on the wire; `private` clears the building and address.
pub fn place(p: &Place, address: &str, location: Option<LatLng>, private: bool) -> tpb::Place {
    tpb::Place {
        district: p.district.clone(),
        street: p.street.clone(),
        community: p.community.clone(),
        grid: p.grid.clone(),
        building: if private {
            String::new()
        } else {
            p.building.clone()
        },
        location: if private {
            None
        } else {
            location.map(|l| tpb::LatLng {
                latitude: l.latitude,
                longitude: l.longitude,
            })
        },
        address: if private {
            String::new()
        } else {
            address.to_string()
        },
    }
}

/// Contact details, or `None` when hidden.
pub fn contact(c: &Contact, personal: Personal) -> Option<tpb::Contact> {
    (personal == Personal::Shown).then(|| tpb::Contact {
        name: c.name.clone(),
        phone: c.phone.clone(),
        postal_address: c.postal_address.clone(),
        online_address: c.online_address.clone(),
        preferred_method: c.preferred_method.map_or(0, |m| m.wire()),
        needs_appointed_visit: c.needs_appointed_visit,
        visit_note: c.visit_note.clone(),
    })
}

/// A volunteer on the wire, with `stats` computed by the caller.
pub fn volunteer(
    v: &Volunteer,
    personal: Personal,
    stats: Option<pb::VolunteerStats>,
) -> pb::Volunteer {
    let p = &v.profile;
    let shown = personal == Personal::Shown;
    pb::Volunteer {
        name: v.name(),
        request_id: v.request_id.clone(),
        external_id: p.external_id.clone(),
        display_name: p.display_name.clone(),
        contact: contact(&p.contact, personal),
        home: Some(place(&p.home, &p.address, None, !shown)),
        location: if shown {
            p.location.map(|l| tpb::LatLng {
                latitude: l.latitude,
                longitude: l.longitude,
            })
        } else {
            None
        },
        skills: p
            .skills
            .iter()
            .map(|s| pb::Skill {
                skill: s.skill.clone(),
                credential: s.credential.as_ref().map(|c| pb::Credential {
                    title: c.title.clone(),
                    number: if shown {
                        c.number.clone()
                    } else {
                        String::new()
                    },
                    issuer: c.issuer.clone(),
                    expire_time: ts(c.expire_time),
                }),
            })
            .collect(),
        languages: p.languages.clone(),
        availability: Some(pb::Availability {
            weekly: p
                .availability
                .weekly
                .iter()
                .map(|w| pb::WeeklyWindow {
                    day: i32::from(w.day),
                    start_minute: i32::from(w.start),
                    end_minute: i32::from(w.end),
                })
                .collect(),
            exceptions: p
                .availability
                .exceptions
                .iter()
                .map(|x| pb::AvailabilityException {
                    start_time: Some(to_timestamp(x.start)),
                    end_time: Some(to_timestamp(x.end)),
                    available: x.available,
                    note: x.note.clone(),
                })
                .collect(),
        }),
        capacity: Some(pb::Capacity {
            weekly_minutes: p.capacity.weekly_minutes as i32,
            max_open_tasks: p.capacity.max_open_tasks as i32,
        }),
        party_member: p.party_member,
        teams: p.teams.iter().map(|t| format!("teams/{t}")).collect(),
        organisation: p
            .organisation
            .as_ref()
            .map(|o| format!("organisations/{o}"))
            .unwrap_or_default(),
        consent: Some(pb::Consent {
            data_processing: p.consent.data_processing,
            offers: p.consent.offers,
            show_name: p.consent.show_name,
            consent_time: Some(to_timestamp(p.consent.consent_time)),
        }),
        state: v.state.wire(),
        pause_until: ts(v.pause_until),
        state_reason: v.state_reason.clone(),
        stats,
        registered_by: v.registered_by.clone(),
        create_time: Some(to_timestamp(v.create_time)),
        update_time: Some(to_timestamp(v.update_time)),
        etag: format!("v{}", v.version),
        personal_data_hidden: !shown,
        contact_note: if shown {
            p.contact_note.clone()
        } else {
            String::new()
        },
    }
}

/// A team on the wire.
pub fn team(t: &Team, member_count: i64) -> pb::Team {
    pb::Team {
        name: t.name(),
        request_id: t.request_id.clone(),
        display_name: t.display_name.clone(),
        kind: t.kind.wire(),
        place: Some(place(&t.place, "", None, false)),
        leader: t
            .leader
            .as_ref()
            .map(|l| format!("volunteers/{l}"))
            .unwrap_or_default(),
        skills: t.skills.clone(),
        description: t.description.clone(),
        state: t.state.wire(),
        member_count: member_count.clamp(0, i64::from(i32::MAX)) as i32,
        create_time: Some(to_timestamp(t.create_time)),
        update_time: Some(to_timestamp(t.update_time)),
        etag: format!("v{}", t.version),
    }
}

/// An organisation on the wire.
pub fn organisation(o: &Organisation, personal: Personal) -> pb::Organisation {
    pb::Organisation {
        name: o.name(),
        request_id: o.request_id.clone(),
        display_name: o.display_name.clone(),
        kind: o.kind.wire(),
        communities: o.communities.clone(),
        contact: contact(&o.contact, personal),
        skills: o.skills.clone(),
        description: o.description.clone(),
        state: o.state.wire(),
        create_time: Some(to_timestamp(o.create_time)),
        update_time: Some(to_timestamp(o.update_time)),
        etag: format!("v{}", o.version),
    }
}

/// A need on the wire.
pub fn need(n: &Need) -> pb::Need {
    let s = &n.spec;
    pb::Need {
        name: n.name(),
        request_id: n.request_id.clone(),
        source: n.source.wire(),
        case: n.case.clone().unwrap_or_default(),
        community: s.place.community.clone(),
        place: Some(place(&s.place, &s.address, s.location, false)),
        category: s.category.clone(),
        title: s.title.clone(),
        description: s.description.clone(),
        skills: s
            .skills
            .iter()
            .map(|r| pb::SkillRequirement {
                skill: r.skill.clone(),
                credential_required: r.credential_required,
            })
            .collect(),
        languages: s.languages.clone(),
        start_time: Some(to_timestamp(s.start)),
        end_time: Some(to_timestamp(s.end)),
        effort_minutes: s.effort_minutes as i32,
        people_needed: s.people_needed as i32,
        claim_policy: s.claim_policy.wire(),
        open_to: s.open_to.iter().map(|k| k.wire()).collect(),
        party_members_only: s.party_members_only,
        state: n.state.wire(),
        menu: n
            .menu
            .as_ref()
            .map(|m| format!("menus/{m}"))
            .unwrap_or_default(),
        people_accepted: n.people_accepted as i32,
        people_pending: n.people_pending as i32,
        people_done: n.people_done as i32,
        posted_by: n.posted_by.clone(),
        create_time: Some(to_timestamp(n.create_time)),
        update_time: Some(to_timestamp(n.update_time)),
        publish_time: ts(n.publish_time),
        cancel_reason: n.cancel_reason.clone(),
        etag: format!("v{}", n.version),
        urgency: s.urgency.wire(),
    }
}

/// A menu on the wire.
pub fn menu(m: &Menu) -> pb::Menu {
    pb::Menu {
        name: format!("menus/{}", m.id),
        request_id: m.request_id.clone(),
        community: m.community.clone(),
        title: m.title.clone(),
        description: m.description.clone(),
        needs: m.needs.iter().map(|n| format!("needs/{n}")).collect(),
        published_by: m.published_by.clone(),
        publish_time: Some(to_timestamp(m.publish_time)),
    }
}

/// Score parts on the wire.
pub fn reasons(r: &[Reason]) -> Vec<pb::MatchReason> {
    r.iter()
        .map(|r| pb::MatchReason {
            kind: r.kind.wire(),
            value: r.value,
            weight: r.weight,
            summary: r.summary.clone(),
        })
        .collect()
}

/// An assignment on the wire.
pub fn assignment(a: &Assignment) -> pb::Assignment {
    pb::Assignment {
        name: a.name(),
        need: format!("needs/{}", a.need_id),
        case: a.case.clone().unwrap_or_default(),
        community: a.place.community.clone(),
        place: Some(place(&a.place, "", None, false)),
        need_title: a.need_title.clone(),
        start_time: Some(to_timestamp(a.start)),
        end_time: Some(to_timestamp(a.end)),
        assignee_kind: a.assignee.kind.wire(),
        assignee: a.assignee.name(),
        assignee_display_name: a.assignee_display_name.clone(),
        team: a
            .team
            .as_ref()
            .map(|t| format!("teams/{t}"))
            .unwrap_or_default(),
        organisation: a
            .organisation
            .as_ref()
            .map(|o| format!("organisations/{o}"))
            .unwrap_or_default(),
        origin: a.origin.wire(),
        state: a.state.wire(),
        people: a.people as i32,
        effort_minutes: a.effort_minutes as i32,
        score: a.score,
        reasons: reasons(&a.reasons),
        previous: a
            .previous
            .as_ref()
            .map(|p| format!("assignments/{p}"))
            .unwrap_or_default(),
        note: a.note.clone(),
        created_by: a.created_by.clone(),
        offer_expire_time: ts(a.offer_expire_time),
        create_time: Some(to_timestamp(a.create_time)),
        respond_time: ts(a.respond_time),
        complete_time: ts(a.complete_time),
        minutes: a.minutes as i32,
        participants: a.participants as i32,
        completion_note: a.completion_note.clone(),
        rating: a.rating.as_ref().map(|r| pb::Rating {
            satisfaction: r.satisfaction.wire(),
            comment: r.comment.clone(),
            channel: r.channel.wire(),
            rated_by: r.rated_by.clone(),
            rate_time: Some(to_timestamp(r.rate_time)),
        }),
        end_reason: a.end_reason.clone(),
        update_time: Some(to_timestamp(a.update_time)),
        etag: format!("v{}", a.version),
    }
}
