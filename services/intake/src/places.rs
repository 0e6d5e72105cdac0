//! The gazetteer: the administrative ladder (district → street → community → grid →
//! building) of one city, loaded from a TOML file at start-up. A case's place is checked
//! against it and completed upward, so a grid or building code alone is enough.

use std::collections::HashMap;

use serde::Deserialize;

use crate::domain::{Level, Place};
use minqing_kit::error::FieldViolations;

/// The sample gazetteer shipped with Minqing (Lanzhou).
pub const SAMPLE: &str = include_str!("../data/places.toml");

/// The city at the top of the ladder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct City {
    /// Its code.
    pub code: String,
    /// Chinese name.
    pub name: String,
    /// English name.
    pub name_en: String,
}

/// One place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its code, unique across all levels.
    pub code: String,
    /// Its level.
    pub level: Level,
    /// Its parent's code (the city's for districts).
    pub parent: String,
    /// Chinese name.
    pub name: String,
    /// English name.
    pub name_en: String,
    /// Latitude.
    pub latitude: Option<f64>,
    /// Longitude.
    pub longitude: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    city: City,
    #[serde(rename = "place")]
    places: Vec<Entry>,
}

/// The loaded gazetteer.
#[derive(Debug, Clone)]
pub struct Gazetteer {
    /// The city.
    pub city: City,
    /// Places sorted by code.
    pub places: Vec<Entry>,
    by_code: HashMap<String, usize>,
}

/// Where a case is, as the caller gave it.
#[derive(Debug, Clone, Default)]
pub struct PlaceInput {
    /// Codes by level (empty when not given).
    pub district: String,
    /// Street code.
    pub street: String,
    /// Community code.
    pub community: String,
    /// Grid code.
    pub grid: String,
    /// Building code.
    pub building: String,
}

impl Gazetteer {
    /// Parses and checks a gazetteer: codes unique, parents exist one level up.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("gazetteer: {e}"))?;
        let mut places = file.places;
        places.sort_by(|a, b| a.code.cmp(&b.code));
        let mut by_code = HashMap::new();
        for (i, p) in places.iter().enumerate() {
            if p.code.is_empty()
                || p.code == file.city.code
                || by_code.insert(p.code.clone(), i).is_some()
            {
                return Err(format!(
                    "gazetteer: code {:?} is empty or used twice",
                    p.code
                ));
            }
            let coordinates_ok = match (p.latitude, p.longitude) {
                (None, None) => true,
                (Some(lat), Some(lng)) => {
                    lat.is_finite() && lng.is_finite() && lat.abs() <= 90.0 && lng.abs() <= 180.0
                }
                _ => false,
            };
            if !coordinates_ok {
                return Err(format!("gazetteer: {} has invalid coordinates", p.code));
            }
        }
        for p in &places {
            let parent_ok = match p.level {
                Level::District => p.parent == file.city.code,
                level => by_code
                    .get(&p.parent)
                    .is_some_and(|&i| Some(places[i].level) == level.parent()),
            };
            if !parent_ok {
                return Err(format!(
                    "gazetteer: {} ({:?}) names parent {} which is not one level up",
                    p.code, p.level, p.parent
                ));
            }
        }
        Ok(Self {
            city: file.city,
            places,
            by_code,
        })
    }

    /// The sample gazetteer.
    pub fn sample() -> Self {
        Self::parse(SAMPLE).expect("the sample gazetteer is valid")
    }

    /// One place.
    pub fn get(&self, code: &str) -> Option<&Entry> {
        self.by_code.get(code).map(|&i| &self.places[i])
    }

    /// Checks `input` and completes it upward; records every problem under `prefix`.
    pub fn resolve(
        &self,
        input: &PlaceInput,
        v: &mut FieldViolations,
        prefix: &str,
    ) -> Option<Place> {
        let given = [
            (Level::District, &input.district),
            (Level::Street, &input.street),
            (Level::Community, &input.community),
            (Level::Grid, &input.grid),
            (Level::Building, &input.building),
        ];
        let before = v.violations().len();
        let mut lowest: Option<&Entry> = None;
        for (level, code) in given {
            if code.is_empty() {
                continue;
            }
            match self.get(code) {
                Some(entry) if entry.level == level => lowest = Some(entry),
                Some(_) => v.add(
                    format!("{prefix}.{}", level.field()),
                    format!("{code} is not a {}", level.field()),
                ),
                None => v.add(
                    format!("{prefix}.{}", level.field()),
                    format!("unknown {} code {code}", level.field()),
                ),
            }
        }
        if v.violations().len() > before {
            return None;
        }
        let Some(lowest) = lowest else {
            v.add(prefix, "give at least a district code");
            return None;
        };
        let mut place = Place::default();
        let mut entry = Some(lowest);
        while let Some(e) = entry {
            *place.code_mut(e.level) = e.code.clone();
            entry = self.get(&e.parent);
        }
        for (level, code) in given {
            if !code.is_empty() && place.code(level) != code.as_str() {
                v.add(
                    format!("{prefix}.{}", level.field()),
                    format!(
                        "{code} does not contain {} {}",
                        lowest.level.field(),
                        lowest.code
                    ),
                );
            }
        }
        (v.violations().len() == before).then_some(place)
    }

    /// Places under `parent` (any depth when `level` is set, direct children otherwise) or
    /// at `level`, after the code `after`, up to `limit`.
    pub fn list(
        &self,
        parent: &str,
        level: Option<Level>,
        after: &str,
        limit: usize,
    ) -> Vec<&Entry> {
        self.places
            .iter()
            .filter(|p| p.code.as_str() > after)
            .filter(|p| level.is_none_or(|l| p.level == l))
            .filter(|p| {
                parent.is_empty()
                    || (level.is_none() && p.parent == parent)
                    || (level.is_some() && self.is_within(&p.code, parent))
            })
            .take(limit)
            .collect()
    }

    /// Whether `code` is `ancestor` or below it.
    pub fn is_within(&self, code: &str, ancestor: &str) -> bool {
        if ancestor == self.city.code {
            return true;
        }
        let mut entry = self.get(code);
        while let Some(e) = entry {
            if e.code == ancestor {
                return true;
            }
            entry = self.get(&e.parent);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(grid: &str, district: &str) -> PlaceInput {
        PlaceInput {
            grid: grid.into(),
            district: district.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_sample_is_a_whole_ladder() {
        let g = Gazetteer::sample();
        for level in [
            Level::District,
            Level::Street,
            Level::Community,
            Level::Grid,
            Level::Building,
        ] {
            assert!(g.places.iter().any(|p| p.level == level), "{level:?}");
        }
    }

    #[test]
    fn a_grid_alone_is_completed_upward() {
        let g = Gazetteer::sample();
        let grid = g.places.iter().find(|p| p.level == Level::Grid).unwrap();
        let mut v = FieldViolations::new();
        let place = g.resolve(&input(&grid.code, ""), &mut v, "place").unwrap();
        assert!(v.is_empty());
        assert_eq!(place.grid, grid.code);
        assert!(
            !place.district.is_empty() && !place.street.is_empty() && !place.community.is_empty()
        );
        assert!(place.building.is_empty());
    }

    #[test]
    fn inconsistent_or_unknown_codes_are_refused() {
        let g = Gazetteer::sample();
        let grid = g.places.iter().find(|p| p.level == Level::Grid).unwrap();
        let other_district = g
            .places
            .iter()
            .find(|p| p.level == Level::District && !grid.code.starts_with(&p.code))
            .unwrap();
        let mut v = FieldViolations::new();
        assert!(
            g.resolve(&input(&grid.code, &other_district.code), &mut v, "place")
                .is_none()
        );
        assert_eq!(v.violations()[0].0, "place.district");

        let mut v = FieldViolations::new();
        assert!(g.resolve(&input("nope", ""), &mut v, "place").is_none());
        assert_eq!(v.violations()[0].0, "place.grid");

        let mut v = FieldViolations::new();
        assert!(g.resolve(&PlaceInput::default(), &mut v, "place").is_none());
        assert_eq!(v.violations()[0].0, "place");

        // A district code in the grid field is refused too.
        let mut v = FieldViolations::new();
        assert!(
            g.resolve(&input(&other_district.code, ""), &mut v, "place")
                .is_none()
        );
    }

    #[test]
    fn broken_gazetteers_are_refused() {
        let text = r#"
[city]
code = "1"
name = "c"
name_en = "c"
[[place]]
code = "2"
level = "street"
parent = "1"
name = "s"
name_en = "s"
"#;
        assert!(Gazetteer::parse(text).unwrap_err().contains("one level up"));
    }
}
