//! Domain values out to the wire.

use minqing_kit::time::to_timestamp;
use minqing_proto::minqing::supervision::v1 as pb;

use crate::{
    calendar::{DayKind, format_hhmm},
    store::calendars::Stored,
};

/// A calendar on the wire.
pub fn calendar(s: &Stored) -> pb::Calendar {
    let c = &s.calendar;
    pb::Calendar {
        name: crate::app::calendar_name(&c.city),
        display_name: c.display_name.clone(),
        utc_offset_minutes: c.utc_offset_minutes,
        working_hours: c
            .hours
            .iter()
            .map(|h| pb::WorkingSpan {
                start: format_hhmm(h.start),
                end: format_hhmm(h.end),
            })
            .collect(),
        special_days: c
            .days
            .iter()
            .map(|(date, d)| pb::SpecialDay {
                date: date.to_string(),
                kind: match d.kind {
                    DayKind::Holiday => pb::DayKind::Holiday,
                    DayKind::Workday => pb::DayKind::Workday,
                } as i32,
                description: d.description.clone(),
            })
            .collect(),
        update_time: Some(to_timestamp(s.update_time)),
        etag: etag(s.version),
    }
}

/// The etag of a version.
pub fn etag(version: i64) -> String {
    format!("v{version}")
}

fn ts(t: Option<minqing_kit::time::Micros>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

/// A clock on the wire; its history only when `history`.
pub fn clock(c: &crate::clock::Clock, history: bool) -> pb::CaseClock {
    use crate::clock::{Close, Pause};
    use minqing_proto::minqing::r#type::v1 as tpb;
    let p = &c.place;
    pb::CaseClock {
        name: format!("clocks/{}", c.case_id),
        case: format!("cases/{}", c.case_id),
        disposition: c.disposition,
        state: c.state.wire(),
        unit: c.unit.clone(),
        unit_level: c.unit_level,
        place: Some(tpb::Place {
            district: p.district.clone(),
            street: p.street.clone(),
            community: p.community.clone(),
            grid: p.grid.clone(),
            building: p.building.clone(),
            location: None,
            address: String::new(),
        }),
        category: c.category.clone(),
        calendar: if c.city.is_empty() {
            String::new()
        } else {
            crate::app::calendar_name(&c.city)
        },
        start_time: ts(c.start),
        due_time: ts(c.due),
        time_limit_working_days: c.limit_days,
        limit_minutes: c.limit_minutes,
        pause_reason: match c.pause {
            None => pb::PauseReason::Unspecified,
            Some(Pause::Papers) => pb::PauseReason::AwaitingPapers,
            Some(Pause::Approval) => pb::PauseReason::AwaitingApproval,
        } as i32,
        pause_time: ts(c.pause_time),
        warned: c.warned,
        escalations: c.escalations,
        close_reason: match c.close {
            None => pb::CloseReason::Unspecified,
            Some(Close::Resolved) => pb::CloseReason::Resolved,
            Some(Close::Referred) => pb::CloseReason::Referred,
            Some(Close::Immediate) => pb::CloseReason::Immediate,
            Some(Close::Withdrawn) => pb::CloseReason::Withdrawn,
            Some(Close::Emergency) => pb::CloseReason::EmergencyHandedOver,
        } as i32,
        close_time: ts(c.close_time),
        on_time: c.on_time,
        acceptance: c.acceptance.as_ref().map(acceptance),
        history: if history {
            c.history
                .iter()
                .map(|e| pb::ClockEntry {
                    time: Some(to_timestamp(e.time)),
                    kind: e.kind.clone(),
                    summary: e.summary.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        create_time: Some(to_timestamp(c.create_time)),
        update_time: Some(to_timestamp(c.update_time)),
        rated: c.rated,
    }
}

/// An acceptance window on the wire.
pub fn acceptance(a: &crate::clock::Acceptance) -> pb::AcceptanceWindow {
    pb::AcceptanceWindow {
        assignment: a.assignment.clone(),
        unit: a.unit.clone(),
        accept_by: Some(to_timestamp(a.accept_by)),
        accept_time: ts(a.accept_time),
        overdue: a.overdue,
        warned: a.warned,
    }
}

fn nonzero(t: minqing_kit::time::Micros) -> Option<prost_types::Timestamp> {
    (t != 0).then(|| to_timestamp(t))
}

/// A reply on the wire with its deliveries.
pub fn reply(r: &crate::replies::Reply, deliveries: &[crate::replies::Delivery]) -> pb::Reply {
    use crate::replies::DeliveryState;
    pb::Reply {
        name: format!("replies/{}", r.id),
        case: format!("cases/{}", r.case_id),
        cluster: r.cluster.clone(),
        trigger: r.trigger.wire(),
        text: r.text.clone(),
        deliveries: deliveries
            .iter()
            .map(|d| pb::Delivery {
                case: format!("cases/{}", d.case_id),
                method: d.method,
                state: d.state.wire(),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                next_attempt_time: (d.state == DeliveryState::Queued)
                    .then(|| to_timestamp(d.next_attempt_time)),
                deliver_time: nonzero(d.delivered_time),
                appointment: if d.appointment.is_empty() {
                    String::new()
                } else {
                    format!("appointments/{}", d.appointment)
                },
            })
            .collect(),
        create_time: Some(to_timestamp(r.create_time)),
    }
}

/// An appointed visit on the wire.
pub fn appointment(a: &crate::replies::Appointment, reply_id: &str, text: &str) -> pb::Appointment {
    pb::Appointment {
        name: format!("appointments/{}", a.id),
        case: format!("cases/{}", a.case_id),
        reply: format!("replies/{reply_id}"),
        grid: a.grid.clone(),
        state: if a.done {
            pb::AppointmentState::Done
        } else {
            pb::AppointmentState::Open
        } as i32,
        text: text.to_string(),
        create_time: Some(to_timestamp(a.create_time)),
        visit_time: nonzero(a.visit_time),
        visited_by: a.visited_by.clone(),
        outcome: a.outcome.clone(),
    }
}
