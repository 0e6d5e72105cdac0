//! Who is calling: bearer tokens naming a principal, a role and a scope.
//!
//! The [`AuthLayer`] reads `authorization: Bearer <token>` on every call and puts a
//! [`Caller`] in the request's extensions: the verified [`Principal`], or nobody when no
//! token was sent. A token that is sent but not valid is refused at once (UNAUTHENTICATED).
//! Handlers then ask [`caller`] (UNAUTHENTICATED for nobody) and [`Principal::require`]
//! (PERMISSION_DENIED for a role that may not) — or [`optional_caller`] for public methods.

mod layer;
mod service;
mod store;

pub use layer::{AuthLayer, AuthService};
pub use service::TokensService;
pub use store::{NewToken, TokenRecord, TokenStore};

use tonic::{Request, Status};

use crate::error::{permission_denied, unauthenticated};
use minqing_proto::minqing::auth::v1 as pb;

/// The roles of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs the installation; allowed everything.
    CityAdmin,
    /// A district's own system.
    DistrictSystem,
    /// Service-hall window or call-centre staff.
    WindowStaff,
    /// Grid leader or member.
    GridWorker,
    /// An outside unit.
    PartnerUnit,
    /// A deputy.
    Deputy,
    /// A volunteer.
    Volunteer,
    /// An appointed supervisor.
    Supervisor,
    /// Community staff coordinating volunteers.
    CommunityStaff,
    /// A service of the suite.
    Service,
}

impl Role {
    /// Every role, in proto order.
    pub const ALL: [Role; 10] = [
        Role::CityAdmin,
        Role::DistrictSystem,
        Role::WindowStaff,
        Role::GridWorker,
        Role::PartnerUnit,
        Role::Deputy,
        Role::Volunteer,
        Role::Supervisor,
        Role::CommunityStaff,
        Role::Service,
    ];

    /// The stored and displayed name, e.g. `window_staff`.
    pub fn slug(self) -> &'static str {
        match self {
            Role::CityAdmin => "city_admin",
            Role::DistrictSystem => "district_system",
            Role::WindowStaff => "window_staff",
            Role::GridWorker => "grid_worker",
            Role::PartnerUnit => "partner_unit",
            Role::Deputy => "deputy",
            Role::Volunteer => "volunteer",
            Role::Supervisor => "supervisor",
            Role::CommunityStaff => "community_staff",
            Role::Service => "service",
        }
    }

    /// The role named by `slug`.
    pub fn from_slug(slug: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.slug() == slug)
    }

    /// The wire value.
    pub fn to_proto(self) -> pb::Role {
        match self {
            Role::CityAdmin => pb::Role::CityAdmin,
            Role::DistrictSystem => pb::Role::DistrictSystem,
            Role::WindowStaff => pb::Role::WindowStaff,
            Role::GridWorker => pb::Role::GridWorker,
            Role::PartnerUnit => pb::Role::PartnerUnit,
            Role::Deputy => pb::Role::Deputy,
            Role::Volunteer => pb::Role::Volunteer,
            Role::Supervisor => pb::Role::Supervisor,
            Role::CommunityStaff => pb::Role::CommunityStaff,
            Role::Service => pb::Role::Service,
        }
    }

    /// The role for a wire value; `None` for UNSPECIFIED or unknown values.
    pub fn from_proto(value: i32) -> Option<Role> {
        match pb::Role::try_from(value).ok()? {
            pb::Role::Unspecified => None,
            pb::Role::CityAdmin => Some(Role::CityAdmin),
            pb::Role::DistrictSystem => Some(Role::DistrictSystem),
            pb::Role::WindowStaff => Some(Role::WindowStaff),
            pb::Role::GridWorker => Some(Role::GridWorker),
            pb::Role::PartnerUnit => Some(Role::PartnerUnit),
            pb::Role::Deputy => Some(Role::Deputy),
            pb::Role::Volunteer => Some(Role::Volunteer),
            pb::Role::Supervisor => Some(Role::Supervisor),
            pb::Role::CommunityStaff => Some(Role::CommunityStaff),
            pb::Role::Service => Some(Role::Service),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub token_id: String,
    /// Who holds it.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// A place code limiting it to cases there.
    pub place_scope: Option<String>,
    /// A unit (or station, or volunteer record) it speaks for.
    pub unit_scope: Option<String>,
}

impl Principal {
    /// `Ok` when the principal has one of `roles` (a city admin always has).
    pub fn require(&self, roles: &[Role]) -> Result<&Self, Status> {
        if self.role == Role::CityAdmin || roles.contains(&self.role) {
            Ok(self)
        } else {
            Err(permission_denied(
                "ROLE_NOT_ALLOWED",
                format!("the {} role may not do this", self.role.slug()),
            ))
        }
    }

    /// Whether this principal has one of `roles` (a city admin always has).
    pub fn is(&self, roles: &[Role]) -> bool {
        self.role == Role::CityAdmin || roles.contains(&self.role)
    }

    /// The actor recorded with events: `role:name`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.slug(), self.name)
    }

    /// Whether a resource at a place whose codes (every level) are `place_codes` is within
    /// this principal's place scope.
    pub fn covers_place<'a>(&self, mut place_codes: impl Iterator<Item = &'a str>) -> bool {
        match &self.place_scope {
            None => true,
            Some(scope) => place_codes.any(|c| c == scope),
        }
    }
}

/// What the auth layer found: a principal, or nobody.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// The verified caller, or UNAUTHENTICATED when the call carried no token (or passed no
/// auth layer at all: fail closed).
pub fn caller<T>(request: &Request<T>) -> Result<&Principal, Status> {
    optional_caller(request)
        .ok_or_else(|| unauthenticated("this call needs a bearer token (authorization: Bearer …)"))
}

/// The verified caller, if any (for public methods).
pub fn optional_caller<T>(request: &Request<T>) -> Option<&Principal> {
    request
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.0.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, place: Option<&str>) -> Principal {
        Principal {
            token_id: "t".into(),
            name: "p".into(),
            role,
            place_scope: place.map(str::to_owned),
            unit_scope: None,
        }
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::from_slug(role.slug()), Some(role));
            assert_eq!(Role::from_proto(role.to_proto() as i32), Some(role));
        }
        assert_eq!(Role::from_proto(0), None);
        assert_eq!(Role::from_proto(999), None);
    }

    #[test]
    fn admin_may_do_anything_others_only_their_roles() {
        assert!(
            principal(Role::CityAdmin, None)
                .require(&[Role::Deputy])
                .is_ok()
        );
        let denied = principal(Role::Volunteer, None)
            .require(&[Role::WindowStaff])
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn place_scope_matches_any_level() {
        let p = principal(Role::WindowStaff, Some("620102001"));
        assert!(p.covers_place(["620102", "620102001", "620102001001"].into_iter()));
        assert!(!p.covers_place(["620103", "620103001"].into_iter()));
        assert!(principal(Role::WindowStaff, None).covers_place(std::iter::empty()));
    }

    #[test]
    fn requests_without_a_caller_are_unauthenticated() {
        let req = Request::new(());
        assert_eq!(
            caller(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
