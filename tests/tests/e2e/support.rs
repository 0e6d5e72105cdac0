//! Request builders shared by the tests.

use minqing_proto::minqing::{
    intake::v1::{self as pb, intake_client::IntakeClient},
    r#type::v1 as tpb,
};
use minqing_tests::Authed;

pub const BUILDING: &str = "620102001001-g01-b01";
pub const OTHER_BUILDING: &str = "620102001001-g02-b01";
pub const GRID: &str = "620102001001-g01";
pub const COMMUNITY: &str = "620102001001";
pub const STREET: &str = "620102001";
pub const DISTRICT: &str = "620102";
pub const OTHER_DISTRICT_BUILDING: &str = "620103001001-g01-b01";
pub const STREETLIGHTS: &str = "onsite-environment-02";
pub const ELDERLY_VISITS: &str = "onsite-care-01";

/// A valid submission from the hotline by a named resident who wants a phone call.
pub fn submission(request_id: &str) -> pb::SubmitCaseRequest {
    pb::SubmitCaseRequest {
        request_id: request_id.into(),
        channel: tpb::Channel::Hotline as i32,
        channel_details: None,
        reporter: Some(pb::Reporter {
            anonymous: false,
            contact: Some(tpb::Contact {
                name: "张桂兰".into(),
                phone: "13909310001".into(),
                preferred_method: tpb::ContactMethod::Phone as i32,
                ..Default::default()
            }),
        }),
        place: Some(tpb::Place {
            building: BUILDING.into(),
            ..Default::default()
        }),
        category: STREETLIGHTS.into(),
        title: "路灯不亮".into(),
        description: "3号楼门口的路灯不亮了，晚上很黑".into(),
        attachments: vec![],
        urgency: tpb::Urgency::Normal as i32,
        occur_time: None,
    }
}

/// The field names of an INVALID_ARGUMENT's violations, sorted.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let mut fields: Vec<String> = status
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// A request carrying a W3C traceparent.
pub fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    req
}

/// A case's timeline, as its reader sees it.
pub async fn timeline_of(intake: &mut IntakeClient<Authed>, case: &str) -> pb::CaseTimeline {
    intake
        .get_case_timeline(pb::GetCaseTimelineRequest { name: case.into() })
        .await
        .unwrap()
        .into_inner()
}
