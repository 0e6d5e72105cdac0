//! Matching's domain: volunteers, teams, organisations, needs and assignments as the rules
//! and storage see them. The gRPC layer converts to and from the wire types.

use serde::{Deserialize, Serialize};

pub use minqing_intake::domain::{Contact, ContactMethod, LatLng, Place, Urgency};
use minqing_kit::time::Micros;

/// Whether `s` is a skill or language code: 1 to 40 of `a-z`, `0-9`, `-`, starting with a
/// letter or digit.
pub fn is_code(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Defines an enum whose discriminants are its wire values, with `from_wire` and `wire`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// Where a volunteer stands.
    VolunteerState { Active = 1, Paused = 2, Retired = 3 }
);
wire_enum!(
    /// Kinds of team.
    TeamKind { ElderlyCare = 1, AfterSchool = 2, MutualHelp = 3, PartyMembers = 4, General = 5 }
);
wire_enum!(
    /// Whether a team or organisation can claim.
    BodyState { Active = 1, Retired = 2 }
);
wire_enum!(
    /// Kinds of partner organisation.
    OrganisationKind { Firm = 1, School = 2, PublicInstitution = 3, SocialOrganisation = 4, Other = 5 }
);
wire_enum!(
    /// Where a need came from.
    NeedSource { Community = 1, Case = 2 }
);
wire_enum!(
    /// Where a need stands.
    NeedState { Draft = 1, Open = 2, Filled = 3, Done = 4, Cancelled = 5 }
);
wire_enum!(
    /// How claims are settled.
    ClaimPolicy { FirstCome = 1, Confirm = 2 }
);
wire_enum!(
    /// Who does an assignment.
    AssigneeKind { Volunteer = 1, Team = 2, Organisation = 3 }
);
wire_enum!(
    /// Where an assignment stands.
    AssignmentState {
        Pending = 1, Offered = 2, Accepted = 3, Done = 4, Declined = 5, Expired = 6,
        Withdrawn = 7, Rejected = 8, Reassigned = 9, Cancelled = 10,
    }
);
wire_enum!(
    /// How an assignment came about.
    AssignmentOrigin { Claim = 1, Offer = 2, Plan = 3, Reassignment = 4 }
);
wire_enum!(
    /// What a part of the score measures.
    ReasonKind { Skill = 1, Proximity = 2, Availability = 3, Load = 4, Fairness = 5, Language = 6 }
);
wire_enum!(
    /// The five-level satisfaction scale.
    Satisfaction { VeryDissatisfied = 1, Dissatisfied = 2, Neutral = 3, Satisfied = 4, VerySatisfied = 5 }
);
wire_enum!(
    /// How a rating was collected.
    RatingChannel { CallBack = 1, Visit = 2, Online = 3, Survey = 4, Window = 5 }
);

impl AssignmentState {
    /// Open: it holds a place of its need and counts against the assignee's capacity.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            AssignmentState::Pending | AssignmentState::Offered | AssignmentState::Accepted
        )
    }

    /// The open states, as stored numbers (for SQL `IN` lists).
    pub const OPEN: [AssignmentState; 3] = [
        AssignmentState::Pending,
        AssignmentState::Offered,
        AssignmentState::Accepted,
    ];
}

impl AssigneeKind {
    /// The collection in resource names.
    pub fn collection(self) -> &'static str {
        match self {
            AssigneeKind::Volunteer => "volunteers",
            AssigneeKind::Team => "teams",
            AssigneeKind::Organisation => "organisations",
        }
    }
}

/// Who does an assignment: a kind and an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignee {
    /// The kind.
    pub kind: AssigneeKind,
    /// The id within its collection.
    pub id: String,
}

impl Assignee {
    /// `volunteers/{id}`, `teams/{id}` or `organisations/{id}`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.kind.collection(), self.id)
    }

    /// Parses a resource name of one of the three collections (the id must be a UUID).
    pub fn parse(name: &str) -> Option<Assignee> {
        let (collection, id) = name.split_once('/')?;
        let kind = [
            AssigneeKind::Volunteer,
            AssigneeKind::Team,
            AssigneeKind::Organisation,
        ]
        .into_iter()
        .find(|k| k.collection() == collection)?;
        uuid::Uuid::parse_str(id).ok()?;
        Some(Assignee {
            kind,
            id: id.to_string(),
        })
    }
}

/// A credential backing a skill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// What it is.
    pub title: String,
    /// Its number (personal data).
    pub number: String,
    /// Who issued it.
    pub issuer: String,
    /// When it expires.
    pub expire_time: Option<Micros>,
}

/// A skill and its credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    /// The code.
    pub skill: String,
    /// The credential, if any.
    pub credential: Option<Credential>,
}

/// A weekly window in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyWindow {
    /// ISO weekday, 1 (Monday) to 7.
    pub day: u8,
    /// Minutes after local midnight.
    pub start: u16,
    /// Minutes after local midnight, after `start`, at most 1440.
    pub end: u16,
}

/// A one-off change to the weekly pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityException {
    /// Start.
    pub start: Micros,
    /// End.
    pub end: Micros,
    /// Available (true) or not (false) then.
    pub available: bool,
    /// Why.
    pub note: String,
}

/// When a volunteer can help.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// Weekly windows.
    pub weekly: Vec<WeeklyWindow>,
    /// Exceptions.
    pub exceptions: Vec<AvailabilityException>,
}

/// How much a volunteer takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Minutes a week.
    pub weekly_minutes: u32,
    /// Open tasks at once.
    pub max_open_tasks: u32,
}

/// What a volunteer agreed to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Data processing.
    pub data_processing: bool,
    /// Offers.
    pub offers: bool,
    /// Showing their display name to residents.
    pub show_name: bool,
    /// When.
    pub consent_time: Micros,
}

/// A volunteer's editable facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Registry number, empty when none.
    pub external_id: String,
    /// Shown name.
    pub display_name: String,
    /// Legal name and contact details.
    pub contact: Contact,
    /// How they like to be contacted.
    pub contact_note: String,
    /// Home, resolved against the gazetteer.
    pub home: Place,
    /// Home address.
    pub address: String,
    /// Home coordinates.
    pub location: Option<LatLng>,
    /// Skills.
    pub skills: Vec<Skill>,
    /// Languages.
    pub languages: Vec<String>,
    /// Availability.
    pub availability: Availability,
    /// Capacity.
    pub capacity: Capacity,
    /// Party member.
    pub party_member: bool,
    /// Team ids.
    pub teams: Vec<String>,
    /// Organisation id.
    pub organisation: Option<String>,
    /// Consent.
    pub consent: Consent,
}

/// A volunteer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volunteer {
    /// Id (UUIDv7).
    pub id: String,
    /// The request id it was registered with.
    pub request_id: String,
    /// Who registered them.
    pub registered_by: String,
    /// Their facts.
    pub profile: Profile,
    /// State.
    pub state: VolunteerState,
    /// Paused until.
    pub pause_until: Option<Micros>,
    /// Why paused or retired.
    pub state_reason: String,
    /// Registered.
    pub create_time: Micros,
    /// Last changed.
    pub update_time: Micros,
    /// Bumped by every change to the volunteer or to their assignments.
    pub version: i64,
}

impl Volunteer {
    /// `volunteers/{id}`.
    pub fn name(&self) -> String {
        format!("volunteers/{}", self.id)
    }

    /// Whether they take offers and claims at `now` (a pause whose end has passed is over).
    pub fn is_active(&self, now: Micros) -> bool {
        match self.state {
            VolunteerState::Active => true,
            VolunteerState::Paused => self.pause_until.is_some_and(|u| u <= now),
            VolunteerState::Retired => false,
        }
    }

    /// How residents are told who came: the display name, with consent.
    pub fn public_name(&self) -> String {
        if self.profile.consent.show_name {
            self.profile.display_name.clone()
        } else {
            "Volunteer".into()
        }
    }
}

/// A volunteer team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    /// Id.
    pub id: String,
    /// Request id.
    pub request_id: String,
    /// Who created it.
    pub created_by: String,
    /// Name.
    pub display_name: String,
    /// Kind.
    pub kind: TeamKind,
    /// Where it works.
    pub place: Place,
    /// Leader volunteer id.
    pub leader: Option<String>,
    /// Skills.
    pub skills: Vec<String>,
    /// About it.
    pub description: String,
    /// State.
    pub state: BodyState,
    /// Created.
    pub create_time: Micros,
    /// Changed.
    pub update_time: Micros,
    /// Version.
    pub version: i64,
}

impl Team {
    /// `teams/{id}`.
    pub fn name(&self) -> String {
        format!("teams/{}", self.id)
    }
}

/// A partner organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organisation {
    /// Id.
    pub id: String,
    /// Request id.
    pub request_id: String,
    /// Who registered it.
    pub created_by: String,
    /// Name.
    pub display_name: String,
    /// Kind.
    pub kind: OrganisationKind,
    /// Community codes it partners with.
    pub communities: Vec<String>,
    /// Liaison.
    pub contact: Contact,
    /// What it provides.
    pub skills: Vec<String>,
    /// About it.
    pub description: String,
    /// State.
    pub state: BodyState,
    /// Created.
    pub create_time: Micros,
    /// Changed.
    pub update_time: Micros,
    /// Version.
    pub version: i64,
}

impl Organisation {
    /// `organisations/{id}`.
    pub fn name(&self) -> String {
        format!("organisations/{}", self.id)
    }
}

/// A skill a need requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRequirement {
    /// The code.
    pub skill: String,
    /// A valid credential is required.
    pub credential_required: bool,
}

/// A need's editable facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedSpec {
    /// Title.
    pub title: String,
    /// Details.
    pub description: String,
    /// Where.
    pub place: Place,
    /// Address of the spot.
    pub address: String,
    /// Coordinates of the spot.
    pub location: Option<LatLng>,
    /// Catalogue item.
    pub category: String,
    /// Skills required.
    pub skills: Vec<SkillRequirement>,
    /// Languages (any of).
    pub languages: Vec<String>,
    /// Window start.
    pub start: Micros,
    /// Window end.
    pub end: Micros,
    /// Minutes per person.
    pub effort_minutes: u32,
    /// People needed.
    pub people_needed: u32,
    /// Claim policy.
    pub claim_policy: ClaimPolicy,
    /// Who may claim or be matched (empty: anyone).
    pub open_to: Vec<AssigneeKind>,
    /// Party members only.
    pub party_members_only: bool,
    /// Urgency.
    pub urgency: Urgency,
}

impl NeedSpec {
    /// Whether `kind` may claim or be matched.
    pub fn open_to(&self, kind: AssigneeKind) -> bool {
        self.open_to.is_empty() || self.open_to.contains(&kind)
    }
}

/// An item of a community's menu.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Need {
    /// Id.
    pub id: String,
    /// Request id.
    pub request_id: String,
    /// Source.
    pub source: NeedSource,
    /// The case name (`cases/{id}`), if from one.
    pub case: Option<String>,
    /// Facts.
    pub spec: NeedSpec,
    /// State.
    pub state: NeedState,
    /// Menu id, once published on one.
    pub menu: Option<String>,
    /// People of accepted and done assignments.
    pub people_accepted: u32,
    /// People of offers and pending claims.
    pub people_pending: u32,
    /// People of done assignments.
    pub people_done: u32,
    /// Who posted it.
    pub posted_by: String,
    /// Posted.
    pub create_time: Micros,
    /// Changed.
    pub update_time: Micros,
    /// Published.
    pub publish_time: Option<Micros>,
    /// Why cancelled.
    pub cancel_reason: String,
    /// Version.
    pub version: i64,
}

impl Need {
    /// `needs/{id}`.
    pub fn name(&self) -> String {
        format!("needs/{}", self.id)
    }

    /// Places neither taken nor awaiting an answer.
    pub fn places_left(&self) -> u32 {
        self.spec
            .people_needed
            .saturating_sub(self.people_accepted + self.people_pending)
    }

    /// The state its counts imply (for OPEN, FILLED and DONE needs).
    pub fn settled_state(&self) -> NeedState {
        match self.state {
            NeedState::Draft | NeedState::Cancelled => self.state,
            _ if self.people_done >= self.spec.people_needed => NeedState::Done,
            _ if self.places_left() == 0 => NeedState::Filled,
            _ => NeedState::Open,
        }
    }
}

/// A published menu.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Menu {
    /// Id.
    pub id: String,
    /// Request id.
    pub request_id: String,
    /// Community code.
    pub community: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Need ids.
    pub needs: Vec<String>,
    /// Who published it.
    pub published_by: String,
    /// When.
    pub publish_time: Micros,
}

/// One part of a match score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// What it measures.
    pub kind: ReasonKind,
    /// 0 to 1.
    pub value: f64,
    /// Its weight.
    pub weight: f64,
    /// In words.
    pub summary: String,
}

/// A resident's rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// How satisfied.
    pub satisfaction: Satisfaction,
    /// What they said.
    pub comment: String,
    /// How collected.
    pub channel: RatingChannel,
    /// Who recorded it.
    pub rated_by: String,
    /// When.
    pub rate_time: Micros,
}

/// Who does (part of) a need, and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Id.
    pub id: String,
    /// The claim's request id (empty for offers).
    pub request_id: String,
    /// Need id.
    pub need_id: String,
    /// Case name, if the need came from one.
    pub case: Option<String>,
    /// The need's place.
    pub place: Place,
    /// The need's title.
    pub need_title: String,
    /// The need's window start.
    pub start: Micros,
    /// The need's window end.
    pub end: Micros,
    /// Who does it.
    pub assignee: Assignee,
    /// How they are shown.
    pub assignee_display_name: String,
    /// Team credited.
    pub team: Option<String>,
    /// Organisation credited.
    pub organisation: Option<String>,
    /// How it came about.
    pub origin: AssignmentOrigin,
    /// State.
    pub state: AssignmentState,
    /// People it covers.
    pub people: u32,
    /// Minutes per person expected.
    pub effort_minutes: u32,
    /// Match score when offered.
    pub score: f64,
    /// Its parts.
    pub reasons: Vec<Reason>,
    /// The assignment it replaces.
    pub previous: Option<String>,
    /// Plan or note.
    pub note: String,
    /// Who made it.
    pub created_by: String,
    /// Offer due by.
    pub offer_expire_time: Option<Micros>,
    /// Made.
    pub create_time: Micros,
    /// Answered.
    pub respond_time: Option<Micros>,
    /// Done.
    pub complete_time: Option<Micros>,
    /// Minutes logged.
    pub minutes: u32,
    /// People who took part.
    pub participants: u32,
    /// What was done.
    pub completion_note: String,
    /// The resident's rating.
    pub rating: Option<Rating>,
    /// Why it ended.
    pub end_reason: String,
    /// Changed.
    pub update_time: Micros,
    /// Version.
    pub version: i64,
}

impl Assignment {
    /// `assignments/{id}`.
    pub fn name(&self) -> String {
        format!("assignments/{}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_assignee_names() {
        assert!(is_code("first-aid") && is_code("zh") && !is_code("-x") && !is_code("A"));
        let id = uuid::Uuid::now_v7().to_string();
        let a = Assignee::parse(&format!("teams/{id}")).unwrap();
        assert_eq!(a.kind, AssigneeKind::Team);
        assert_eq!(a.name(), format!("teams/{id}"));
        assert!(Assignee::parse("teams/not-a-uuid").is_none());
        assert!(Assignee::parse(&format!("cases/{id}")).is_none());
    }
}
