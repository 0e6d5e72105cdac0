//! Requests in, domain values out: every field checked, every problem reported at once as a
//! field violation (INVALID_ARGUMENT).

use minqing_kit::error::FieldViolations;
use minqing_proto::minqing::{routing::v1 as pb, r#type::v1 as tpb};

use crate::{
    domain::{Attachment, EmergencyLine, Unit, UnitContact, UnitKind, Weekday, WorkingHours},
    knowledge::Knowledge,
    rules::valid_id,
    workdays::parse_hhmm,
};

/// Checks a free text: `min..=max` characters, no control characters (newlines and tabs
/// allowed where `multiline`). Returns it trimmed.
pub fn text(
    v: &mut FieldViolations,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> String {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min || len > max {
        if min > 0 && len == 0 {
            v.add(field, "required");
        } else {
            v.add(
                field,
                format!("must be {min} to {max} characters (is {len})"),
            );
        }
    }
    let bad = trimmed
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')));
    v.check(bad, field, "must not contain control characters");
    trimmed.to_string()
}

/// Checks a request id: 1 to 128 printable ASCII characters.
pub fn request_id(v: &mut FieldViolations, field: &str, value: &str) {
    v.check(
        value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()),
        field,
        "must be 1 to 128 printable ASCII characters without spaces",
    );
}

/// The id in `"{prefix}/{id}"`, with `id` a valid id; records a violation otherwise.
pub fn name(v: &mut FieldViolations, field: &str, prefix: &str, value: &str) -> Option<String> {
    match value.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
        Some(id) if valid_id(id) => Some(id.to_string()),
        _ if value.is_empty() => {
            v.add(field, "required");
            None
        }
        _ => {
            v.add(
                field,
                format!("must be \"{prefix}/{{id}}\" (a-z, 0-9, '-')"),
            );
            None
        }
    }
}

/// The id in `"{prefix}/{uuid}"` (cases, assignments, sessions, suggestions).
pub fn uuid_name(
    v: &mut FieldViolations,
    field: &str,
    prefix: &str,
    value: &str,
) -> Option<String> {
    match value.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
        Some(id) if uuid::Uuid::parse_str(id).is_ok() => Some(id.to_string()),
        _ if value.is_empty() => {
            v.add(field, "required");
            None
        }
        _ => {
            v.add(field, format!("must be \"{prefix}/{{uuid}}\""));
            None
        }
    }
}

/// Attachments: up to 20, each with an https://, s3:// or sha256: address.
pub fn attachments(
    v: &mut FieldViolations,
    field: &str,
    items: &[tpb::Attachment],
) -> Vec<Attachment> {
    v.check(items.len() > 20, field, "at most 20 attachments");
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at = format!("{field}[{i}]");
            let uri = a.uri.trim();
            let ok = (uri.starts_with("https://") || uri.starts_with("s3://") || uri.starts_with("sha256:"))
                && uri.len() <= 2000
                && !uri.chars().any(char::is_whitespace);
            v.check(!ok, format!("{at}.uri"), "must be an https://, s3:// or sha256: address without spaces, up to 2000 characters");
            Attachment {
                uri: uri.to_string(),
                media_type: text(v, &format!("{at}.media_type"), &a.media_type, 0, 100, false),
                description: text(v, &format!("{at}.description"), &a.description, 0, 200, false),
            }
        })
        .collect()
}

/// A unit from the wire, checked against the catalogue and gazetteer.
pub fn unit(v: &mut FieldViolations, at: &str, u: &pb::Unit, k: &Knowledge) -> Option<Unit> {
    let f = |name: &str| format!("{at}{name}");
    let id = name(v, &f("name"), "units", &u.name);
    let kind = UnitKind::from_wire(u.kind);
    v.check(kind.is_none(), f("kind"), "required: a unit kind");
    let display_name = text(v, &f("display_name"), &u.display_name, 1, 200, false);
    let display_name_en = text(v, &f("display_name_en"), &u.display_name_en, 0, 200, false);
    v.check(u.places.is_empty(), f("places"), "at least one place code");
    v.check(u.places.len() > 500, f("places"), "at most 500 place codes");
    for (i, p) in u.places.iter().enumerate() {
        v.check(
            !k.knows_place(p),
            format!("{at}places[{i}]"),
            format!(
                "unknown place code {p:?} (a gazetteer code, or the city {})",
                k.city
            ),
        );
    }
    v.check(
        u.categories.len() > 500,
        f("categories"),
        "at most 500 categories",
    );
    for (i, c) in u.categories.iter().enumerate() {
        v.check(
            !k.items.contains_key(c),
            format!("{at}categories[{i}]"),
            format!("unknown catalogue item {c:?}"),
        );
    }
    let line = match u.emergency_line {
        0 => None,
        n => {
            let l = EmergencyLine::from_wire(n);
            v.check(l.is_none(), f("emergency_line"), "unknown emergency line");
            l
        }
    };
    match (kind, line) {
        (Some(UnitKind::EmergencyLine), None) => {
            v.add(f("emergency_line"), "required for an emergency line")
        }
        (Some(k), Some(_)) if k != UnitKind::EmergencyLine => {
            v.add(f("emergency_line"), "only emergency lines have one")
        }
        _ => {}
    }
    v.check(
        u.working_hours.len() > 20,
        f("working_hours"),
        "at most 20 entries",
    );
    let mut hours = Vec::new();
    for (i, h) in u.working_hours.iter().enumerate() {
        let at = format!("{at}working_hours[{i}]");
        let days: Vec<Weekday> = h
            .days
            .iter()
            .filter_map(|d| Weekday::from_wire(*d))
            .collect();
        v.check(
            days.len() != h.days.len(),
            format!("{at}.days"),
            "unknown day",
        );
        let open = parse_hhmm(&h.open);
        let close = parse_hhmm(&h.close);
        v.check(open.is_none(), format!("{at}.open"), "must be HH:MM");
        v.check(close.is_none(), format!("{at}.close"), "must be HH:MM");
        v.check(
            open.is_some() && open == close,
            format!("{at}.close"),
            "must differ from open",
        );
        if let (Some(open), Some(close)) = (open, close) {
            hours.push(WorkingHours { days, open, close });
        }
    }
    v.check(u.contacts.len() > 20, f("contacts"), "at most 20 contacts");
    let contacts = u
        .contacts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("{at}contacts[{i}]");
            UnitContact {
                role: text(v, &format!("{at}.role"), &c.role, 0, 100, false),
                name: text(v, &format!("{at}.name"), &c.name, 0, 100, false),
                phone: text(v, &format!("{at}.phone"), &c.phone, 0, 30, false),
                online_address: text(
                    v,
                    &format!("{at}.online_address"),
                    &c.online_address,
                    0,
                    200,
                    false,
                ),
            }
        })
        .collect();
    v.check(
        !(0..=10_080).contains(&u.acceptance_window_minutes),
        f("acceptance_window_minutes"),
        "must be 0 to 10080",
    );
    let description = text(v, &f("description"), &u.description, 0, 2000, true);
    Some(Unit {
        id: id?,
        kind: kind?,
        display_name,
        display_name_en,
        places: u.places.iter().map(|p| p.trim().to_string()).collect(),
        categories: u.categories.clone(),
        emergency_line: line,
        working_hours: hours,
        contacts,
        acceptance_window_minutes: u.acceptance_window_minutes.max(0) as u32,
        needs_reporter_contact: u.needs_reporter_contact,
        active: u.active,
        description,
        create_time: 0,
        update_time: 0,
        version: 0,
    })
}

/// Page size: 0 gives `default`, else 1 to `max`.
pub fn page_size(v: &mut FieldViolations, value: i32, default: i64, max: i32) -> i64 {
    v.check(
        !(0..=max).contains(&value),
        "page_size",
        format!("must be 0 to {max}"),
    );
    if value <= 0 {
        default
    } else {
        i64::from(value)
    }
}
