//! Unit files for bulk import: TOML (`[[unit]]` tables, as `data/units.toml`) or CSV (one
//! unit a row, as `data/units.csv`). Parsing checks the shape only; the service checks the
//! content (places in the gazetteer, categories in the catalogue) when the units are sent.
//!
//! CSV columns (a header row names them; order is free, only `id`, `kind`, `display_name`
//! and `places` are required): `id, kind, display_name, display_name_en, places, categories,
//! emergency_line, acceptance_window_minutes, needs_reporter_contact, active, working_hours,
//! contact_role, contact_name, contact_phone, description`. Lists are separated by `;`;
//! `working_hours` is e.g. `mon-fri 08:30-17:30; sat 09:00-12:00`.

use serde::Deserialize;

use crate::{
    domain::{EmergencyLine, Unit, UnitContact, UnitKind, Weekday, WorkingHours},
    workdays::parse_hhmm,
};

/// The sample units of the sample city.
pub const SAMPLE_UNITS: &str = include_str!("../data/units.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default, rename = "unit")]
    units: Vec<TomlUnit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlUnit {
    id: String,
    kind: String,
    display_name: String,
    #[serde(default)]
    display_name_en: String,
    #[serde(default)]
    places: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    emergency_line: Option<String>,
    #[serde(default)]
    acceptance_window_minutes: u32,
    #[serde(default)]
    needs_reporter_contact: bool,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    description: String,
    #[serde(default)]
    working_hours: Vec<TomlHours>,
    #[serde(default)]
    contacts: Vec<TomlContact>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlHours {
    #[serde(default)]
    days: Vec<String>,
    open: String,
    close: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlContact {
    #[serde(default)]
    role: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    online_address: String,
}

fn blank(id: String, kind: UnitKind, display_name: String) -> Unit {
    Unit {
        id,
        kind,
        display_name,
        display_name_en: String::new(),
        places: Vec::new(),
        categories: Vec::new(),
        emergency_line: None,
        working_hours: Vec::new(),
        contacts: Vec::new(),
        acceptance_window_minutes: 0,
        needs_reporter_contact: false,
        active: true,
        description: String::new(),
        create_time: 0,
        update_time: 0,
        version: 0,
    }
}

fn kind(at: &str, text: &str) -> Result<UnitKind, String> {
    UnitKind::from_slug(text.trim()).ok_or_else(|| format!("{at}: unknown kind {text:?}"))
}

fn line(at: &str, text: &str) -> Result<Option<EmergencyLine>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    EmergencyLine::from_slug(text.trim())
        .map(Some)
        .ok_or_else(|| format!("{at}: unknown emergency_line {text:?}"))
}

fn days(at: &str, list: &[String]) -> Result<Vec<Weekday>, String> {
    list.iter()
        .map(|d| Weekday::from_slug(d.trim()).ok_or_else(|| format!("{at}: unknown day {d:?}")))
        .collect()
}

fn hhmm(at: &str, text: &str) -> Result<u32, String> {
    parse_hhmm(text).ok_or_else(|| format!("{at}: {text:?} is not HH:MM"))
}

/// Parses a TOML units file.
pub fn parse_toml(text: &str) -> Result<Vec<Unit>, String> {
    let file: TomlFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.units
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let at = format!("unit #{} ({})", i + 1, u.id);
            let mut unit = blank(u.id, kind(&at, &u.kind)?, u.display_name);
            unit.display_name_en = u.display_name_en;
            unit.places = u.places;
            unit.categories = u.categories;
            unit.emergency_line = line(&at, u.emergency_line.as_deref().unwrap_or(""))?;
            unit.acceptance_window_minutes = u.acceptance_window_minutes;
            unit.needs_reporter_contact = u.needs_reporter_contact;
            unit.active = u.active;
            unit.description = u.description;
            for h in u.working_hours {
                unit.working_hours.push(WorkingHours {
                    days: days(&at, &h.days)?,
                    open: hhmm(&at, &h.open)?,
                    close: hhmm(&at, &h.close)?,
                });
            }
            unit.contacts = u
                .contacts
                .into_iter()
                .map(|c| UnitContact {
                    role: c.role,
                    name: c.name,
                    phone: c.phone,
                    online_address: c.online_address,
                })
                .collect();
            Ok(unit)
        })
        .collect()
}

fn list(text: &str) -> Vec<String> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn day_range(at: &str, text: &str) -> Result<Vec<Weekday>, String> {
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (day_range(at, a)?, day_range(at, b)?);
            let (a, b) = (a[0].wire(), b[0].wire());
            if a > b {
                return Err(format!("{at}: day range {text:?} runs backwards"));
            }
            Ok((a..=b).filter_map(Weekday::from_wire).collect())
        }
        None => Ok(vec![
            Weekday::from_slug(text.trim()).ok_or_else(|| format!("{at}: unknown day {text:?}"))?,
        ]),
    }
}

/// Parses `mon-fri 08:30-17:30; sat 09:00-12:00` (days optional: every day).
fn hours(at: &str, text: &str) -> Result<Vec<WorkingHours>, String> {
    list(text)
        .iter()
        .map(|part| {
            let (days, window) = match part.rsplit_once(' ') {
                Some((d, w)) => (day_range(at, d.trim())?, w),
                None => (Vec::new(), part.as_str()),
            };
            let (open, close) = window
                .split_once('-')
                .ok_or_else(|| format!("{at}: working hours {part:?} need HH:MM-HH:MM"))?;
            Ok(WorkingHours {
                days,
                open: hhmm(at, open)?,
                close: hhmm(at, close)?,
            })
        })
        .collect()
}

fn flag(at: &str, column: &str, text: &str, default: bool) -> Result<bool, String> {
    match text.trim().to_lowercase().as_str() {
        "" => Ok(default),
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        other => Err(format!("{at}: {column}: {other:?} is not true or false")),
    }
}

/// Parses a CSV units file.
pub fn parse_csv(text: &str) -> Result<Vec<Unit>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let known = [
        "id",
        "kind",
        "display_name",
        "display_name_en",
        "places",
        "categories",
        "emergency_line",
        "acceptance_window_minutes",
        "needs_reporter_contact",
        "active",
        "working_hours",
        "contact_role",
        "contact_name",
        "contact_phone",
        "description",
    ];
    for h in headers.iter() {
        if !known.contains(&h) {
            return Err(format!(
                "unknown column {h:?}; columns are {}",
                known.join(", ")
            ));
        }
    }
    for required in ["id", "kind", "display_name", "places"] {
        if !headers.iter().any(|h| h == required) {
            return Err(format!("the column {required:?} is required"));
        }
    }
    let mut units = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", i + 2))?;
        let get = |name: &str| -> &str {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|p| record.get(p))
                .unwrap_or("")
        };
        let at = format!("row {} ({})", i + 2, get("id"));
        let mut unit = blank(
            get("id").to_string(),
            kind(&at, get("kind"))?,
            get("display_name").to_string(),
        );
        unit.display_name_en = get("display_name_en").to_string();
        unit.places = list(get("places"));
        unit.categories = list(get("categories"));
        unit.emergency_line = line(&at, get("emergency_line"))?;
        let window = get("acceptance_window_minutes");
        unit.acceptance_window_minutes = if window.is_empty() {
            0
        } else {
            window.parse().map_err(|_| {
                format!("{at}: acceptance_window_minutes {window:?} is not a number")
            })?
        };
        unit.needs_reporter_contact = flag(
            &at,
            "needs_reporter_contact",
            get("needs_reporter_contact"),
            false,
        )?;
        unit.active = flag(&at, "active", get("active"), true)?;
        unit.working_hours = hours(&at, get("working_hours"))?;
        let contact = UnitContact {
            role: get("contact_role").to_string(),
            name: get("contact_name").to_string(),
            phone: get("contact_phone").to_string(),
            online_address: String::new(),
        };
        if contact != UnitContact::default() {
            unit.contacts.push(contact);
        }
        unit.description = get("description").to_string();
        units.push(unit);
    }
    Ok(units)
}

/// Parses a units file by its name: `.csv` as CSV, anything else as TOML.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<Unit>, String> {
    if name.to_lowercase().ends_with(".csv") {
        parse_csv(text)
    } else {
        parse_toml(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_files_parse() {
        let units = parse_toml(SAMPLE_UNITS).unwrap();
        assert!(units.len() >= 50, "{}", units.len());
        assert!(
            units
                .iter()
                .any(|u| u.emergency_line == Some(EmergencyLine::Fire))
        );
        let csv = parse_csv(include_str!("../data/units.csv")).unwrap();
        assert!(!csv.is_empty());
    }

    #[test]
    fn csv_lists_hours_and_flags() {
        let text = "id,kind,display_name,places,categories,working_hours,needs_reporter_contact\n\
                    clinic-a,clinic,A,620102001;620102002,onsite-care-02,mon-fri 08:00-18:00; sat 09:00-12:00,yes\n";
        let units = parse_csv(text).unwrap();
        let u = &units[0];
        assert_eq!(u.places, ["620102001", "620102002"]);
        assert_eq!(u.working_hours.len(), 2);
        assert_eq!(u.working_hours[0].days.len(), 5);
        assert_eq!(u.working_hours[1].open, 9 * 60);
        assert!(u.needs_reporter_contact && u.active);
        assert!(parse_csv("id,kind,display_name,places,colour\n").is_err());
        assert!(
            parse_csv("id,kind,display_name,places\nx,spaceship,X,1\n")
                .unwrap_err()
                .contains("unknown kind")
        );
    }
}
