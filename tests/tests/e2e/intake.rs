//! Intake end to end: submission from every channel, idempotency, validation, auth and
//! scopes, supplements and withdrawal, the timeline, clusters, pages, the public catalogue,
//! and the events it emits.

use std::{collections::HashSet, time::Duration};

use minqing_kit::{auth::Role, backend_tests, db::Backend, testing::eventually};
use minqing_proto::minqing::{
    events::v1 as events_pb,
    intake::v1::{self as pb},
    r#type::v1 as tpb,
};
use minqing_tests::{Suite, intake_only};
use prost::{Message, Name};
use tonic::Code;

use crate::support::*;

async fn count(suite: &Suite, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(suite.db("intake").pool())
        .await
        .unwrap()
}

async fn every_channel_is_accepted_and_readable(backend: Backend) {
    // Clustering off: these reports are alike on purpose, and this test reads them unchanged.
    let Some(suite) = Suite::start_opts(backend, |o| {
        intake_only(o);
        o.intake.clusters.enabled = false;
    })
    .await
    else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let channels = [
        (tpb::Channel::Hotline, pb::ChannelDetails::default()),
        (tpb::Channel::Mailbox, Default::default()),
        (tpb::Channel::Web, Default::default()),
        (tpb::Channel::App, Default::default()),
        (tpb::Channel::ContactCard, Default::default()),
        (
            tpb::Channel::DoorToDoor,
            pb::ChannelDetails {
                visiting_worker: "grid-worker-li".into(),
                ..Default::default()
            },
        ),
        (
            tpb::Channel::LiaisonStation,
            pb::ChannelDetails {
                deputy: "deputy-wang".into(),
                liaison_station: "station-zhangye".into(),
                ..Default::default()
            },
        ),
        (tpb::Channel::CallCentre, Default::default()),
        (
            tpb::Channel::ServiceHall,
            pb::ChannelDetails {
                window: "window-07".into(),
                ..Default::default()
            },
        ),
        (tpb::Channel::GridApp, Default::default()),
        (tpb::Channel::GroupChat, Default::default()),
        (tpb::Channel::CompoundStation, Default::default()),
    ];
    let mut names = Vec::new();
    for (i, (channel, details)) in channels.iter().enumerate() {
        let mut req = submission(&format!("ch-{i}"));
        req.channel = *channel as i32;
        req.channel_details = Some(details.clone());
        req.category = ELDERLY_VISITS.into();
        req.title = format!("report {i}");
        req.description = format!(
            "distinct text number {i} about something else entirely {}",
            "x".repeat(i)
        );
        let case = intake.submit_case(req).await.unwrap().into_inner();
        assert_eq!(case.state, pb::CaseState::Submitted as i32);
        assert_eq!(case.channel, *channel as i32);
        assert_eq!(case.recorded_by, "window_staff:window-07");
        // The place is completed upward from the building.
        let place = case.place.clone().unwrap();
        assert_eq!(
            (
                place.district.as_str(),
                place.street.as_str(),
                place.community.as_str(),
                place.grid.as_str()
            ),
            (DISTRICT, STREET, COMMUNITY, GRID)
        );
        names.push(case.name.clone());
        let got = intake
            .get_case(pb::GetCaseRequest {
                name: case.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, case);
    }
    // Anonymous reports carry no contact.
    let mut anon = submission("anon");
    anon.reporter = Some(pb::Reporter {
        anonymous: true,
        contact: None,
    });
    let anon = intake.submit_case(anon).await.unwrap().into_inner();
    assert!(anon.reporter.unwrap().anonymous);

    // Filters: channel, place at any level, category, state, time range.
    let list = |req: pb::ListCasesRequest| {
        let mut intake = intake.clone();
        async move { intake.list_cases(req).await.unwrap().into_inner().cases }
    };
    let door = list(pb::ListCasesRequest {
        channels: vec![tpb::Channel::DoorToDoor as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(door.len(), 1);
    assert_eq!(
        door[0].channel_details.as_ref().unwrap().visiting_worker,
        "grid-worker-li"
    );
    for place in [DISTRICT, STREET, COMMUNITY, GRID, BUILDING] {
        let cases = list(pb::ListCasesRequest {
            place: place.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(cases.len(), 13, "place {place}");
    }
    let elsewhere = list(pb::ListCasesRequest {
        place: "620103".into(),
        ..Default::default()
    })
    .await;
    assert!(elsewhere.is_empty());
    let by_category = list(pb::ListCasesRequest {
        category: STREETLIGHTS.into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_category.len(), 1);
    let submitted = list(pb::ListCasesRequest {
        states: vec![pb::CaseState::Submitted as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(submitted.len(), 13);
    let now = suite.clock.now_micros();
    let future = list(pb::ListCasesRequest {
        submitted_after: Some(minqing_kit::time::to_timestamp(now + 1)),
        ..Default::default()
    })
    .await;
    assert!(future.is_empty());
    let past = list(pb::ListCasesRequest {
        submitted_before: Some(minqing_kit::time::to_timestamp(now + 1)),
        ..Default::default()
    })
    .await;
    assert_eq!(past.len(), 13);
    // By reporter phone (staff).
    let by_phone = list(pb::ListCasesRequest {
        reporter_phone: "13909310001".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_phone.len(), 12, "the anonymous report has no phone");
    // Newest first.
    let all = list(pb::ListCasesRequest::default()).await;
    assert_eq!(all[0].name, anon.name);
    suite.stop().await;
}

async fn submission_is_idempotent_by_request_id(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let first = intake
        .submit_case(submission("same-id"))
        .await
        .unwrap()
        .into_inner();
    let retry = intake
        .submit_case(submission("same-id"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry, "a retry returns the same case");
    let mut changed = submission("same-id");
    changed.title = "different".into();
    let err = intake.submit_case(changed).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Concurrent retries of one request create one case.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut c = intake.clone();
        handles.push(tokio::spawn(async move {
            c.submit_case(submission("burst"))
                .await
                .unwrap()
                .into_inner()
                .name
        }));
    }
    let mut names = HashSet::new();
    for h in handles {
        names.insert(h.await.unwrap());
    }
    assert_eq!(names.len(), 1);
    // New cases, retries and a reused id with a different body, all at once: however the
    // writer batches them, each gets its own answer.
    let mut handles = Vec::new();
    for i in 0..30 {
        let mut c = intake.clone();
        handles.push(tokio::spawn(async move {
            let request = match i % 3 {
                0 => submission(&format!("mixed-{i}")),
                1 => submission("same-id"),
                _ => {
                    let mut changed = submission("same-id");
                    changed.title = format!("different {i}");
                    changed
                }
            };
            (i % 3, c.submit_case(request).await)
        }));
    }
    let mut fresh = HashSet::new();
    for h in handles {
        match h.await.unwrap() {
            (0, answer) => assert!(fresh.insert(answer.unwrap().into_inner().name)),
            // (The same case, though perhaps clustered with the new ones by now.)
            (1, answer) => assert_eq!(answer.unwrap().into_inner().name, first.name),
            (_, answer) => assert_eq!(answer.unwrap_err().code(), Code::AlreadyExists),
        }
    }
    assert_eq!(fresh.len(), 10);
    // Another principal may use the same request id for its own case.
    let other = suite
        .token("window-08", Role::WindowStaff, None, None)
        .await;
    let theirs = suite
        .intake(&other)
        .await
        .submit_case(submission("same-id"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(theirs.name, first.name);
    assert_eq!(count(&suite, "SELECT COUNT(*) FROM cases").await, 13);
    assert_eq!(
        count(
            &suite,
            "SELECT COUNT(*) FROM events WHERE kind = 'minqing.intake.v1.CaseSubmitted'"
        )
        .await,
        13,
        "one event per accepted case"
    );
    suite.stop().await;
}

async fn bad_requests_get_field_violations_and_write_nothing(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let cases: Vec<(pb::SubmitCaseRequest, Vec<&str>)> = vec![
        (
            pb::SubmitCaseRequest::default(),
            vec![
                "category",
                "channel",
                "description",
                "place",
                "reporter",
                "request_id",
                "title",
            ],
        ),
        (
            {
                let mut r = submission("a");
                r.channel = 99;
                r.urgency = 42;
                r
            },
            vec!["channel", "urgency"],
        ),
        (
            {
                let mut r = submission("b");
                r.description = "长".repeat(4001);
                r.title = "t".repeat(201);
                r
            },
            vec!["description", "title"],
        ),
        (
            {
                let mut r = submission("c");
                r.place = Some(tpb::Place {
                    grid: "620102001001-g99".into(),
                    location: Some(tpb::LatLng {
                        latitude: 95.0,
                        longitude: f64::NAN,
                    }),
                    ..Default::default()
                });
                r
            },
            vec![
                "place.grid",
                "place.location.latitude",
                "place.location.longitude",
            ],
        ),
        (
            {
                let mut r = submission("d");
                // A building in one district with another district's code.
                r.place = Some(tpb::Place {
                    building: BUILDING.into(),
                    district: "620103".into(),
                    ..Default::default()
                });
                r.category = "no-such-item".into();
                r
            },
            vec!["category", "place.district"],
        ),
        (
            {
                let mut r = submission("e");
                r.channel = tpb::Channel::DoorToDoor as i32;
                r.channel_details = None;
                r
            },
            vec!["channel_details.visiting_worker"],
        ),
        (
            {
                let mut r = submission("f");
                r.channel = tpb::Channel::LiaisonStation as i32;
                r
            },
            vec!["channel_details.deputy", "channel_details.liaison_station"],
        ),
        (
            {
                let mut r = submission("g");
                r.reporter = Some(pb::Reporter {
                    anonymous: true,
                    contact: Some(tpb::Contact {
                        phone: "139".into(),
                        ..Default::default()
                    }),
                });
                r
            },
            vec!["reporter.contact", "reporter.contact.phone"],
        ),
        (
            {
                let mut r = submission("h");
                r.reporter = Some(pb::Reporter {
                    anonymous: false,
                    contact: Some(tpb::Contact {
                        name: "王".into(),
                        preferred_method: tpb::ContactMethod::Letter as i32,
                        needs_appointed_visit: true,
                        ..Default::default()
                    }),
                });
                r
            },
            vec![
                "reporter.contact.needs_appointed_visit",
                "reporter.contact.postal_address",
            ],
        ),
        (
            {
                let mut r = submission("i");
                r.attachments = vec![
                    tpb::Attachment {
                        uri: "ftp://x".into(),
                        media_type: "jpeg".into(),
                        ..Default::default()
                    };
                    21
                ];
                r
            },
            vec![
                "attachments",
                "attachments[0].media_type",
                "attachments[0].uri",
            ],
        ),
        (
            {
                let mut r = submission("j");
                r.occur_time = Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                });
                r.request_id = "has space".into();
                r.title = "bell\u{7}".into();
                r
            },
            vec!["occur_time", "request_id", "title"],
        ),
    ];
    for (req, expected) in cases {
        let err = intake.submit_case(req).await.unwrap_err();
        let fields = violated_fields(&err);
        for field in &expected {
            assert!(
                fields.iter().any(|f| f == field),
                "expected {field} among {fields:?}"
            );
        }
    }
    // Other methods validate too.
    let err = intake
        .get_case(pb::GetCaseRequest {
            name: "cases/not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["name"]);
    let err = intake
        .list_cases(pb::ListCasesRequest {
            page_size: 9999,
            states: vec![77],
            place: "nowhere".into(),
            page_token: "forged".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["page_size", "page_token", "place", "states[0]"]
    );
    let err = intake
        .withdraw_case(pb::WithdrawCaseRequest {
            name: "x".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["name", "reason"]);
    // A case that does not exist.
    let missing = format!("cases/{}", uuid::Uuid::now_v7());
    let err = intake
        .get_case(pb::GetCaseRequest { name: missing })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    assert_eq!(
        count(&suite, "SELECT COUNT(*) FROM cases").await,
        0,
        "nothing written"
    );
    assert_eq!(
        count(&suite, "SELECT COUNT(*) FROM events").await,
        0,
        "no event emitted"
    );
    suite.stop().await;
}

async fn tokens_roles_and_place_scopes_are_enforced(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    // No token, a bad token.
    let mut anonymous = pb::intake_client::IntakeClient::new(suite.channel("intake").await);
    let err = anonymous.submit_case(submission("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = suite
        .intake("mq_forged")
        .await
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A volunteer may not read or submit cases.
    let volunteer = suite.token("vol-1", Role::Volunteer, None, None).await;
    let err = suite
        .intake(&volunteer)
        .await
        .submit_case(submission("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Window staff scoped to one street submit there, not elsewhere.
    let scoped = suite
        .token("window-zhangye", Role::WindowStaff, Some(STREET), None)
        .await;
    let mut scoped_intake = suite.intake(&scoped).await;
    let mine = scoped_intake
        .submit_case(submission("in-scope"))
        .await
        .unwrap()
        .into_inner();
    let mut away = submission("out-of-scope");
    away.place = Some(tpb::Place {
        building: OTHER_DISTRICT_BUILDING.into(),
        ..Default::default()
    });
    let err = scoped_intake.submit_case(away.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let admin_case = suite
        .intake(&suite.admin)
        .await
        .submit_case(away)
        .await
        .unwrap()
        .into_inner();
    // ...and see only their street's cases.
    let listed = scoped_intake
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .cases;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, mine.name);
    let err = scoped_intake
        .get_case(pb::GetCaseRequest {
            name: admin_case.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A supervisor reads cases without the reporter's personal data, and may not search by phone.
    let supervisor = suite
        .token("supervisor-1", Role::Supervisor, None, None)
        .await;
    let mut sup = suite.intake(&supervisor).await;
    let seen = sup
        .get_case(pb::GetCaseRequest {
            name: mine.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let contact = seen.reporter.unwrap().contact.unwrap();
    assert!(contact.name.is_empty() && contact.phone.is_empty());
    assert_eq!(
        contact.preferred_method,
        tpb::ContactMethod::Phone as i32,
        "how to reply is not personal"
    );
    let err = sup
        .list_cases(pb::ListCasesRequest {
            reporter_phone: "13909310001".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Staff see it.
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let full = suite
        .intake(&staff)
        .await
        .get_case(pb::GetCaseRequest { name: mine.name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.reporter.unwrap().contact.unwrap().phone, "13909310001");
    suite.stop().await;
}

async fn supplements_withdrawal_and_the_timeline(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let case = intake
        .submit_case(submission("s-1"))
        .await
        .unwrap()
        .into_inner();
    let supplement = pb::SupplementCaseRequest {
        name: case.name.clone(),
        request_id: "papers-1".into(),
        note: "户口本复印件".into(),
        attachments: vec![tpb::Attachment {
            uri: format!("sha256:{}", "a".repeat(64)),
            media_type: "image/jpeg".into(),
            description: "scan".into(),
        }],
    };
    let after = intake
        .supplement_case(supplement.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.supplement_count, 1);
    // Idempotent.
    let again = intake
        .supplement_case(supplement.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.supplement_count, 1);
    let mut different = supplement.clone();
    different.note = "something else".into();
    assert_eq!(
        intake.supplement_case(different).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // Empty supplement refused.
    let err = intake
        .supplement_case(pb::SupplementCaseRequest {
            name: case.name.clone(),
            request_id: "p2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["note"]);

    suite.clock.advance(chrono::Duration::minutes(5));
    let withdrawn = intake
        .withdraw_case(pb::WithdrawCaseRequest {
            name: case.name.clone(),
            reason: "已自行解决".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawn.state, pb::CaseState::Withdrawn as i32);
    assert_eq!(withdrawn.withdraw_reason, "已自行解决");
    // Withdrawing again returns it unchanged; supplementing now is refused.
    let twice = intake
        .withdraw_case(pb::WithdrawCaseRequest {
            name: case.name.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(twice.withdraw_reason, "已自行解决");
    let mut late = supplement;
    late.request_id = "late".into();
    assert_eq!(
        intake.supplement_case(late).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let timeline = timeline_of(&mut intake, &case.name).await;
    let kinds: Vec<_> = timeline.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "minqing.intake.v1.CaseSubmitted",
            "minqing.intake.v1.CaseSupplemented",
            "minqing.intake.v1.CaseWithdrawn"
        ]
    );
    assert!(timeline.entries[0].summary.contains("public hotline"));
    assert_eq!(
        timeline.entries[0].actor, "Service hall",
        "a post, never a person's name"
    );
    assert_eq!(timeline.entries[2].state, pb::CaseState::Withdrawn as i32);
    let secs = |e: &pb::TimelineEntry| e.time.as_ref().unwrap().seconds;
    assert!(secs(&timeline.entries[1]) < secs(&timeline.entries[2]));
    suite.stop().await;
}

async fn reports_of_the_same_issue_are_clustered(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let mut first = submission("c-1");
    first.place = Some(tpb::Place {
        building: BUILDING.into(),
        location: Some(tpb::LatLng {
            latitude: 36.0651,
            longitude: 103.8184,
        }),
        ..Default::default()
    });
    let first = intake.submit_case(first).await.unwrap().into_inner();
    suite.clock.advance(chrono::Duration::hours(2));
    let mut second = submission("c-2");
    second.channel = tpb::Channel::App as i32;
    second.description = "3号楼路灯坏了好几天，晚上走路很黑".into();
    let second = intake.submit_case(second).await.unwrap().into_inner();
    // Same building and category, but a different matter: not linked.
    let mut unrelated = submission("c-3");
    unrelated.title = "噪音".into();
    unrelated.description = "楼下商铺音响太吵，影响休息".into();
    let unrelated = intake.submit_case(unrelated).await.unwrap().into_inner();
    // Another building, but within 150 m, with coordinates: linked by distance.
    let mut near = submission("c-4");
    near.place = Some(tpb::Place {
        building: "620102001001-g01-b03".into(),
        location: Some(tpb::LatLng {
            latitude: 36.0652,
            longitude: 103.8185,
        }),
        ..Default::default()
    });
    near.description = "路灯不亮了，3号楼附近晚上很黑".into();
    let near = intake.submit_case(near).await.unwrap().into_inner();
    let mut first_with_location = submission("c-5");
    first_with_location.place = Some(tpb::Place {
        building: OTHER_BUILDING.into(),
        location: Some(tpb::LatLng {
            latitude: 36.0651,
            longitude: 103.8184,
        }),
        ..Default::default()
    });
    let located = intake
        .submit_case(first_with_location)
        .await
        .unwrap()
        .into_inner();

    let reader = intake.clone();
    let get = |name: String| {
        let mut intake = reader.clone();
        async move {
            intake
                .get_case(pb::GetCaseRequest { name })
                .await
                .unwrap()
                .into_inner()
        }
    };
    eventually(Duration::from_secs(20), "the reports are clustered", || {
        let (a, b, c) = (first.name.clone(), second.name.clone(), near.name.clone());
        async move {
            let (a, b, c) = (get(a).await, get(b).await, get(c).await);
            !a.cluster.is_empty() && a.cluster == b.cluster && b.cluster == c.cluster
        }
    })
    .await;
    let cluster_name = get(first.name.clone()).await.cluster;
    assert!(
        get(unrelated.name.clone()).await.cluster.is_empty(),
        "different text stays apart"
    );
    let cluster = intake
        .get_cluster(pb::GetClusterRequest {
            name: cluster_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.category, STREETLIGHTS);
    assert!(cluster.cases.contains(&first.name) && cluster.cases.contains(&second.name));
    // The report from a building in the next grid, standing within 150 m of the first.
    eventually(Duration::from_secs(20), "the located report joins", || {
        let name = located.name.clone();
        let cluster_name = cluster_name.clone();
        async move { get(name).await.cluster == cluster_name }
    })
    .await;

    // Staff unlink one, and link the unrelated one in by hand.
    let unlinked = intake
        .unlink_case(pb::UnlinkCaseRequest {
            name: second.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unlinked.cluster.is_empty());
    let linked = intake
        .link_cases(pb::LinkCasesRequest {
            cases: vec![first.name.clone(), unrelated.name.clone()],
            reason: "same shop, same evening".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(linked.name, cluster_name);
    assert!(linked.cases.contains(&unrelated.name));
    assert!(!linked.cases.contains(&second.name));
    let err = intake
        .unlink_case(pb::UnlinkCaseRequest {
            name: second.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // A volunteer may not link.
    let volunteer = suite.token("vol", Role::Volunteer, None, None).await;
    let err = suite
        .intake(&volunteer)
        .await
        .link_cases(pb::LinkCasesRequest {
            cases: vec![first.name.clone(), second.name.clone()],
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Every reporter's timeline tells of the link.
    let timeline = timeline_of(&mut intake, &first.name).await;
    assert!(
        timeline
            .entries
            .iter()
            .any(|e| e.kind == pb::CaseClustered::full_name())
    );
    // Each entry counts the others in the cluster as the case joined: the second report
    // formed it with the first; staff linked the unrelated one to the first, the one nearby
    // and the located one, after the second had left.
    for (case, others) in [(&second, 1), (&unrelated, 3)] {
        let timeline = timeline_of(&mut intake, &case.name).await;
        let linked: Vec<&str> = timeline
            .entries
            .iter()
            .filter(|e| e.kind == pb::CaseClustered::full_name())
            .map(|e| e.summary.as_str())
            .collect();
        let expected = format!(
            "Linked with {others} other report(s) of the same issue; one collective reply will reach everyone."
        );
        assert_eq!(linked, [expected.as_str()], "{timeline:?}");
    }
    suite.stop().await;
}

async fn pages_are_stable_while_cases_arrive(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let mut before = HashSet::new();
    for i in 0..23 {
        let mut r = submission(&format!("p-{i}"));
        r.description = format!("case {i} with its own words {}", "y".repeat(i));
        before.insert(intake.submit_case(r).await.unwrap().into_inner().name);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = intake
            .list_cases(pb::ListCasesRequest {
                page_size: 5,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.cases.into_iter().map(|c| c.name));
        pages += 1;
        // New cases arrive between pages.
        let mut r = submission(&format!("late-{pages}"));
        r.description = format!("late arrival {pages}");
        intake.submit_case(r).await.unwrap();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no case twice");
    assert!(
        before.is_subset(&unique),
        "every case present when paging began is seen"
    );
    assert_eq!(pages, 5);
    // A token used with another filter is refused.
    let page = intake
        .list_cases(pb::ListCasesRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = intake
        .list_cases(pb::ListCasesRequest {
            page_size: 5,
            page_token: page.next_page_token,
            category: ELDERLY_VISITS.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
    suite.stop().await;
}

async fn the_public_catalogue_needs_no_token(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, intake_only).await else {
        return;
    };
    let mut catalogue = suite.catalogue().await;
    let classes = catalogue
        .list_catalogue_classes(pb::ListCatalogueClassesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(classes.modes.len(), 3);
    assert_eq!(classes.subclasses.len(), 7);
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let page = catalogue
            .list_catalogue_items(pb::ListCatalogueItemsRequest {
                page_size: 20,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        items.extend(page.items);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(items.len(), 54);
    for item in &items {
        assert!(
            !item.legal_basis.is_empty()
                && !item.service_standard.is_empty()
                && !item.procedure.is_empty()
        );
        assert!(!item.responsible_unit.is_empty() && !item.fees.is_empty());
    }
    let modes: HashSet<_> = items.iter().map(|i| i.mode.as_str()).collect();
    assert_eq!(modes, HashSet::from(["onsite", "errand", "online"]));
    let online = catalogue
        .list_catalogue_items(pb::ListCatalogueItemsRequest {
            mode: "online".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(!online.is_empty() && online.iter().all(|i| i.mode == "online"));
    let lights = catalogue
        .list_catalogue_items(pb::ListCatalogueItemsRequest {
            query: "路灯".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(lights.iter().any(|i| i.id == STREETLIGHTS));
    let item = catalogue
        .get_catalogue_item(pb::GetCatalogueItemRequest {
            id: STREETLIGHTS.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(item.time_limit_working_days > 0);
    let err = catalogue
        .get_catalogue_item(pb::GetCatalogueItemRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = catalogue
        .list_catalogue_items(pb::ListCatalogueItemsRequest {
            mode: "teleport".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["mode"]);
    // The gazetteer.
    let districts = catalogue
        .list_places(pb::ListPlacesRequest {
            level: tpb::PlaceLevel::District as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .places;
    assert_eq!(districts.len(), 2);
    let grids = catalogue
        .list_places(pb::ListPlacesRequest {
            parent: COMMUNITY.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .places;
    assert!(
        grids
            .iter()
            .all(|p| p.level == tpb::PlaceLevel::Grid as i32 && p.parent == COMMUNITY)
    );
    suite.stop().await;
}

async fn accepted_changes_appear_on_the_event_feed_with_their_trace(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, |o| {
        intake_only(o);
        o.intake.clusters.enabled = false;
    })
    .await
    else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let case = intake
        .submit_case(traced(
            submission("f-1"),
            &format!("00-{trace_id}-00f067aa0ba902b7-01"),
        ))
        .await
        .unwrap()
        .into_inner();
    intake
        .withdraw_case(pb::WithdrawCaseRequest {
            name: case.name.clone(),
            reason: "resolved".into(),
        })
        .await
        .unwrap();
    let mut feed = suite.feed("intake").await;
    let mut stream = feed
        .subscribe(events_pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(stream.message().await.unwrap().unwrap().events);
    }
    assert_eq!(events[0].kind, pb::CaseSubmitted::full_name());
    assert_eq!(events[0].subject, case.name);
    assert_eq!(events[0].source, "intake");
    assert_eq!(events[0].actor, "window_staff:window-07");
    assert!(
        events[0].traceparent.contains(trace_id),
        "{}",
        events[0].traceparent
    );
    let submitted =
        pb::CaseSubmitted::decode(events[0].payload.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(
        submitted
            .case
            .unwrap()
            .reporter
            .unwrap()
            .contact
            .unwrap()
            .phone,
        "13909310001"
    );
    assert_eq!(events[1].kind, pb::CaseWithdrawn::full_name());
    // Staff tokens may not read the feed.
    let err =
        minqing_proto::minqing::events::v1::event_feed_client::EventFeedClient::with_interceptor(
            suite.channel("intake").await,
            minqing_kit::feed::BearerToken::new(&staff),
        )
        .subscribe(events_pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    suite.stop().await;
}

async fn reads_of_personal_data_are_audited(backend: Backend) {
    use minqing_proto::minqing::audit::v1::{self as audit_pb, audit_client::AuditClient};
    let Some(suite) = Suite::start_with(backend, |c| c.clusters.enabled = false).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let supervisor = suite
        .token("supervisor-1", Role::Supervisor, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    let case = intake
        .submit_case(submission("a-1"))
        .await
        .unwrap()
        .into_inner();
    // Staff read it (personal data shown); a supervisor reads it (hidden).
    intake
        .get_case(pb::GetCaseRequest {
            name: case.name.clone(),
        })
        .await
        .unwrap();
    intake
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap();
    suite
        .intake(&supervisor)
        .await
        .get_case(pb::GetCaseRequest {
            name: case.name.clone(),
        })
        .await
        .unwrap();
    // A service reads the feed, whose events carry personal data.
    let mut feed = suite.feed("intake").await;
    let _stream = feed
        .subscribe(events_pb::SubscribeRequest::default())
        .await
        .unwrap();

    let audit = |token: String| {
        let channel = suite.channel("intake");
        async move {
            AuditClient::with_interceptor(
                channel.await,
                minqing_kit::feed::BearerToken::new(&token),
            )
        }
    };
    let err = audit(staff.clone())
        .await
        .list_audit_entries(audit_pb::ListAuditEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "only city admins read the audit log"
    );
    let mut admin = audit(suite.admin.clone()).await;
    let entries = |resource: String| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_audit_entries(audit_pb::ListAuditEntriesRequest {
                    resource,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    eventually(Duration::from_secs(10), "the reads are recorded", || {
        let entries = entries(case.name.clone());
        async move { entries.await.len() >= 2 }
    })
    .await;
    let on_case = entries(case.name.clone()).await;
    assert_eq!(
        on_case.len(),
        2,
        "GetCase and ListCases by staff; not the supervisor's hidden read"
    );
    assert!(
        on_case
            .iter()
            .all(|e| e.actor == "window_staff:window-07" && e.action == "read_personal_data")
    );
    assert!(on_case.iter().any(|e| e.detail.ends_with("/GetCase")));
    assert!(on_case.iter().any(|e| e.detail.ends_with("/ListCases")));
    eventually(
        Duration::from_secs(10),
        "the feed subscription is recorded",
        || {
            let entries = entries("feeds/intake".into());
            async move {
                entries
                    .await
                    .iter()
                    .any(|e| e.actor == "service:service/tests")
            }
        },
    )
    .await;
    let page = admin
        .list_audit_entries(audit_pb::ListAuditEntriesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 1);
    assert!(!page.next_page_token.is_empty());
    suite.stop().await;
}

async fn consumers_carry_the_trace_of_the_request_that_caused_them(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&staff).await;
    intake.submit_case(submission("t-1")).await.unwrap();
    let trace_id = "5c8f1e2d3b4a69788796a5b4c3d2e1f0";
    let mut second = submission("t-2");
    second.description = "3号楼路灯坏了好几天，晚上走路很黑".into();
    let second = intake
        .submit_case(traced(
            second,
            &format!("00-{trace_id}-1a2b3c4d5e6f7a8b-01"),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stream = suite
        .feed("intake")
        .await
        .subscribe(events_pb::SubscribeRequest {
            kinds: vec![pb::CaseClustered::full_name()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let clustered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let batch = stream.message().await.unwrap().unwrap();
            if let Some(e) = batch.events.into_iter().find(|e| e.subject == second.name) {
                return e;
            }
        }
    })
    .await
    .expect("the second report is clustered");
    assert_eq!(clustered.actor, "system:intake-clusters");
    assert!(
        clustered.traceparent.contains(trace_id),
        "the consumer's event continues the submission's trace: {}",
        clustered.traceparent
    );
    suite.stop().await;
}

backend_tests!(
    consumers_carry_the_trace_of_the_request_that_caused_them,
    reads_of_personal_data_are_audited,
    every_channel_is_accepted_and_readable,
    submission_is_idempotent_by_request_id,
    bad_requests_get_field_violations_and_write_nothing,
    tokens_roles_and_place_scopes_are_enforced,
    supplements_withdrawal_and_the_timeline,
    reports_of_the_same_issue_are_clustered,
    pages_are_stable_while_cases_arrive,
    the_public_catalogue_needs_no_token,
    accepted_changes_appear_on_the_event_feed_with_their_trace,
);
