//! The units registry in memory, indexed by the places units cover, so a routing decision
//! never waits on the database. Rebuilt from the database after every local change and
//! periodically (to see other replicas' changes).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::domain::{Unit, UnitKind};

/// Units by id and by covered place.
#[derive(Debug, Default)]
pub struct Directory {
    by_id: HashMap<String, Arc<Unit>>,
    by_place: HashMap<Box<str>, Vec<Arc<Unit>>>,
}

impl Directory {
    /// A directory of `units`.
    pub fn new(units: impl IntoIterator<Item = Unit>) -> Self {
        let mut d = Directory::default();
        for u in units {
            let u = Arc::new(u);
            for p in &u.places {
                d.by_place
                    .entry(p.as_str().into())
                    .or_default()
                    .push(u.clone());
            }
            d.by_id.insert(u.id.clone(), u);
        }
        for list in d.by_place.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        d
    }

    /// One unit.
    pub fn get(&self, id: &str) -> Option<&Arc<Unit>> {
        self.by_id.get(id)
    }

    /// How many units.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Units covering exactly `code`.
    pub fn at(&self, code: &str) -> &[Arc<Unit>] {
        self.by_place.get(code).map_or(&[], Vec::as_slice)
    }

    /// The lowest active unit of `kind` covering a place of `chain` (codes bottom-up) that
    /// `accepts`; among several at the same code, the first by id that `prefer`s, else the
    /// first by id.
    pub fn lowest<'a>(
        &'a self,
        kind: UnitKind,
        chain: &[&str],
        accepts: impl Fn(&Unit) -> bool,
        prefer: impl Fn(&Unit) -> bool,
    ) -> Option<&'a Arc<Unit>> {
        for code in chain {
            let mut first = None;
            for u in self.at(code) {
                if u.kind != kind || !u.active || !accepts(u) {
                    continue;
                }
                if prefer(u) {
                    return Some(u);
                }
                first.get_or_insert(u);
            }
            if first.is_some() {
                return first;
            }
        }
        None
    }
}

/// The directory in force, swapped whole when units change.
#[derive(Debug, Clone, Default)]
pub struct SharedDirectory(Arc<RwLock<Arc<Directory>>>);

impl SharedDirectory {
    /// The directory now (cheap: an `Arc`).
    pub fn current(&self) -> Arc<Directory> {
        match self.0.read() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces it.
    pub fn replace(&self, directory: Directory) {
        let new = Arc::new(directory);
        match self.0.write() {
            Ok(mut d) => *d = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}
