//! Supervision end to end: the working-day calendar read, counted on and edited over gRPC.

use minqing_kit::{auth::Role, backend_tests, db::Backend};
use minqing_proto::minqing::supervision::v1 as pb;
use minqing_tests::Suite;
use tonic::Code;

use crate::support::*;

fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

async fn calendars_are_data_counted_on_and_edited(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let admin = suite
        .token("district", Role::DistrictSystem, None, None)
        .await;
    let mut cal = suite.calendars(&staff).await;

    // The sample is loaded: National Day 2026 and its make-up Sunday.
    let lanzhou = cal
        .get_calendar(pb::GetCalendarRequest {
            name: "calendars/6201".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let day = |d: &str| lanzhou.special_days.iter().find(|s| s.date == d).cloned();
    assert_eq!(day("2026-10-01").unwrap().kind, pb::DayKind::Holiday as i32);
    assert_eq!(day("2026-09-20").unwrap().kind, pb::DayKind::Workday as i32);
    assert_eq!(lanzhou.working_hours.len(), 2);

    // 30 Sep 2026 + 1 working day skips the National Day week (CST = UTC+8).
    let due = cal
        .compute_deadline(pb::ComputeDeadlineRequest {
            name: "calendars/6201".into(),
            start_time: Some(ts("2026-09-30T10:00:00+08:00")),
            working_days: 1,
            end_time: Some(ts("2026-10-08T10:00:00+08:00")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(due.due_time, Some(ts("2026-10-08T17:30:00+08:00")));
    assert_eq!(due.working_minutes, 6 * 60 + 60);
    assert_eq!(due.working_days_between, 1);

    // Only district systems edit; bad input is refused field by field and changes nothing.
    let denied = cal
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/6201".into(),
            remove_dates: vec!["2026-10-01".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut edit = suite.calendars(&admin).await;
    let bad = edit
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/62x".into(),
            working_hours: vec![pb::WorkingSpan {
                start: "9:00".into(),
                end: "12:00".into(),
            }],
            upsert_days: vec![pb::SpecialDay {
                date: "2026-13-01".into(),
                kind: 0,
                description: String::new(),
            }],
            remove_dates: vec![],
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        [
            "name",
            "upsert_days[0].date",
            "upsert_days[0].description",
            "upsert_days[0].kind",
            "working_hours[0].start"
        ]
    );
    // A local holiday on Monday 30 Nov 2026 moves a deadline.
    let edited = edit
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/6201".into(),
            upsert_days: vec![pb::SpecialDay {
                date: "2026-11-30".into(),
                kind: pb::DayKind::Holiday as i32,
                description: "city anniversary".into(),
            }],
            etag: lanzhou.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(edited.etag, lanzhou.etag);
    let stale = edit
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/6201".into(),
            remove_dates: vec!["2026-11-30".into()],
            etag: lanzhou.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let due = cal
        .compute_deadline(pb::ComputeDeadlineRequest {
            name: "calendars/6201".into(),
            start_time: Some(ts("2026-11-27T10:00:00+08:00")),
            working_days: 1,
            end_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(due.due_time, Some(ts("2026-12-01T17:30:00+08:00")));
    let missing = cal
        .get_calendar(pb::GetCalendarRequest {
            name: "calendars/9999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    suite.stop().await;
}

backend_tests!(calendars_are_data_counted_on_and_edited);
