//! What routing needs to know of intake's public data: the service catalogue (time limits,
//! required papers, volunteer suitability) and the gazetteer (the ladder of places).
//!
//! Routing never reads intake's tables: it asks intake's public `Catalogue` service over gRPC
//! and keeps the answer in memory, fetched on first need and refreshed after `refresh`
//! (serving the old copy while intake cannot be reached).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::{Mutex, RwLock};
use tonic::transport::Channel;

use crate::domain::{Disposition, Level, Place};
use minqing_proto::minqing::intake::v1::{self as ipb, catalogue_client::CatalogueClient};

/// A catalogue item, as routing uses it.
#[derive(Debug, Clone, Default)]
pub struct Item {
    /// Chinese name.
    pub name: String,
    /// Time limit in working days (0: on the spot).
    pub time_limit_working_days: u32,
    /// Papers the resident must bring.
    pub required_documents: Vec<String>,
    /// The usual disposition.
    pub default_disposition: Option<Disposition>,
    /// Whether neighbours or volunteers can help.
    pub volunteer_suitable: bool,
}

/// A gazetteer entry.
#[derive(Debug, Clone)]
pub struct PlaceInfo {
    /// Level.
    pub level: Level,
    /// Parent code (the city's for districts).
    pub parent: String,
    /// Chinese name.
    pub name: String,
}

/// The catalogue and the gazetteer.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    /// Items by id.
    pub items: HashMap<String, Item>,
    /// Places by code.
    pub places: HashMap<String, PlaceInfo>,
    /// The city's code.
    pub city: String,
}

impl Knowledge {
    /// Whether `code` is the city or a place of the gazetteer.
    pub fn knows_place(&self, code: &str) -> bool {
        code == self.city || self.places.contains_key(code)
    }

    /// Completes a place upward from its lowest code; `Err` names the problem.
    pub fn complete(&self, place: &Place) -> Result<Place, String> {
        let Some((level, code)) = place.lowest() else {
            return Err("at least one place code is required".into());
        };
        let mut out = place.clone();
        let mut code = code.to_string();
        let mut level = level;
        loop {
            let info = self
                .places
                .get(&code)
                .ok_or_else(|| format!("unknown place code {code}"))?;
            if info.level != level {
                return Err(format!(
                    "{code} is a {} code, not a {} code",
                    info.level.slug(),
                    level.slug()
                ));
            }
            let given = place.code(level);
            if !given.is_empty() && given != code {
                return Err(format!(
                    "{} {given} does not contain the place below it",
                    level.slug()
                ));
            }
            *out.code_mut(level) = code.clone();
            match Level::ALL.iter().position(|l| *l == level) {
                Some(0) | None => break,
                Some(i) => {
                    level = Level::ALL[i - 1];
                    code = info.parent.clone();
                }
            }
        }
        Ok(out)
    }

    /// The name of a place code.
    pub fn place_name(&self, code: &str) -> String {
        self.places
            .get(code)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| code.to_string())
    }
}

/// Where knowledge comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Intake's public Catalogue service.
    Intake(Channel),
    /// Fixed (tests and benchmarks).
    Fixed,
}

/// Knowledge held, and when it was fetched.
type Held = (Arc<Knowledge>, tokio::time::Instant);

/// The knowledge cache.
#[derive(Debug, Clone)]
pub struct KnowledgeCache {
    source: Source,
    current: Arc<RwLock<Option<Held>>>,
    fetching: Arc<Mutex<()>>,
    refresh: Duration,
}

impl KnowledgeCache {
    /// A cache fetching from `source`, refreshed after `refresh`.
    pub fn new(source: Source, refresh: Duration) -> Self {
        Self {
            source,
            current: Arc::new(RwLock::new(None)),
            fetching: Arc::new(Mutex::new(())),
            refresh,
        }
    }

    /// A cache holding `knowledge` for good.
    pub fn fixed(knowledge: Knowledge) -> Self {
        Self {
            source: Source::Fixed,
            current: Arc::new(RwLock::new(Some((
                Arc::new(knowledge),
                tokio::time::Instant::now(),
            )))),
            fetching: Arc::new(Mutex::new(())),
            refresh: Duration::MAX,
        }
    }

    /// The knowledge, fetching it when missing or old. Fails only when it was never fetched
    /// and intake cannot be reached now.
    pub async fn get(&self) -> anyhow::Result<Arc<Knowledge>> {
        if let Some((k, at)) = self.current.read().await.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(k.clone());
        }
        let _one = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some((k, at)) = self.current.read().await.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(k.clone());
        }
        let Source::Intake(channel) = &self.source else {
            return self
                .current
                .read()
                .await
                .as_ref()
                .map(|(k, _)| k.clone())
                .ok_or_else(|| anyhow::anyhow!("no catalogue"));
        };
        match fetch(channel.clone()).await {
            Ok(k) => {
                let k = Arc::new(k);
                *self.current.write().await = Some((k.clone(), tokio::time::Instant::now()));
                Ok(k)
            }
            Err(err) => match self.current.read().await.as_ref() {
                Some((k, _)) => {
                    tracing::warn!(error = %err, "cannot refresh the catalogue from intake; keeping the copy held");
                    Ok(k.clone())
                }
                None => Err(err.context("cannot fetch the catalogue and gazetteer from intake")),
            },
        }
    }
}

async fn fetch(channel: Channel) -> anyhow::Result<Knowledge> {
    let mut client = CatalogueClient::new(channel).max_decoding_message_size(64 << 20);
    let mut k = Knowledge::default();
    let mut token = String::new();
    loop {
        let page = client
            .list_catalogue_items(ipb::ListCatalogueItemsRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for i in page.items {
            k.items.insert(
                i.id.clone(),
                Item {
                    name: i.name,
                    time_limit_working_days: i.time_limit_working_days.max(0) as u32,
                    required_documents: i.required_documents,
                    default_disposition: Disposition::from_wire(i.default_disposition),
                    volunteer_suitable: i.volunteer_suitable,
                },
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    token.clear();
    loop {
        let page = client
            .list_places(ipb::ListPlacesRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for p in page.places {
            let Some(level) = Level::from_wire(p.level) else {
                continue;
            };
            if level == Level::District {
                k.city = p.parent.clone();
            }
            k.places.insert(
                p.code,
                PlaceInfo {
                    level,
                    parent: p.parent,
                    name: p.name,
                },
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(k)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small city: one district, street, community, grid, building.
    pub fn tiny() -> Knowledge {
        let mut k = Knowledge {
            city: "620100".into(),
            ..Default::default()
        };
        for (code, level, parent) in [
            ("620102", Level::District, "620100"),
            ("620102001", Level::Street, "620102"),
            ("620102001001", Level::Community, "620102001"),
            ("620102001001-g01", Level::Grid, "620102001001"),
            ("620102001001-g01-b01", Level::Building, "620102001001-g01"),
        ] {
            k.places.insert(
                code.into(),
                PlaceInfo {
                    level,
                    parent: parent.into(),
                    name: code.into(),
                },
            );
        }
        k
    }

    #[test]
    fn places_complete_upward_and_must_agree() {
        let k = tiny();
        let p = k
            .complete(&Place {
                building: "620102001001-g01-b01".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.district, "620102");
        assert_eq!(p.grid, "620102001001-g01");
        let bad = k.complete(&Place {
            district: "620103".into(),
            grid: "620102001001-g01".into(),
            ..Default::default()
        });
        assert!(bad.unwrap_err().contains("does not contain"));
        assert!(k.complete(&Place::default()).is_err());
        assert!(
            k.complete(&Place {
                grid: "620102001001".into(),
                ..Default::default()
            })
            .unwrap_err()
            .contains("not a grid")
        );
    }
}
