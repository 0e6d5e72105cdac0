//! The public service catalogue (fixed disclosure, 固定公示): modes, sub-classes and items
//! with everything a resident must be told. Loaded from a TOML file at start-up; the built-in
//! sample is the grid service list of DOMAIN.md (3 modes, 7 sub-classes, 54 items).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::domain::Disposition;

/// The sample catalogue shipped with Minqing.
pub const SAMPLE: &str = include_str!("../data/catalogue.toml");

/// A mode: on-site, errand or online.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    /// `onsite`, `errand` or `online`.
    pub id: String,
    /// Chinese name.
    pub name: String,
    /// English name.
    pub name_en: String,
    /// What it means.
    pub description: String,
}

/// A sub-class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subclass {
    /// Its id.
    pub id: String,
    /// Its mode.
    pub mode: String,
    /// Chinese name.
    pub name: String,
    /// English name.
    pub name_en: String,
}

/// One catalogue item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Its id.
    pub id: String,
    /// Its sub-class.
    pub subclass: String,
    /// Chinese name.
    pub name: String,
    /// English name.
    pub name_en: String,
    /// What it covers.
    pub description: String,
    /// The steps.
    pub procedure: Vec<String>,
    /// Legal basis.
    pub legal_basis: String,
    /// Service standard.
    pub service_standard: String,
    /// Time limit in working days; 0 for on the spot.
    pub time_limit_working_days: u32,
    /// Fees.
    pub fees: String,
    /// Papers to bring.
    pub required_documents: Vec<String>,
    /// Responsible unit.
    pub responsible_unit: String,
    /// Responsible post.
    pub responsible_role: String,
    /// Usual disposition.
    pub default_disposition: Disposition,
    /// Whether volunteers can help.
    pub volunteer_suitable: bool,
    /// Words residents use.
    pub keywords: Vec<String>,
    /// The item's mode (from its sub-class), filled in at load.
    #[serde(skip)]
    pub mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: String,
    #[serde(rename = "mode")]
    modes: Vec<Mode>,
    #[serde(rename = "subclass")]
    subclasses: Vec<Subclass>,
    #[serde(rename = "item")]
    items: Vec<Item>,
}

/// The loaded catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Edition.
    pub version: String,
    /// Modes in file order.
    pub modes: Vec<Mode>,
    /// Sub-classes in file order.
    pub subclasses: Vec<Subclass>,
    /// Items in file order.
    pub items: Vec<Item>,
    by_id: HashMap<String, usize>,
}

impl Catalogue {
    /// Parses and checks a catalogue: ids unique, every reference resolves.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("catalogue: {e}"))?;
        let mut modes = HashSet::new();
        for m in &file.modes {
            if !modes.insert(m.id.as_str()) {
                return Err(format!("catalogue: mode {} is defined twice", m.id));
            }
        }
        let mut subclass_mode = HashMap::new();
        for s in &file.subclasses {
            if !modes.contains(s.mode.as_str()) {
                return Err(format!(
                    "catalogue: sub-class {} names unknown mode {}",
                    s.id, s.mode
                ));
            }
            if subclass_mode.insert(s.id.clone(), s.mode.clone()).is_some() {
                return Err(format!("catalogue: sub-class {} is defined twice", s.id));
            }
        }
        let mut items = file.items;
        let mut by_id = HashMap::new();
        for (i, item) in items.iter_mut().enumerate() {
            let Some(mode) = subclass_mode.get(&item.subclass) else {
                return Err(format!(
                    "catalogue: item {} names unknown sub-class {}",
                    item.id, item.subclass
                ));
            };
            item.mode = mode.clone();
            if item.time_limit_working_days > 365 {
                return Err(format!(
                    "catalogue: item {} has a time limit over 365 days",
                    item.id
                ));
            }
            if item.id.is_empty() || by_id.insert(item.id.clone(), i).is_some() {
                return Err(format!(
                    "catalogue: item id {:?} is empty or defined twice",
                    item.id
                ));
            }
        }
        if items.is_empty() {
            return Err("catalogue: no items".into());
        }
        Ok(Self {
            version: file.version,
            modes: file.modes,
            subclasses: file.subclasses,
            items,
            by_id,
        })
    }

    /// The sample catalogue.
    pub fn sample() -> Self {
        Self::parse(SAMPLE).expect("the sample catalogue is valid")
    }

    /// One item.
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.by_id.get(id).map(|&i| &self.items[i])
    }

    /// The position of an item (catalogue order), for paging.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

impl Item {
    /// Whether `query` (already lower-cased) appears in its names, description or keywords.
    pub fn matches(&self, query: &str) -> bool {
        let has = |s: &str| s.to_lowercase().contains(query);
        has(&self.name)
            || has(&self.name_en)
            || has(&self.description)
            || self.keywords.iter().any(|k| has(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_has_three_modes_seven_subclasses_54_items() {
        let c = Catalogue::sample();
        assert_eq!(c.modes.len(), 3);
        assert_eq!(c.subclasses.len(), 7);
        assert_eq!(c.items.len(), 54);
        let modes: HashSet<_> = c.items.iter().map(|i| i.mode.as_str()).collect();
        assert_eq!(modes, HashSet::from(["onsite", "errand", "online"]));
        assert!(c.item("onsite-care-01").unwrap().volunteer_suitable);
    }

    #[test]
    fn broken_catalogues_are_refused() {
        let base = r#"
version = "x"
[[mode]]
id = "onsite"
name = "a"
name_en = "a"
description = "a"
[[subclass]]
id = "s"
mode = "onsite"
name = "a"
name_en = "a"
"#;
        let item = |id: &str, sub: &str| {
            format!(
                r#"
[[item]]
id = "{id}"
subclass = "{sub}"
name = "n"
name_en = "n"
description = "d"
procedure = []
legal_basis = ""
service_standard = ""
time_limit_working_days = 1
fees = ""
required_documents = []
responsible_unit = ""
responsible_role = ""
default_disposition = "committed"
volunteer_suitable = false
keywords = []
"#
            )
        };
        assert!(Catalogue::parse(&format!("{base}{}", item("a", "s"))).is_ok());
        let dup = format!("{base}{}{}", item("a", "s"), item("a", "s"));
        assert!(Catalogue::parse(&dup).unwrap_err().contains("twice"));
        let dangling = format!("{base}{}", item("a", "nope"));
        assert!(
            Catalogue::parse(&dangling)
                .unwrap_err()
                .contains("unknown sub-class")
        );
        assert!(Catalogue::parse("not toml [").is_err());
    }
}
