//! Requests in, domain values out: every field checked, every problem reported at once as a
//! field violation (INVALID_ARGUMENT).

use chrono::NaiveDate;

use minqing_kit::{
    error::FieldViolations,
    time::{Micros, from_timestamp},
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

/// An id: 1 to 64 of ASCII letters, digits, '-', '_' and '.'.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The id in `"{prefix}/{id}"`; records a violation otherwise.
pub fn name(v: &mut FieldViolations, field: &str, prefix: &str, value: &str) -> Option<String> {
    match value.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
        Some(id) if valid_id(id) => Some(id.to_string()),
        _ if value.is_empty() => {
            v.add(field, "required");
            None
        }
        _ => {
            v.add(field, format!("must be \"{prefix}/{{id}}\""));
            None
        }
    }
}

/// A city code in "calendars/{city}".
pub fn calendar_name(v: &mut FieldViolations, field: &str, value: &str) -> Option<String> {
    let city = name(v, field, "calendars", value)?;
    if city.len() > 12 || !city.bytes().all(|b| b.is_ascii_digit()) {
        v.add(field, "the city code must be 1 to 12 digits");
        return None;
    }
    Some(city)
}

/// A local date "YYYY-MM-DD" between 2000 and 2100.
pub fn date(v: &mut FieldViolations, field: &str, value: &str) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(d) if (2000..=2100).contains(&chrono::Datelike::year(&d)) && value.len() == 10 => {
            Some(d)
        }
        Ok(_) => {
            v.add(field, "must be a date from 2000 to 2100");
            None
        }
        Err(_) if value.is_empty() => {
            v.add(field, "required");
            None
        }
        Err(_) => {
            v.add(field, "must be a date \"YYYY-MM-DD\"");
            None
        }
    }
}

/// A required timestamp.
pub fn time(
    v: &mut FieldViolations,
    field: &str,
    value: &Option<prost_types::Timestamp>,
) -> Option<Micros> {
    match value {
        None => {
            v.add(field, "required");
            None
        }
        Some(ts) => optional_time(v, field, &Some(*ts)),
    }
}

/// An optional timestamp: `None` when unset, a violation when malformed.
pub fn optional_time(
    v: &mut FieldViolations,
    field: &str,
    value: &Option<prost_types::Timestamp>,
) -> Option<Micros> {
    let ts = value.as_ref()?;
    let t = from_timestamp(ts);
    v.check(t.is_none(), field, "must be a valid timestamp");
    t
}
