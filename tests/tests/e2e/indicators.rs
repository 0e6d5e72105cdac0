//! Indicators, reports, disclosure and hot spots end to end: cases submitted to intake, routed
//! and resolved for real; the rating and the overdue escalation of supervision's other parts
//! appended to supervision's feed as stand-ins; the figures read over gRPC, rebuilt from the
//! events and compared; the public view read without a token and searched for anything
//! personal.

use std::time::Duration;

use futures::StreamExt;
use minqing_kit::{
    auth::Role,
    backend_tests,
    db::Backend,
    feed::{self, EventMeta},
    testing::eventually,
};
use minqing_proto::minqing::{
    intake::v1 as ipb,
    routing::v1 as rpb,
    supervision::v1::{
        self as pb, disclosure_client::DisclosureClient, indicators_client::IndicatorsClient,
    },
    r#type::v1 as tpb,
};
use minqing_supervision::indicators::period;
use minqing_tests::{Authed, Suite};
use tonic::Code;

use crate::support::*;

/// How long to wait for the feeds: on a shared PostgreSQL a long transaction anywhere holds
/// every feed back until it ends.
const PATIENCE: Duration = Duration::from_secs(60);
const GRID_UNIT: &str = "grid-620102001001-g01";
const STATION: &str = "liaison-stations/zhangye-road";

/// Residents with details that must never reach the public.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("欧阳明珠", "13811112222", "幸福巷77号2单元301室"),
    ("司马青云", "13933334444", "光明里19号楼4门"),
    ("诸葛晓梅", "13755556666", "和平东路305号院"),
    ("上官雨桐", "13677778888", "建设西街88号"),
];

fn submission_of(i: usize, channel: tpb::Channel, category: &str) -> ipb::SubmitCaseRequest {
    let (name, phone, address) = PEOPLE[i];
    let mut req = submission(&format!("ind-{i}"));
    req.channel = channel as i32;
    req.category = category.into();
    req.reporter = Some(ipb::Reporter {
        anonymous: false,
        contact: Some(tpb::Contact {
            name: name.into(),
            phone: phone.into(),
            postal_address: address.into(),
            preferred_method: tpb::ContactMethod::Phone as i32,
            ..Default::default()
        }),
    });
    req.place.as_mut().unwrap().address = address.into();
    req.description = format!("{name}反映：{address}门口的路灯不亮，电话{phone}");
    if channel == tpb::Channel::LiaisonStation {
        req.channel_details = Some(ipb::ChannelDetails {
            deputy: "代表王建国".into(),
            liaison_station: STATION.into(),
            ..Default::default()
        });
    }
    req
}

async fn submit(suite: &Suite, req: ipb::SubmitCaseRequest) -> ipb::Case {
    let staff = suite
        .token("window-ind", Role::WindowStaff, None, None)
        .await;
    suite
        .intake(&staff)
        .await
        .submit_case(req)
        .await
        .unwrap()
        .into_inner()
}

async fn indicators(suite: &Suite, token: &str) -> IndicatorsClient<Authed> {
    IndicatorsClient::with_interceptor(
        suite.channel("supervision").await,
        minqing_kit::feed::BearerToken::new(token),
    )
}

fn today(suite: &Suite) -> String {
    let d = period::day_of(suite.clock.now_micros());
    format!("{:04}-{:02}-{:02}", d / 10_000, d / 100 % 100, d % 100)
}

fn req(place: &str, kind: pb::PeriodKind, date: &str) -> pb::GetIndicatorsRequest {
    pb::GetIndicatorsRequest {
        place: place.into(),
        period: Some(pb::Period {
            kind: kind as i32,
            date: date.into(),
        }),
        ..Default::default()
    }
}

async fn total(client: &mut IndicatorsClient<Authed>, r: pb::GetIndicatorsRequest) -> pb::Figures {
    client
        .get_indicators(r)
        .await
        .unwrap()
        .into_inner()
        .total
        .unwrap()
}

/// Whether `n` cases of the day are counted, each with its unit (intake's and routing's
/// events both applied).
async fn settled(mut ind: IndicatorsClient<Authed>, day: pb::GetIndicatorsRequest, n: i64) -> bool {
    let by_unit = ind
        .get_indicators(pb::GetIndicatorsRequest {
            group_by: pb::Dimension::Unit as i32,
            ..day
        })
        .await
        .unwrap()
        .into_inner();
    by_unit.total.unwrap().received == n && by_unit.groups.iter().all(|g| !g.value.is_empty())
}

/// Appends a supervision event as supervision's other parts would.
async fn append<M: prost::Message + prost::Name>(suite: &Suite, subject: &str, event: &M) {
    let db = suite.db("supervision");
    let mut tx = db.begin().await.unwrap();
    feed::append(
        &mut tx,
        &EventMeta::current("system:supervision"),
        subject,
        event,
        suite.clock.now_micros(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Accepts and resolves the grid's assignment of `case` through the desk.
async fn resolve(suite: &Suite, case: &str) {
    let token = suite
        .token("desk-grid", Role::GridWorker, None, Some(GRID_UNIT))
        .await;
    let mut desk = suite.desk(&token).await;
    let mut s = desk
        .pull_assignments(rpb::PullAssignmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let a = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let batch = s.next().await.expect("open").expect("ok");
            if let Some(a) = batch
                .items
                .into_iter()
                .filter_map(|i| i.assignment)
                .find(|a| a.case == case)
            {
                return a;
            }
        }
    })
    .await
    .expect("an assignment in time");
    desk.accept_assignment(rpb::AcceptAssignmentRequest {
        name: a.name.clone(),
        note: String::new(),
    })
    .await
    .unwrap();
    desk.resolve_assignment(rpb::ResolveAssignmentRequest {
        name: a.name,
        result: "路灯已更换灯泡".into(),
        evidence: vec![],
    })
    .await
    .unwrap();
}

async fn figures_rebuild_reports_and_hot_spots(backend: Backend) {
    let Some(suite) = Suite::start_opts(backend, |o| {
        if let Some(s) = o.supervision.as_mut() {
            s.indicators.hotspot_threshold = 3;
            s.indicators.hotspot_window_hours = 48;
        }
    })
    .await
    else {
        return;
    };
    let staff = suite
        .token("supervisor", Role::Supervisor, None, None)
        .await;
    let mut ind = indicators(&suite, &staff).await;
    let date = today(&suite);

    // Three streetlight reports in one grid (a hot spot at 3), one elderly-care visit from a
    // liaison station.
    let mut cases = Vec::new();
    for i in 0..3 {
        cases.push(
            submit(
                &suite,
                submission_of(i, tpb::Channel::Hotline, STREETLIGHTS),
            )
            .await,
        );
    }
    let station_case = submit(
        &suite,
        submission_of(3, tpb::Channel::LiaisonStation, ELDERLY_VISITS),
    )
    .await;
    resolve(&suite, &cases[0].name).await;
    append(
        &suite,
        &cases[0].name,
        &pb::CaseRated {
            rating: Some(pb::CaseRating {
                case: cases[0].name.clone(),
                handling_score: 5,
                ..Default::default()
            }),
        },
    )
    .await;
    append(
        &suite,
        &format!("clocks/{}", cases[1].name.trim_start_matches("cases/")),
        &pb::OverdueEscalated {
            clock: Some(pb::CaseClock {
                case: cases[1].name.clone(),
                ..Default::default()
            }),
            escalation: 1,
            ..Default::default()
        },
    )
    .await;

    let day = req(DISTRICT, pb::PeriodKind::Day, &date);
    eventually(PATIENCE, "the district's figures", || {
        let (mut ind, day) = (ind.clone(), day.clone());
        async move {
            let f = total(&mut ind, day.clone()).await;
            f.received == 4
                && f.resolved == 1
                && f.rated == 1
                && f.overdue_now == 1
                && settled(ind, day, 4).await
        }
    })
    .await;
    let f = total(&mut ind, day.clone()).await;
    assert_eq!((f.answered, f.answered_on_time, f.satisfied), (1, 1, 1));
    assert_eq!(f.resolution_rate, 0.25);
    assert_eq!(f.response_rate, 0.25);
    assert_eq!((f.satisfaction_rate, f.mean_rating), (1.0, 5.0));
    assert!(f.p90_handling_seconds <= 3600, "{f:?}");

    // The same cases at every level and every period containing the day.
    for kind in [
        pb::PeriodKind::Week,
        pb::PeriodKind::Month,
        pb::PeriodKind::Quarter,
        pb::PeriodKind::Year,
    ] {
        assert_eq!(
            total(&mut ind, req(DISTRICT, kind, &date)).await,
            f,
            "{kind:?}"
        );
    }
    assert_eq!(
        total(&mut ind, req(GRID, pb::PeriodKind::Year, &date))
            .await
            .received,
        4
    );
    assert_eq!(
        total(&mut ind, req(DISTRICT, pb::PeriodKind::Day, "2026-11-22"))
            .await
            .received,
        0
    );

    // Broken down and filtered by a dimension.
    let by_category = ind
        .get_indicators(pb::GetIndicatorsRequest {
            group_by: pb::Dimension::Category as i32,
            ..req(DISTRICT, pb::PeriodKind::Month, &date)
        })
        .await
        .unwrap()
        .into_inner();
    let groups: Vec<(String, i64)> = by_category
        .groups
        .iter()
        .map(|g| (g.value.clone(), g.figures.as_ref().unwrap().received))
        .collect();
    assert_eq!(
        groups,
        [
            (STREETLIGHTS.to_string(), 3),
            (ELDERLY_VISITS.to_string(), 1)
        ]
    );
    let liaison = total(
        &mut ind,
        pb::GetIndicatorsRequest {
            filter_dimension: pb::Dimension::Channel as i32,
            filter_value: "CHANNEL_LIAISON_STATION".into(),
            ..req(STREET, pb::PeriodKind::Month, &date)
        },
    )
    .await;
    assert_eq!(liaison.received, 1);
    let by_unit = total(
        &mut ind,
        pb::GetIndicatorsRequest {
            filter_dimension: pb::Dimension::Unit as i32,
            filter_value: format!("units/{GRID_UNIT}"),
            ..req(DISTRICT, pb::PeriodKind::Day, &date)
        },
    )
    .await;
    assert_eq!((by_unit.received, by_unit.resolved), (4, 1));

    // Bad requests are refused field by field; roles and place scopes are enforced.
    let bad = ind
        .get_indicators(pb::GetIndicatorsRequest {
            place: "999999".into(),
            period: Some(pb::Period {
                kind: 0,
                date: "2026-02-30".into(),
            }),
            filter_dimension: pb::Dimension::Channel as i32,
            filter_value: "CHANNEL_CARRIER_PIGEON".into(),
            group_by: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        [
            "filter_value",
            "group_by",
            "period.date",
            "period.kind",
            "place"
        ]
    );
    let volunteer = suite.token("v", Role::Volunteer, None, None).await;
    let denied = indicators(&suite, &volunteer)
        .await
        .get_indicators(day.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let other = suite
        .token("other-district", Role::DistrictSystem, Some("620103"), None)
        .await;
    let denied = indicators(&suite, &other)
        .await
        .get_indicators(day.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let community = suite
        .token("community", Role::CommunityStaff, Some(COMMUNITY), None)
        .await;
    let own = total(
        &mut indicators(&suite, &community).await,
        req(COMMUNITY, pb::PeriodKind::Day, &date),
    )
    .await;
    assert_eq!(own.received, 4);

    // The hot spot was raised once, for the grid, with its event; a fourth report joins it.
    submit(&suite, {
        let mut r = submission_of(2, tpb::Channel::Web, STREETLIGHTS);
        r.request_id = "ind-4".into();
        r
    })
    .await;
    eventually(PATIENCE, "the fourth report", || {
        let (ind, day) = (ind.clone(), day.clone());
        settled(ind, day, 5)
    })
    .await;
    let problems = ind
        .list_systemic_problems(pb::ListSystemicProblemsRequest {
            district: DISTRICT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].place, GRID);
    assert_eq!(problems[0].level, tpb::PlaceLevel::Grid as i32);
    assert_eq!(problems[0].category, STREETLIGHTS);
    assert_eq!(problems[0].case_count, 4);
    assert_eq!(problems[0].cases.len(), 4, "{problems:?}");
    let distinct: std::collections::HashSet<_> = problems[0].cases.iter().collect();
    assert_eq!(distinct.len(), 4, "each case once: {problems:?}");
    assert!(problems[0].cases.iter().all(|c| c.starts_with("cases/")));
    let raised: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = $1")
        .bind("minqing.supervision.v1.SystemicProblemRaised")
        .fetch_one(suite.db("supervision").pool())
        .await
        .unwrap();
    assert_eq!(raised, 1);

    // The deputies' report of the station: its one case and what became of it.
    let deputy = suite
        .token("deputy", Role::Deputy, None, Some(STATION))
        .await;
    let report = indicators(&suite, &deputy)
        .await
        .get_deputy_report(pb::GetDeputyReportRequest {
            liaison_station: STATION.into(),
            period: Some(pb::Period {
                kind: pb::PeriodKind::Month as i32,
                date: date.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.cases.len(), 1);
    assert_eq!(report.cases[0].case, station_case.name);
    assert_eq!(report.cases[0].deputy, "代表王建国");
    assert_eq!(report.figures.unwrap().received, 1);
    let district_report = ind
        .get_deputy_report(pb::GetDeputyReportRequest {
            district: DISTRICT.into(),
            period: Some(pb::Period {
                kind: pb::PeriodKind::Year as i32,
                date: date.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(district_report.figures.unwrap().received, 5);
    assert_eq!(district_report.liaison_figures.unwrap().received, 1);
    assert_eq!(district_report.cases.len(), 1);
    let other_deputy = suite
        .token(
            "deputy-2",
            Role::Deputy,
            None,
            Some("liaison-stations/other"),
        )
        .await;
    let denied = indicators(&suite, &other_deputy)
        .await
        .get_deputy_report(pb::GetDeputyReportRequest {
            liaison_station: STATION.into(),
            period: Some(pb::Period {
                kind: pb::PeriodKind::Month as i32,
                date: date.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad = ind
        .get_deputy_report(pb::GetDeputyReportRequest {
            liaison_station: STATION.into(),
            district: DISTRICT.into(),
            period: None,
            max_cases: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        ["liaison_station", "max_cases", "period"]
    );

    // Rebuilt from the events, the figures are the same: first as they stand, then after a
    // rollup row was damaged behind the service's back.
    let queries = [
        day.clone(),
        req(GRID, pb::PeriodKind::Week, &date),
        pb::GetIndicatorsRequest {
            group_by: pb::Dimension::Unit as i32,
            ..req(STREET, pb::PeriodKind::Year, &date)
        },
        pb::GetIndicatorsRequest {
            group_by: pb::Dimension::Channel as i32,
            ..req(COMMUNITY, pb::PeriodKind::Quarter, &date)
        },
    ];
    let mut before = Vec::new();
    for q in &queries {
        before.push(ind.get_indicators(q.clone()).await.unwrap().into_inner());
    }
    let admin = indicators(&suite, &suite.admin).await;
    let denied = ind
        .rebuild_indicators(pb::RebuildIndicatorsRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let rebuilt = admin
        .clone()
        .rebuild_indicators(pb::RebuildIndicatorsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rebuilt.cases, 5);
    assert!(rebuilt.rollup_rows > 0);
    assert_eq!(
        rebuilt.differing_rows, 0,
        "rebuilt rollups differ from incremental ones"
    );
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(
            &ind.get_indicators(q.clone()).await.unwrap().into_inner(),
            b
        );
    }
    sqlx::query("UPDATE ind_rollup SET received = received + 7 WHERE place = $1 AND grain = 'D'")
        .bind(DISTRICT)
        .execute(suite.db("supervision").pool())
        .await
        .unwrap();
    assert_eq!(total(&mut ind, day.clone()).await.received, 12);
    let repaired = admin
        .clone()
        .rebuild_indicators(pb::RebuildIndicatorsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(repaired.differing_rows > 0);
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(
            &ind.get_indicators(q.clone()).await.unwrap().into_inner(),
            b
        );
    }
    // The consumers carry on from the rebuilt cursors: a new case still counts once.
    submit(&suite, {
        let mut r = submission_of(1, tpb::Channel::App, ELDERLY_VISITS);
        r.request_id = "ind-5".into();
        r
    })
    .await;
    eventually(PATIENCE, "a case after the rebuild", || {
        let (ind, day) = (ind.clone(), day.clone());
        settled(ind, day, 6)
    })
    .await;
    let after = admin
        .clone()
        .rebuild_indicators(pb::RebuildIndicatorsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((after.cases, after.differing_rows), (6, 0), "{after:?}");

    suite.stop().await;
}

async fn disclosure_is_public_and_anonymous(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut cases = Vec::new();
    for (i, category) in [STREETLIGHTS, STREETLIGHTS, ELDERLY_VISITS, STREETLIGHTS]
        .into_iter()
        .enumerate()
    {
        let channel = if i == 3 {
            tpb::Channel::LiaisonStation
        } else {
            tpb::Channel::Hotline
        };
        cases.push(submit(&suite, submission_of(i, channel, category)).await);
    }
    resolve(&suite, &cases[0].name).await;
    let date = today(&suite);

    // No token at all.
    let mut public = DisclosureClient::new(suite.channel("supervision").await);
    eventually(PATIENCE, "the public list", || {
        let mut public = public.clone();
        async move {
            let page = public
                .list_public_cases(pb::ListPublicCasesRequest {
                    place: DISTRICT.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            page.cases.len() == 4 && page.cases.iter().any(|c| c.state == "RESOLVED")
        }
    })
    .await;
    let mut seen = String::new();
    let mut token = String::new();
    let mut listed = 0;
    loop {
        let page = public
            .list_public_cases(pb::ListPublicCasesRequest {
                place: COMMUNITY.into(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed += page.cases.len();
        seen.push_str(&format!("{page:?}"));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, 4);
    let summary = public
        .get_public_summary(pb::GetPublicSummaryRequest {
            place: STREET.into(),
            period: Some(pb::Period {
                kind: pb::PeriodKind::Month as i32,
                date,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.figures.as_ref().unwrap().received, 4);
    assert_eq!(summary.figures.as_ref().unwrap().resolved, 1);
    seen.push_str(&format!("{summary:?}"));
    let filtered = public
        .list_public_cases(pb::ListPublicCasesRequest {
            place: DISTRICT.into(),
            category: ELDERLY_VISITS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.cases.len(), 1);
    seen.push_str(&format!("{filtered:?}"));

    assert!(
        seen.contains("RESOLVED") && seen.contains("路灯已更换灯泡"),
        "{seen}"
    );
    for (name, phone, address) in PEOPLE {
        for secret in [name, phone, address] {
            assert!(!seen.contains(secret), "{secret} was disclosed: {seen}");
        }
    }
    for case in &cases {
        let id = case.name.trim_start_matches("cases/");
        assert!(!seen.contains(id), "the case's name was disclosed");
    }
    for private in [BUILDING, GRID, "路灯不亮", STATION, "代表王建国"] {
        assert!(!seen.contains(private), "{private} was disclosed");
    }

    // Grids are too small to disclose; bad input is refused field by field.
    let bad = public
        .list_public_cases(pb::ListPublicCasesRequest {
            place: GRID.into(),
            page_size: 500,
            page_token: "zz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["page_size", "page_token", "place"]);
    let bad = public
        .get_public_summary(pb::GetPublicSummaryRequest {
            place: String::new(),
            period: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["period", "place"]);

    suite.stop().await;
}

backend_tests!(
    figures_rebuild_reports_and_hot_spots,
    disclosure_is_public_and_anonymous
);
