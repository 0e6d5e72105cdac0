//! Requests in, domain values out: every field checked, every problem reported at once as a
//! field violation (INVALID_ARGUMENT), nothing written for a refused request.

use minqing_kit::{error::FieldViolations, time::from_timestamp};
use minqing_proto::minqing::{intake::v1 as pb, r#type::v1 as tpb};

use crate::{
    catalogue::Catalogue,
    domain::{
        Attachment, Channel, ChannelDetails, Contact, ContactMethod, LatLng, Reporter, Submission,
        Urgency,
    },
    places::{Gazetteer, PlaceInput},
};

/// Limits of DESIGN.md and the contract.
pub const MAX_TITLE: usize = 200;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 4_000;
/// Most attachments per request.
pub const MAX_ATTACHMENTS: usize = 20;
/// Longest request id.
pub const MAX_REQUEST_ID: usize = 128;

/// Checks a free text: length in characters within `min..=max`, no control characters
/// (newlines and tabs allowed where `multiline`). Returns it trimmed.
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
    let bad_control = trimmed
        .chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\r' || c == '\t')));
    v.check(bad_control, field, "must not contain control characters");
    trimmed.to_string()
}

/// Checks a request id: 1 to 128 printable ASCII characters.
pub fn request_id(v: &mut FieldViolations, field: &str, value: &str) {
    v.check(
        value.is_empty()
            || value.len() > MAX_REQUEST_ID
            || !value.bytes().all(|b| b.is_ascii_graphic()),
        field,
        "must be 1 to 128 printable ASCII characters without spaces",
    );
}

fn phone(v: &mut FieldViolations, field: &str, value: &str) -> String {
    let value = value.trim();
    let digits = value.strip_prefix('+').unwrap_or(value);
    let ok = (5..=20).contains(&value.len())
        && !digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ' ');
    v.check(
        !ok,
        field,
        "must be 5 to 20 characters: digits, spaces or '-', with an optional leading '+'",
    );
    value.to_string()
}

fn attachments(
    v: &mut FieldViolations,
    prefix: &str,
    items: Vec<tpb::Attachment>,
) -> Vec<Attachment> {
    v.check(
        items.len() > MAX_ATTACHMENTS,
        prefix,
        format!("at most {MAX_ATTACHMENTS} attachments"),
    );
    items
        .into_iter()
        .take(MAX_ATTACHMENTS)
        .enumerate()
        .map(|(i, a)| {
            let field = |f: &str| format!("{prefix}[{i}].{f}");
            let uri = text(v, &field("uri"), &a.uri, 1, 2_000, false);
            let uri_ok = uri.starts_with("https://")
                || uri.starts_with("s3://")
                || uri
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            v.check(
                !uri.is_empty() && !uri_ok,
                field("uri"),
                "must be an https:// or s3:// address, or sha256:<64 hex digits>",
            );
            let media_type = text(v, &field("media_type"), &a.media_type, 0, 100, false);
            v.check(
                !media_type.is_empty()
                    && !media_type
                        .split_once('/')
                        .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty()),
                field("media_type"),
                "must look like type/subtype, e.g. image/jpeg",
            );
            Attachment {
                uri,
                media_type,
                description: text(v, &field("description"), &a.description, 0, 200, false),
            }
        })
        .collect()
}

fn location(v: &mut FieldViolations, prefix: &str, l: Option<tpb::LatLng>) -> Option<LatLng> {
    let l = l?;
    let lat_ok = l.latitude.is_finite() && (-90.0..=90.0).contains(&l.latitude);
    let lng_ok = l.longitude.is_finite() && (-180.0..=180.0).contains(&l.longitude);
    v.check(!lat_ok, format!("{prefix}.latitude"), "must be -90 to 90");
    v.check(
        !lng_ok,
        format!("{prefix}.longitude"),
        "must be -180 to 180",
    );
    (lat_ok && lng_ok).then_some(LatLng {
        latitude: l.latitude,
        longitude: l.longitude,
    })
}

fn reporter(v: &mut FieldViolations, r: Option<pb::Reporter>) -> Reporter {
    let Some(r) = r else {
        v.add(
            "reporter",
            "required (set reporter.anonymous for anonymous reports)",
        );
        return Reporter::default();
    };
    let Some(c) = r.contact else {
        v.check(
            !r.anonymous,
            "reporter.contact",
            "required unless the report is anonymous",
        );
        return Reporter {
            anonymous: r.anonymous,
            contact: None,
        };
    };
    if r.anonymous {
        let personal = !(c.name.is_empty()
            && c.phone.is_empty()
            && c.postal_address.is_empty()
            && c.online_address.is_empty());
        v.check(
            personal,
            "reporter.contact",
            "anonymous reports carry no name, phone or address",
        );
    }
    let method = match c.preferred_method {
        0 => None,
        m => {
            let method = ContactMethod::from_wire(m);
            v.check(
                method.is_none(),
                "reporter.contact.preferred_method",
                "unknown contact method",
            );
            method
        }
    };
    let name = text(
        v,
        "reporter.contact.name",
        &c.name,
        usize::from(!r.anonymous),
        100,
        false,
    );
    let phone = if c.phone.is_empty() {
        String::new()
    } else {
        phone(v, "reporter.contact.phone", &c.phone)
    };
    let postal_address = text(
        v,
        "reporter.contact.postal_address",
        &c.postal_address,
        0,
        500,
        false,
    );
    let online_address = text(
        v,
        "reporter.contact.online_address",
        &c.online_address,
        0,
        200,
        false,
    );
    let visit_note = text(
        v,
        "reporter.contact.visit_note",
        &c.visit_note,
        0,
        500,
        false,
    );
    if !r.anonymous {
        v.check(
            method.is_none() && c.preferred_method == 0,
            "reporter.contact.preferred_method",
            "required: how the resident wants to hear back",
        );
        match method {
            Some(ContactMethod::Phone) => v.check(
                phone.is_empty(),
                "reporter.contact.phone",
                "required when the resident wants a phone call",
            ),
            Some(ContactMethod::Letter) => v.check(
                postal_address.is_empty(),
                "reporter.contact.postal_address",
                "required when the resident wants a letter",
            ),
            Some(ContactMethod::Online) => v.check(
                online_address.is_empty(),
                "reporter.contact.online_address",
                "required when the resident wants an online reply",
            ),
            Some(ContactMethod::FaceToFace) | None => {}
        }
        v.check(
            c.needs_appointed_visit && phone.is_empty() && postal_address.is_empty(),
            "reporter.contact.needs_appointed_visit",
            "an appointed visit needs a phone number or an address to arrange it",
        );
    }
    Reporter {
        anonymous: r.anonymous,
        contact: Some(Contact {
            name,
            phone,
            postal_address,
            online_address,
            preferred_method: method,
            needs_appointed_visit: c.needs_appointed_visit,
            visit_note,
        }),
    }
}

fn channel_details(
    v: &mut FieldViolations,
    channel: Option<Channel>,
    d: Option<pb::ChannelDetails>,
) -> ChannelDetails {
    let d = d.unwrap_or_default();
    let f = |name: &str| format!("channel_details.{name}");
    let details = ChannelDetails {
        visiting_worker: text(v, &f("visiting_worker"), &d.visiting_worker, 0, 100, false),
        deputy: text(v, &f("deputy"), &d.deputy, 0, 100, false),
        liaison_station: text(v, &f("liaison_station"), &d.liaison_station, 0, 100, false),
        window: text(v, &f("window"), &d.window, 0, 100, false),
        external_ref: text(v, &f("external_ref"), &d.external_ref, 0, 100, false),
    };
    match channel {
        Some(Channel::DoorToDoor) => v.check(
            details.visiting_worker.is_empty(),
            f("visiting_worker"),
            "required for door-to-door cases: who visited",
        ),
        Some(Channel::LiaisonStation) => {
            v.check(
                details.deputy.is_empty(),
                f("deputy"),
                "required for liaison-station cases: the deputy who received the resident",
            );
            v.check(
                details.liaison_station.is_empty(),
                f("liaison_station"),
                "required for liaison-station cases",
            );
        }
        _ => {}
    }
    details
}

/// Checks a submission against the catalogue and gazetteer. `now` bounds `occur_time`.
pub fn submit(
    req: pb::SubmitCaseRequest,
    catalogue: &Catalogue,
    gazetteer: &Gazetteer,
    now: i64,
) -> Result<Submission, tonic::Status> {
    let mut v = FieldViolations::new();
    request_id(&mut v, "request_id", &req.request_id);
    let channel = Channel::from_wire(req.channel);
    v.check(
        channel.is_none(),
        "channel",
        if req.channel == 0 {
            "required"
        } else {
            "unknown channel"
        },
    );
    let channel_details = channel_details(&mut v, channel, req.channel_details);
    let reporter = reporter(&mut v, req.reporter);
    let (place, location, address) = match req.place {
        None => {
            v.add("place", "required");
            (None, None, String::new())
        }
        Some(p) => {
            let input = PlaceInput {
                district: p.district,
                street: p.street,
                community: p.community,
                grid: p.grid,
                building: p.building,
            };
            let place = gazetteer.resolve(&input, &mut v, "place");
            let location = location(&mut v, "place.location", p.location);
            let address = text(&mut v, "place.address", &p.address, 0, 500, false);
            (place, location, address)
        }
    };
    let category = req.category.trim().to_string();
    if category.is_empty() {
        v.add("category", "required: a catalogue item id");
    } else if catalogue.item(&category).is_none() {
        v.add("category", format!("unknown catalogue item {category}"));
    }
    let title = text(&mut v, "title", &req.title, 1, MAX_TITLE, false);
    let description = text(
        &mut v,
        "description",
        &req.description,
        1,
        MAX_DESCRIPTION,
        true,
    );
    let attachments = attachments(&mut v, "attachments", req.attachments);
    let urgency = match req.urgency {
        0 => Some(Urgency::Normal),
        u => Urgency::from_wire(u),
    };
    v.check(urgency.is_none(), "urgency", "unknown urgency");
    let occur_time = match req.occur_time {
        None => None,
        Some(ts) => match from_timestamp(&ts) {
            None => {
                v.add("occur_time", "not a valid timestamp");
                None
            }
            Some(t) => {
                // Five minutes of clock skew between the caller and us is tolerated.
                v.check(
                    t > now + 300_000_000,
                    "occur_time",
                    "must not be in the future",
                );
                Some(t)
            }
        },
    };
    v.finish()?;
    Ok(Submission {
        channel: channel.expect("checked"),
        channel_details,
        reporter,
        place: place.expect("checked"),
        location,
        address,
        category,
        title,
        description,
        attachments,
        urgency: urgency.expect("checked"),
        occur_time,
    })
}

/// Parses `cases/{id}`.
pub fn case_name(v: &mut FieldViolations, field: &str, name: &str) -> Option<String> {
    match name.strip_prefix("cases/") {
        Some(id) if uuid::Uuid::parse_str(id).is_ok() => Some(id.to_string()),
        _ => {
            v.add(field, "must be cases/{case_id}");
            None
        }
    }
}

/// Parses `clusters/{id}`.
pub fn cluster_name(v: &mut FieldViolations, field: &str, name: &str) -> Option<String> {
    match name.strip_prefix("clusters/") {
        Some(id) if uuid::Uuid::parse_str(id).is_ok() => Some(id.to_string()),
        _ => {
            v.add(field, "must be clusters/{cluster_id}");
            None
        }
    }
}

/// Checks a supplement.
pub fn supplement(
    req: pb::SupplementCaseRequest,
) -> Result<(String, String, Vec<Attachment>), tonic::Status> {
    let mut v = FieldViolations::new();
    let id = case_name(&mut v, "name", &req.name);
    request_id(&mut v, "request_id", &req.request_id);
    let note = text(&mut v, "note", &req.note, 0, MAX_DESCRIPTION, true);
    let attachments = attachments(&mut v, "attachments", req.attachments);
    v.check(
        note.is_empty() && attachments.is_empty(),
        "note",
        "a note or at least one attachment is required",
    );
    v.finish()?;
    Ok((id.expect("checked"), note, attachments))
}
