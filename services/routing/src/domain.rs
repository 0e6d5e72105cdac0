//! Routing's domain: units, the facts a case is routed on, routes and assignments. The gRPC
//! layer converts to and from the wire types; rules, storage and dispatch see only these.

use serde::{Deserialize, Serialize};

use minqing_kit::time::Micros;

/// Defines an enum whose discriminants are its wire values, with `from_wire`, `wire`, and
/// snake_case names for files (rules, unit imports).
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr => $slug:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $slug)] $variant = $value),* }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

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

            /// The name used in files.
            pub fn slug(self) -> &'static str {
                match self { $($name::$variant => $slug),* }
            }

            /// The value named `slug` in a file.
            pub fn from_slug(slug: &str) -> Option<Self> {
                match slug { $($slug => Some($name::$variant),)* _ => None }
            }
        }
    };
}

wire_enum!(
    /// What kind of unit.
    UnitKind {
        /// A building's or yard's chief.
        BuildingChief = 1 => "building_chief",
        /// A grid.
        Grid = 2 => "grid",
        /// A community.
        Community = 3 => "community",
        /// A street office.
        StreetOffice = 4 => "street_office",
        /// A district department.
        DistrictDepartment = 5 => "district_department",
        /// A police station.
        PoliceStation = 6 => "police_station",
        /// A property company.
        PropertyCompany = 7 => "property_company",
        /// A clinic or health station.
        Clinic = 8 => "clinic",
        /// A utility.
        Utility = 9 => "utility",
        /// A housekeeping service.
        Housekeeping = 10 => "housekeeping",
        /// An emergency line.
        EmergencyLine = 11 => "emergency_line",
        /// Another competent body.
        OtherBody = 12 => "other_body",
    }
);

impl UnitKind {
    /// The ladder level this kind sits at (1 district … 5 building); `None` for outside units.
    pub fn level(self) -> Option<Level> {
        match self {
            UnitKind::BuildingChief => Some(Level::Building),
            UnitKind::Grid => Some(Level::Grid),
            UnitKind::Community => Some(Level::Community),
            UnitKind::StreetOffice => Some(Level::Street),
            UnitKind::DistrictDepartment => Some(Level::District),
            _ => None,
        }
    }

    /// The ladder kind one level up (none above a district department or off the ladder).
    pub fn above(self) -> Option<UnitKind> {
        match self {
            UnitKind::BuildingChief => Some(UnitKind::Grid),
            UnitKind::Grid => Some(UnitKind::Community),
            UnitKind::Community => Some(UnitKind::StreetOffice),
            UnitKind::StreetOffice => Some(UnitKind::DistrictDepartment),
            _ => None,
        }
    }

    /// The ladder kind for a level.
    pub fn at_level(level: Level) -> UnitKind {
        match level {
            Level::Building => UnitKind::BuildingChief,
            Level::Grid => UnitKind::Grid,
            Level::Community => UnitKind::Community,
            Level::Street => UnitKind::StreetOffice,
            Level::District => UnitKind::DistrictDepartment,
        }
    }
}

wire_enum!(
    /// Which emergency line.
    EmergencyLine {
        /// 110.
        Police = 1 => "police",
        /// 119.
        Fire = 2 => "fire",
        /// 120.
        Ambulance = 3 => "ambulance",
        /// 122.
        Traffic = 4 => "traffic",
    }
);

wire_enum!(
    /// The five dispositions and the emergency hand-off.
    Disposition {
        /// Done on the spot.
        Immediate = 1 => "immediate",
        /// A deadline is promised.
        Committed = 2 => "committed",
        /// Papers are missing.
        Supplement = 3 => "supplement",
        /// Reported up for approval.
        Escalated = 4 => "escalated",
        /// Referred to the competent body.
        Referred = 5 => "referred",
        /// Handed to an emergency line.
        Emergency = 6 => "emergency",
    }
);

wire_enum!(
    /// How a case came in (minqing.type.v1.Channel).
    Channel {
        /// Hotline.
        Hotline = 1 => "hotline",
        /// Mailbox.
        Mailbox = 2 => "mailbox",
        /// Web mailbox.
        Web = 3 => "web",
        /// App.
        App = 4 => "app",
        /// Contact card.
        ContactCard = 5 => "contact_card",
        /// Door to door.
        DoorToDoor = 6 => "door_to_door",
        /// Liaison station.
        LiaisonStation = 7 => "liaison_station",
        /// Call centre.
        CallCentre = 8 => "call_centre",
        /// Service hall.
        ServiceHall = 9 => "service_hall",
        /// Grid app.
        GridApp = 10 => "grid_app",
        /// Group chat.
        GroupChat = 11 => "group_chat",
        /// Compound station.
        CompoundStation = 12 => "compound_station",
    }
);

wire_enum!(
    /// How pressing a case is.
    Urgency {
        /// Can wait.
        Low = 1 => "low",
        /// Ordinary.
        Normal = 2 => "normal",
        /// Today.
        High = 3 => "high",
        /// Danger to life or property.
        Emergency = 4 => "emergency",
    }
);

wire_enum!(
    /// Days of the week.
    Weekday {
        /// Monday.
        Monday = 1 => "mon",
        /// Tuesday.
        Tuesday = 2 => "tue",
        /// Wednesday.
        Wednesday = 3 => "wed",
        /// Thursday.
        Thursday = 4 => "thu",
        /// Friday.
        Friday = 5 => "fri",
        /// Saturday.
        Saturday = 6 => "sat",
        /// Sunday.
        Sunday = 7 => "sun",
    }
);

impl Weekday {
    /// From chrono's weekday.
    pub fn from_chrono(d: chrono::Weekday) -> Weekday {
        match d {
            chrono::Weekday::Mon => Weekday::Monday,
            chrono::Weekday::Tue => Weekday::Tuesday,
            chrono::Weekday::Wed => Weekday::Wednesday,
            chrono::Weekday::Thu => Weekday::Thursday,
            chrono::Weekday::Fri => Weekday::Friday,
            chrono::Weekday::Sat => Weekday::Saturday,
            chrono::Weekday::Sun => Weekday::Sunday,
        }
    }
}

wire_enum!(
    /// Where an assignment stands.
    AssignmentState {
        /// Not accepted yet.
        Pending = 1 => "pending",
        /// Accepted.
        Accepted = 2 => "accepted",
        /// Waiting for papers.
        AwaitingPapers = 3 => "awaiting_papers",
        /// Waiting for approval.
        AwaitingApproval = 4 => "awaiting_approval",
        /// Resolved.
        Resolved = 5 => "resolved",
        /// Refused by the unit.
        Rejected = 6 => "rejected",
        /// Taken from the unit.
        Superseded = 7 => "superseded",
        /// The case was withdrawn.
        Cancelled = 8 => "cancelled",
    }
);

impl AssignmentState {
    /// Whether the unit still has work to do on it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            AssignmentState::Pending
                | AssignmentState::Accepted
                | AssignmentState::AwaitingPapers
                | AssignmentState::AwaitingApproval
        )
    }
}

wire_enum!(
    /// Where a case stands in routing.
    RouteState {
        /// Assigned, not accepted.
        Assigned = 1 => "assigned",
        /// Being handled.
        InProgress = 2 => "in_progress",
        /// Waiting for papers.
        AwaitingPapers = 3 => "awaiting_papers",
        /// Waiting for approval.
        AwaitingApproval = 4 => "awaiting_approval",
        /// Approved or refused; the answer is due.
        AnswerDue = 5 => "answer_due",
        /// Resolved.
        Resolved = 6 => "resolved",
        /// Referred.
        Referred = 7 => "referred",
        /// Handed to an emergency line.
        Emergency = 8 => "emergency",
        /// Withdrawn.
        Cancelled = 9 => "cancelled",
    }
);

impl RouteState {
    /// Whether the case is still being handled.
    pub fn is_open(self) -> bool {
        !matches!(self, RouteState::Resolved | RouteState::Cancelled)
    }
}

/// The rungs of the ladder below the city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

    /// The level for a wire number (minqing.type.v1.PlaceLevel).
    pub fn from_wire(value: i32) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as i32 == value)
    }

    /// The name used in messages.
    pub fn slug(self) -> &'static str {
        match self {
            Level::District => "district",
            Level::Street => "street",
            Level::Community => "community",
            Level::Grid => "grid",
            Level::Building => "building",
        }
    }
}

/// A place as codes at every level down to the lowest known (empty where unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// District code.
    pub district: String,
    /// Street code.
    pub street: String,
    /// Community code.
    pub community: String,
    /// Grid code.
    pub grid: String,
    /// Building code.
    pub building: String,
    /// Free-text address.
    #[serde(default)]
    pub address: String,
    /// Coordinates in micro-degrees, if given.
    #[serde(default)]
    pub location_e6: Option<(i64, i64)>,
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

    /// The lowest level known, with its code.
    pub fn lowest(&self) -> Option<(Level, &str)> {
        Level::ALL
            .into_iter()
            .rev()
            .map(|l| (l, self.code(l)))
            .find(|(_, c)| !c.is_empty())
    }
}

/// When a unit is open, in local time: minutes after midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingHours {
    /// Days; empty for every day.
    pub days: Vec<Weekday>,
    /// Opening, minutes after midnight.
    pub open: u32,
    /// Closing, minutes after midnight (earlier than `open` wraps past midnight).
    pub close: u32,
}

/// A way to reach a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitContact {
    /// Post.
    pub role: String,
    /// Name.
    pub name: String,
    /// Phone.
    pub phone: String,
    /// Online address.
    pub online_address: String,
}

/// A unit that can handle cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Id (the part after `units/`).
    pub id: String,
    /// Kind.
    pub kind: UnitKind,
    /// Chinese name.
    pub display_name: String,
    /// English name.
    pub display_name_en: String,
    /// Places covered (gazetteer codes, any level; the city code for the whole city).
    pub places: Vec<String>,
    /// Catalogue items handled; empty for all.
    pub categories: Vec<String>,
    /// Emergency line, for emergency-line units.
    pub emergency_line: Option<EmergencyLine>,
    /// Opening hours; empty for always.
    pub working_hours: Vec<WorkingHours>,
    /// Contacts.
    pub contacts: Vec<UnitContact>,
    /// Acceptance window in minutes; 0 for the service default.
    pub acceptance_window_minutes: u32,
    /// Whether it sees reporters' contact details.
    pub needs_reporter_contact: bool,
    /// Whether it takes new cases.
    pub active: bool,
    /// A note.
    pub description: String,
    /// Registered.
    pub create_time: Micros,
    /// Last changed.
    pub update_time: Micros,
    /// Bumped by every change.
    pub version: i64,
}

impl Unit {
    /// The resource name.
    pub fn name(&self) -> String {
        format!("units/{}", self.id)
    }

    /// Whether it handles `category`.
    pub fn handles(&self, category: &str) -> bool {
        self.categories.is_empty() || self.categories.iter().any(|c| c == category)
    }

    /// The same unit, ignoring bookkeeping (for imports that change nothing).
    pub fn same_content(&self, other: &Unit) -> bool {
        let strip = |u: &Unit| Unit {
            create_time: 0,
            update_time: 0,
            version: 0,
            ..u.clone()
        };
        strip(self) == strip(other)
    }
}

/// An attachment by reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Where.
    pub uri: String,
    /// Media type.
    pub media_type: String,
    /// What it shows.
    pub description: String,
}

/// A reporter's contact details (personal data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Name.
    pub name: String,
    /// Phone.
    pub phone: String,
    /// Postal address.
    pub postal_address: String,
    /// Online address.
    pub online_address: String,
    /// Preferred method (wire value).
    pub preferred_method: i32,
    /// Needs an appointed visit.
    pub needs_appointed_visit: bool,
    /// Visit note.
    pub visit_note: String,
}

/// What a case is routed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFacts {
    /// Case id (empty for a hypothetical case).
    pub case_id: String,
    /// Catalogue item.
    pub category: String,
    /// Where.
    pub place: Place,
    /// Channel.
    pub channel: Channel,
    /// Urgency.
    pub urgency: Urgency,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// When submitted.
    pub submit_time: Micros,
    /// Whether volunteers can help.
    pub volunteer_suitable: bool,
    /// The catalogue item's name.
    pub category_name: String,
    /// Liaison station id.
    pub liaison_station: String,
    /// Deputy id.
    pub deputy: String,
    /// Cluster id.
    pub cluster: String,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

/// One step of a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What.
    pub text: String,
    /// Rule id.
    pub rule: String,
    /// Unit id.
    pub unit: String,
}

/// A routing decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The rule that decided; empty for the no-match default.
    pub rule: String,
    /// Disposition.
    pub disposition: Disposition,
    /// Handling unit id.
    pub unit: String,
    /// Its display name.
    pub unit_display_name: String,
    /// Deadline.
    pub due_time: Option<Micros>,
    /// Time limit in working days.
    pub time_limit_working_days: i32,
    /// One line.
    pub reason: String,
    /// Steps.
    pub steps: Vec<Step>,
    /// Whether a fallback was taken.
    pub fell_back: bool,
    /// Papers missing.
    pub missing_documents: Vec<String>,
    /// Approver unit id.
    pub approver: String,
    /// Referral reason.
    pub referral_reason: String,
    /// Competent body.
    pub competent_body: String,
    /// Emergency line.
    pub emergency_line: Option<EmergencyLine>,
    /// Rule set version.
    pub rule_set_version: String,
    /// When decided.
    pub decide_time: Micros,
    /// Rules that matched, best first.
    pub matched_rules: Vec<String>,
    /// The unit that coordinates (the community for emergencies); empty for the handling unit.
    pub coordinator: String,
}

/// A progress note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressNote {
    /// What.
    pub note: String,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// When.
    pub time: Micros,
    /// Who.
    pub actor: String,
}

/// A case handed to one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Id.
    pub id: String,
    /// Case id.
    pub case_id: String,
    /// Unit id.
    pub unit: String,
    /// Unit display name.
    pub unit_display_name: String,
    /// Disposition.
    pub disposition: Disposition,
    /// State.
    pub state: AssignmentState,
    /// Deadline.
    pub due_time: Option<Micros>,
    /// Accept before.
    pub accept_by: Micros,
    /// The decision that made it.
    pub decision: Decision,
    /// Made.
    pub create_time: Micros,
    /// Accepted.
    pub accept_time: Option<Micros>,
    /// Ended.
    pub end_time: Option<Micros>,
    /// Why it ended.
    pub end_reason: String,
    /// Result.
    pub result: String,
    /// Evidence.
    pub evidence: Vec<Attachment>,
    /// Progress.
    pub progress: Vec<ProgressNote>,
    /// Papers missing.
    pub missing_documents: Vec<String>,
    /// Acceptance overdue noticed.
    pub acceptance_overdue: bool,
    /// Whether the unit sees the reporter's contact.
    pub shows_contact: bool,
    /// Bumped by every change.
    pub version: i64,
}

impl Assignment {
    /// The resource name.
    pub fn name(&self) -> String {
        format!("assignments/{}", self.id)
    }
}

/// An escalation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Approver unit id.
    pub approver: String,
    /// Its name.
    pub approver_display_name: String,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub request_time: Micros,
    /// Approved.
    pub approved: bool,
    /// Approver's note.
    pub decision_note: String,
    /// When decided.
    pub decide_time: Option<Micros>,
    /// Answer due.
    pub answer_due_time: Option<Micros>,
}

/// A referral.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// Unit id, if registered.
    pub unit: String,
    /// Competent body's name.
    pub competent_body: String,
    /// Why.
    pub reason: String,
    /// When.
    pub refer_time: Micros,
}

/// A case's routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Case id.
    pub case_id: String,
    /// Facts.
    pub facts: CaseFacts,
    /// The reporter's contact (personal data; anonymous reports have none).
    pub contact: Option<Contact>,
    /// State.
    pub state: RouteState,
    /// Disposition in force.
    pub disposition: Disposition,
    /// Handling unit id.
    pub handling_unit: String,
    /// Its display name.
    pub handling_unit_display_name: String,
    /// Coordinating unit id.
    pub coordinating_unit: String,
    /// Its display name.
    pub coordinating_unit_display_name: String,
    /// Current assignment id.
    pub current_assignment: String,
    /// Deadline in force.
    pub due_time: Option<Micros>,
    /// Time limit in working days.
    pub time_limit_working_days: i32,
    /// When the clock started.
    pub clock_start_time: Option<Micros>,
    /// Papers missing.
    pub missing_documents: Vec<String>,
    /// Escalation.
    pub escalation: Option<Escalation>,
    /// Referral.
    pub referral: Option<Referral>,
    /// Emergency line.
    pub emergency_line: Option<EmergencyLine>,
    /// Latest decision.
    pub decision: Decision,
    /// Result.
    pub result: String,
    /// Times routed.
    pub route_count: i32,
    /// Units that refused it (never chosen again for this case).
    pub refused_by: Vec<String>,
    /// First decided.
    pub create_time: Micros,
    /// Last changed.
    pub update_time: Micros,
    /// Bumped by every change.
    pub version: i64,
}

impl Route {
    /// The case's resource name.
    pub fn case_name(&self) -> String {
        format!("cases/{}", self.case_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_and_slugs_round_trip() {
        for k in UnitKind::ALL {
            assert_eq!(UnitKind::from_wire(k.wire()), Some(*k));
            assert_eq!(UnitKind::from_slug(k.slug()), Some(*k));
        }
        assert_eq!(Disposition::from_wire(0), None);
        assert_eq!(Channel::from_slug("hotline"), Some(Channel::Hotline));
        assert_eq!(UnitKind::Grid.above(), Some(UnitKind::Community));
        assert_eq!(UnitKind::Clinic.level(), None);
    }

    #[test]
    fn places_list_codes_top_down_and_know_their_lowest() {
        let p = Place {
            district: "1".into(),
            street: "12".into(),
            community: "123".into(),
            ..Default::default()
        };
        assert_eq!(p.codes().collect::<Vec<_>>(), ["1", "12", "123"]);
        assert_eq!(p.lowest(), Some((Level::Community, "123")));
    }
}
