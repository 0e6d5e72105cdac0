//! Domain values out to the wire.

use minqing_kit::time::to_timestamp;
use minqing_proto::minqing::{intake::v1 as pb, r#type::v1 as tpb};

use crate::{
    catalogue::Item,
    domain::{Attachment, Case, Cluster, Level},
    places::Entry,
};

/// Whether the caller sees the reporter's personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personal {
    /// Shown.
    Shown,
    /// Cleared: name, phone and addresses are empty.
    Hidden,
}

/// A case on the wire.
pub fn case(c: &Case, personal: Personal) -> pb::Case {
    let s = &c.submission;
    let contact = s.reporter.contact.as_ref().map(|k| {
        let shown = personal == Personal::Shown;
        let keep = |v: &str| if shown { v.to_string() } else { String::new() };
        tpb::Contact {
            name: keep(&k.name),
            phone: keep(&k.phone),
            postal_address: keep(&k.postal_address),
            online_address: keep(&k.online_address),
            preferred_method: k.preferred_method.map_or(0, |m| m.wire()),
            needs_appointed_visit: k.needs_appointed_visit,
            visit_note: keep(&k.visit_note),
        }
    });
    pb::Case {
        name: c.name(),
        request_id: c.request_id.clone(),
        channel: s.channel.wire(),
        channel_details: Some(pb::ChannelDetails {
            visiting_worker: s.channel_details.visiting_worker.clone(),
            deputy: s.channel_details.deputy.clone(),
            liaison_station: s.channel_details.liaison_station.clone(),
            window: s.channel_details.window.clone(),
            external_ref: s.channel_details.external_ref.clone(),
        }),
        reporter: Some(pb::Reporter {
            anonymous: s.reporter.anonymous,
            contact,
        }),
        place: Some(tpb::Place {
            district: s.place.district.clone(),
            street: s.place.street.clone(),
            community: s.place.community.clone(),
            grid: s.place.grid.clone(),
            building: s.place.building.clone(),
            location: s.location.map(|l| tpb::LatLng {
                latitude: l.latitude,
                longitude: l.longitude,
            }),
            address: s.address.clone(),
        }),
        category: s.category.clone(),
        title: s.title.clone(),
        description: s.description.clone(),
        attachments: attachments(&s.attachments),
        urgency: s.urgency.wire(),
        occur_time: s.occur_time.map(to_timestamp),
        state: c.state.wire(),
        disposition: c.disposition.map_or(0, |d| d.wire()),
        handling_unit: c.handling_unit.clone(),
        due_time: c.due_time.map(to_timestamp),
        cluster: c
            .cluster
            .as_ref()
            .map(|id| format!("clusters/{id}"))
            .unwrap_or_default(),
        recorded_by: c.recorded_by.clone(),
        create_time: Some(to_timestamp(c.create_time)),
        update_time: Some(to_timestamp(c.update_time)),
        supplement_count: c.supplement_count,
        withdraw_reason: c.withdraw_reason.clone(),
        etag: c.etag(),
    }
}

/// Attachments on the wire.
pub fn attachments(items: &[Attachment]) -> Vec<tpb::Attachment> {
    items
        .iter()
        .map(|a| tpb::Attachment {
            uri: a.uri.clone(),
            media_type: a.media_type.clone(),
            description: a.description.clone(),
        })
        .collect()
}

/// A cluster on the wire.
pub fn cluster(c: &Cluster) -> pb::Cluster {
    pb::Cluster {
        name: format!("clusters/{}", c.id),
        category: c.category.clone(),
        cases: c.cases.iter().map(|id| format!("cases/{id}")).collect(),
        reason: c.reason.clone(),
        create_time: Some(to_timestamp(c.create_time)),
    }
}

/// A catalogue item on the wire.
pub fn item(i: &Item) -> pb::CatalogueItem {
    pb::CatalogueItem {
        id: i.id.clone(),
        subclass: i.subclass.clone(),
        mode: i.mode.clone(),
        name: i.name.clone(),
        name_en: i.name_en.clone(),
        description: i.description.clone(),
        procedure: i.procedure.clone(),
        legal_basis: i.legal_basis.clone(),
        service_standard: i.service_standard.clone(),
        time_limit_working_days: i.time_limit_working_days as i32,
        fees: i.fees.clone(),
        required_documents: i.required_documents.clone(),
        responsible_unit: i.responsible_unit.clone(),
        responsible_role: i.responsible_role.clone(),
        default_disposition: i.default_disposition.wire(),
        volunteer_suitable: i.volunteer_suitable,
        keywords: i.keywords.clone(),
    }
}

/// A gazetteer entry on the wire.
pub fn place(e: &Entry) -> tpb::PlaceEntry {
    tpb::PlaceEntry {
        code: e.code.clone(),
        level: level(e.level) as i32,
        parent: e.parent.clone(),
        name: e.name.clone(),
        name_en: e.name_en.clone(),
        location: e
            .latitude
            .zip(e.longitude)
            .map(|(latitude, longitude)| tpb::LatLng {
                latitude,
                longitude,
            }),
    }
}

fn level(l: Level) -> tpb::PlaceLevel {
    match l {
        Level::District => tpb::PlaceLevel::District,
        Level::Street => tpb::PlaceLevel::Street,
        Level::Community => tpb::PlaceLevel::Community,
        Level::Grid => tpb::PlaceLevel::Grid,
        Level::Building => tpb::PlaceLevel::Building,
    }
}
