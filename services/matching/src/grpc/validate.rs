//! Requests in, domain values out: every field checked, every problem reported at once as a
//! field violation (INVALID_ARGUMENT).

use minqing_intake::{
    domain::{LatLng, Place},
    places::{Gazetteer, PlaceInput},
};
use minqing_kit::{error::FieldViolations, time::Micros, time::from_timestamp};
use minqing_proto::minqing::r#type::v1 as tpb;

use crate::domain::{Assignee, Contact, ContactMethod, is_code};

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

/// The id in `{collection}/{uuid}`, recording a violation otherwise.
pub fn name(v: &mut FieldViolations, field: &str, value: &str, collection: &str) -> Option<String> {
    let id = value
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'));
    match id.filter(|id| uuid::Uuid::parse_str(id).is_ok()) {
        Some(id) => Some(id.to_string()),
        None => {
            v.add(field, format!("must be {collection}/{{id}}"));
            None
        }
    }
}

/// An assignee name.
pub fn assignee(v: &mut FieldViolations, field: &str, value: &str) -> Option<Assignee> {
    let a = Assignee::parse(value);
    if a.is_none() {
        v.add(
            field,
            "must be volunteers/{id}, teams/{id} or organisations/{id}",
        );
    }
    a
}

/// Skill or language codes: each a code, no duplicates, at most `max`.
pub fn codes(v: &mut FieldViolations, field: &str, values: &[String], max: usize) -> Vec<String> {
    v.check(values.len() > max, field, format!("at most {max}"));
    let mut out: Vec<String> = Vec::new();
    for (i, c) in values.iter().enumerate() {
        let c = c.trim();
        if !is_code(c) {
            v.add(
                format!("{field}[{i}]"),
                "must be 1 to 40 of a-z, 0-9 and '-'",
            );
        } else if out.iter().any(|o| o == c) {
            v.add(format!("{field}[{i}]"), "listed twice");
        } else {
            out.push(c.to_string());
        }
    }
    out
}

/// A timestamp, required or optional.
pub fn time(
    v: &mut FieldViolations,
    field: &str,
    ts: &Option<prost_types::Timestamp>,
    required: bool,
) -> Option<Micros> {
    match ts {
        Some(ts) => {
            let t = from_timestamp(ts);
            if t.is_none() {
                v.add(field, "not a valid timestamp");
            }
            t
        }
        None => {
            v.check(required, field, "required");
            None
        }
    }
}

/// Coordinates.
pub fn location(v: &mut FieldViolations, field: &str, l: &Option<tpb::LatLng>) -> Option<LatLng> {
    let l = l.as_ref()?;
    let ok = l.latitude.is_finite()
        && l.longitude.is_finite()
        && l.latitude.abs() <= 90.0
        && l.longitude.abs() <= 180.0
        && !(l.latitude == 0.0 && l.longitude == 0.0);
    v.check(
        !ok,
        field,
        "latitude -90 to 90 and longitude -180 to 180 (not 0,0)",
    );
    ok.then_some(LatLng {
        latitude: l.latitude,
        longitude: l.longitude,
    })
}

/// A place resolved against the gazetteer, at least down to a community.
pub fn place(
    v: &mut FieldViolations,
    field: &str,
    gazetteer: &Gazetteer,
    p: &Option<tpb::Place>,
) -> Option<Place> {
    let Some(p) = p else {
        v.add(field, "required");
        return None;
    };
    let input = PlaceInput {
        district: p.district.trim().to_string(),
        street: p.street.trim().to_string(),
        community: p.community.trim().to_string(),
        grid: p.grid.trim().to_string(),
        building: p.building.trim().to_string(),
    };
    let resolved = gazetteer.resolve(&input, v, field)?;
    if resolved.community.is_empty() {
        v.add(
            format!("{field}.community"),
            "give at least a community (or a grid or building in it)",
        );
        return None;
    }
    Some(resolved)
}

/// A community code.
pub fn community(
    v: &mut FieldViolations,
    field: &str,
    gazetteer: &Gazetteer,
    code: &str,
) -> Option<Place> {
    match gazetteer.get(code) {
        Some(e) if e.level == minqing_intake::domain::Level::Community => {
            let mut w = FieldViolations::new();
            let place = gazetteer.resolve(
                &PlaceInput {
                    community: code.to_string(),
                    ..Default::default()
                },
                &mut w,
                field,
            );
            if place.is_none() {
                v.add(field, format!("unknown community {code}"));
            }
            place
        }
        _ => {
            v.add(field, format!("{code:?} is not a community code"));
            None
        }
    }
}

/// Contact details: with `required`, a name and a phone.
pub fn contact(
    v: &mut FieldViolations,
    field: &str,
    c: &Option<tpb::Contact>,
    required: bool,
) -> Contact {
    let Some(c) = c else {
        v.check(required, field, "required");
        return Contact::default();
    };
    let name = text(
        v,
        &format!("{field}.name"),
        &c.name,
        usize::from(required),
        100,
        false,
    );
    let phone = c.phone.trim().to_string();
    let digits = phone.strip_prefix('+').unwrap_or(&phone);
    let phone_ok = (5..=20).contains(&phone.len())
        && digits
            .chars()
            .all(|ch| ch.is_ascii_digit() || ch == '-' || ch == ' ');
    if required || !phone.is_empty() {
        v.check(
            !phone_ok,
            format!("{field}.phone"),
            "must be 5 to 20 digits, spaces or '-', with an optional leading '+'",
        );
    }
    let preferred = match c.preferred_method {
        0 => None,
        m => {
            let method = ContactMethod::from_wire(m);
            v.check(
                method.is_none(),
                format!("{field}.preferred_method"),
                "unknown method",
            );
            method
        }
    };
    Contact {
        name,
        phone,
        postal_address: text(
            v,
            &format!("{field}.postal_address"),
            &c.postal_address,
            0,
            500,
            false,
        ),
        online_address: text(
            v,
            &format!("{field}.online_address"),
            &c.online_address,
            0,
            200,
            false,
        ),
        preferred_method: preferred,
        needs_appointed_visit: c.needs_appointed_visit,
        visit_note: text(
            v,
            &format!("{field}.visit_note"),
            &c.visit_note,
            0,
            500,
            false,
        ),
    }
}

/// Page size within `1..=max`, 0 meaning `default`.
pub fn page_size(v: &mut FieldViolations, size: i32, default: i64, max: i64) -> i64 {
    v.check(
        !(0..=max).contains(&i64::from(size)),
        "page_size",
        format!("must be 0 to {max}"),
    );
    if size <= 0 {
        default
    } else {
        i64::from(size).min(max)
    }
}
