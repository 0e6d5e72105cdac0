//! Intake's domain: a case as the resident raised it and as it now stands. The gRPC layer
//! converts to and from the wire types; storage and rules see only these.

use serde::{Deserialize, Serialize};

use minqing_kit::time::Micros;

/// Defines an enum whose discriminants are its wire values, with `from_wire`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant = $value),* }

        impl $name {
            /// The value for a wire number; `None` for 0 (unspecified) and unknown numbers.
            pub fn from_wire(value: i32) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The wire number.
            pub fn wire(self) -> i32 {
                self as i32
            }
        }
    };
}

wire_enum!(
    /// How a case came in.
    Channel {
        /// Public hotline.
        Hotline = 1,
        /// Building mailbox.
        Mailbox = 2,
        /// Web mailbox.
        Web = 3,
        /// Resident app.
        App = 4,
        /// Contact card.
        ContactCard = 5,
        /// Door-to-door visit.
        DoorToDoor = 6,
        /// Liaison station.
        LiaisonStation = 7,
        /// 24-hour call centre.
        CallCentre = 8,
        /// Service hall.
        ServiceHall = 9,
        /// Grid app.
        GridApp = 10,
        /// Group chat.
        GroupChat = 11,
        /// Compound station.
        CompoundStation = 12,
    }
);

impl Channel {
    /// How the resident is told which channel it was.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Hotline => "the public hotline",
            Channel::Mailbox => "a building mailbox",
            Channel::Web => "the web mailbox",
            Channel::App => "the resident app",
            Channel::ContactCard => "a contact card",
            Channel::DoorToDoor => "a grid worker's visit",
            Channel::LiaisonStation => "a deputies' liaison station",
            Channel::CallCentre => "the 24-hour call centre",
            Channel::ServiceHall => "a service hall window",
            Channel::GridApp => "the grid app",
            Channel::GroupChat => "a residents' group chat",
            Channel::CompoundStation => "a compound grid station",
        }
    }
}

wire_enum!(
    /// How a resident wants to hear back.
    ContactMethod {
        /// Telephone.
        Phone = 1,
        /// Letter.
        Letter = 2,
        /// Online.
        Online = 3,
        /// Face to face.
        FaceToFace = 4,
    }
);

wire_enum!(
    /// How pressing a case is.
    Urgency {
        /// Can wait.
        Low = 1,
        /// Ordinary.
        Normal = 2,
        /// Today.
        High = 3,
        /// Danger to life or property.
        Emergency = 4,
    }
);

wire_enum!(
    /// Resident-visible state.
    CaseState {
        /// Accepted, being routed.
        Submitted = 1,
        /// Sent to a unit.
        Routed = 2,
        /// Taken up.
        InProgress = 3,
        /// Waiting for papers.
        AwaitingPapers = 4,
        /// Reported up.
        Escalated = 5,
        /// Handled.
        Resolved = 6,
        /// Referred elsewhere.
        Referred = 7,
        /// Withdrawn.
        Withdrawn = 8,
        /// Answered and closed.
        Closed = 9,
    }
);

impl CaseState {
    /// Whether the case is still being handled (supplements and withdrawal are possible).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            CaseState::Submitted
                | CaseState::Routed
                | CaseState::InProgress
                | CaseState::AwaitingPapers
                | CaseState::Escalated
        )
    }
}

wire_enum!(
    /// The five dispositions and the emergency hand-off.
    Disposition {
        /// Done on the spot.
        Immediate = 1,
        /// Deadline promised.
        Committed = 2,
        /// Papers missing.
        Supplement = 3,
        /// Reported up.
        Escalated = 4,
        /// Referred.
        Referred = 5,
        /// Emergency line.
        Emergency = 6,
    }
);

/// The rungs of the ladder below the city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// District.
    District = 1,
    /// Street office.
    Street = 2,
    /// Community.
    Community = 3,
    /// Grid.
    Grid = 4,
    /// Building or yard.
    Building = 5,
}

impl Level {
    /// Every level, top down.
    pub const ALL: [Level; 5] = [
        Level::District,
        Level::Street,
        Level::Community,
        Level::Grid,
        Level::Building,
    ];

    /// The level above (none for districts, whose parent is the city).
    pub fn parent(self) -> Option<Level> {
        match self {
            Level::District => None,
            Level::Street => Some(Level::District),
            Level::Community => Some(Level::Street),
            Level::Grid => Some(Level::Community),
            Level::Building => Some(Level::Grid),
        }
    }

    /// The field (and column) name.
    pub fn field(self) -> &'static str {
        match self {
            Level::District => "district",
            Level::Street => "street",
            Level::Community => "community",
            Level::Grid => "grid",
            Level::Building => "building",
        }
    }

    /// The level for a wire number.
    pub fn from_wire(value: i32) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as i32 == value)
    }
}

/// A place resolved against the gazetteer: a code for every level down to the lowest known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// District code.
    pub district: String,
    /// Street code.
    pub street: String,
    /// Community code.
    pub community: String,
    /// Grid code (may be empty).
    pub grid: String,
    /// Building code (may be empty).
    pub building: String,
}

impl Place {
    /// The code at `level`.
    pub fn code(&self, level: Level) -> &str {
        match level {
            Level::District => &self.district,
            Level::Street => &self.street,
            Level::Community => &self.community,
            Level::Grid => &self.grid,
            Level::Building => &self.building,
        }
    }

    /// The code at `level`, to set.
    pub fn code_mut(&mut self, level: Level) -> &mut String {
        match level {
            Level::District => &mut self.district,
            Level::Street => &mut self.street,
            Level::Community => &mut self.community,
            Level::Grid => &mut self.grid,
            Level::Building => &mut self.building,
        }
    }

    /// Every non-empty code, top down.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        Level::ALL
            .into_iter()
            .map(|l| self.code(l))
            .filter(|c| !c.is_empty())
    }
}

/// A point (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLng {
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
}

impl LatLng {
    /// Great-circle distance in metres (haversine; a few lines, so no geodesy crate).
    pub fn distance_m(self, other: LatLng) -> f64 {
        const EARTH_RADIUS_M: f64 = 6_371_008.8;
        let (la1, la2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dla = la2 - la1;
        let dlo = (other.longitude - self.longitude).to_radians();
        let a = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }
}

/// Contact details and how to hear back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Name.
    pub name: String,
    /// Phone.
    pub phone: String,
    /// Postal address.
    pub postal_address: String,
    /// Online address.
    pub online_address: String,
    /// Preferred way back.
    pub preferred_method: Option<ContactMethod>,
    /// Needs an appointed visit.
    pub needs_appointed_visit: bool,
    /// Visit note.
    pub visit_note: String,
}

/// Who raised the case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reporter {
    /// Anonymous report.
    pub anonymous: bool,
    /// Contact details (absent for anonymous reports).
    pub contact: Option<Contact>,
}

/// Channel specifics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDetails {
    /// Visiting grid worker.
    pub visiting_worker: String,
    /// Deputy.
    pub deputy: String,
    /// Liaison station.
    pub liaison_station: String,
    /// Window or room.
    pub window: String,
    /// Number in the originating system.
    pub external_ref: String,
}

/// A file kept elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Where it is.
    pub uri: String,
    /// Media type.
    pub media_type: String,
    /// What it shows.
    pub description: String,
}

/// What the resident raised: fixed once accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// How it came in.
    pub channel: Channel,
    /// Channel specifics.
    pub channel_details: ChannelDetails,
    /// Who raised it.
    pub reporter: Reporter,
    /// Where.
    pub place: Place,
    /// Exact spot.
    pub location: Option<LatLng>,
    /// Free-text address.
    pub address: String,
    /// Catalogue item.
    pub category: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Urgency.
    pub urgency: Urgency,
    /// When seen.
    pub occur_time: Option<Micros>,
}

/// A case: the submission and where it now stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Id (UUIDv7 text).
    pub id: String,
    /// The submitting principal's request id.
    pub request_id: String,
    /// Who recorded it (`role:principal`).
    pub recorded_by: String,
    /// What was raised.
    pub submission: Submission,
    /// State.
    pub state: CaseState,
    /// Disposition, once decided.
    pub disposition: Option<Disposition>,
    /// Handling unit, as shown to residents.
    pub handling_unit: String,
    /// Promised answer time.
    pub due_time: Option<Micros>,
    /// Cluster id.
    pub cluster: Option<String>,
    /// Supplements received.
    pub supplement_count: i32,
    /// Why withdrawn.
    pub withdraw_reason: String,
    /// Accepted.
    pub create_time: Micros,
    /// Last changed (its handling or its cluster).
    pub update_time: Micros,
    /// Incremented by every change of its handling (what `update_case` writes).
    pub version: i64,
    /// Incremented by every change of its cluster (0: never in one).
    pub cluster_version: i64,
}

impl Case {
    /// The resource name.
    pub fn name(&self) -> String {
        format!("cases/{}", self.id)
    }

    /// Changes whenever the case does: its handling or its cluster.
    pub fn etag(&self) -> String {
        (self.version + self.cluster_version).to_string()
    }
}

/// A cluster of reports of the same issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Id.
    pub id: String,
    /// Shared category.
    pub category: String,
    /// Why linked.
    pub reason: String,
    /// Formed.
    pub create_time: Micros,
    /// Member case ids, oldest first.
    pub cases: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip_and_refuse_unknowns() {
        assert_eq!(Channel::from_wire(6), Some(Channel::DoorToDoor));
        assert_eq!(Channel::from_wire(0), None);
        assert_eq!(Channel::from_wire(99), None);
        assert_eq!(CaseState::Closed.wire(), 9);
        assert_eq!(
            Disposition::from_wire(Disposition::Emergency.wire()),
            Some(Disposition::Emergency)
        );
    }

    #[test]
    fn haversine_is_about_right() {
        let a = LatLng {
            latitude: 36.0611,
            longitude: 103.8343,
        };
        let b = LatLng {
            latitude: 36.0620,
            longitude: 103.8343,
        };
        let d = a.distance_m(b);
        assert!((99.0..101.0).contains(&d), "{d}");
        assert_eq!(a.distance_m(a), 0.0);
    }
}
