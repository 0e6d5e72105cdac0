//! Matching end to end: volunteers registered with their rules, a community's menu, the best
//! candidates with reasons, offers declined and re-offered, accepted, done and rated, claims
//! by teams and organisations, an optimal batch plan, service records, safety rules and the
//! events supervision and intake's timeline read.

use std::time::Duration;

use minqing_kit::{auth::Role, backend_tests, db::Backend, testing::eventually};
use minqing_proto::minqing::{intake::v1 as ipb, matching::v1 as pb, r#type::v1 as tpb};
use minqing_tests::Suite;
use prost::Name;
use tonic::Code;

use crate::support::*;

const HOUR: i64 = 3_600;

fn ts(suite: &Suite, offset_hours: i64) -> Option<prost_types::Timestamp> {
    let now = suite.clock.now_micros() / 1_000_000;
    Some(prost_types::Timestamp {
        seconds: now + offset_hours * HOUR,
        nanos: 0,
    })
}

/// A volunteer free every day 08:00–22:00, living in `building`.
fn volunteer(name: &str, building: &str, skills: &[&str]) -> pb::Volunteer {
    pb::Volunteer {
        display_name: name.into(),
        contact: Some(tpb::Contact {
            name: format!("{name} (legal)"),
            phone: "13900000000".into(),
            ..Default::default()
        }),
        home: Some(tpb::Place {
            building: building.into(),
            address: "3单元201".into(),
            ..Default::default()
        }),
        skills: skills
            .iter()
            .map(|s| pb::Skill {
                skill: s.to_string(),
                credential: None,
            })
            .collect(),
        languages: vec!["zh".into()],
        availability: Some(pb::Availability {
            weekly: (1..=7)
                .map(|day| pb::WeeklyWindow {
                    day,
                    start_minute: 8 * 60,
                    end_minute: 22 * 60,
                })
                .collect(),
            exceptions: vec![],
        }),
        capacity: Some(pb::Capacity {
            weekly_minutes: 600,
            max_open_tasks: 3,
        }),
        consent: Some(pb::Consent {
            data_processing: true,
            offers: true,
            show_name: true,
            consent_time: None,
        }),
        ..Default::default()
    }
}

fn need(suite: &Suite, title: &str, skills: &[&str], people: i32) -> pb::Need {
    pb::Need {
        place: Some(tpb::Place {
            building: BUILDING.into(),
            ..Default::default()
        }),
        title: title.into(),
        description: "陪同老人去医院复查".into(),
        skills: skills
            .iter()
            .map(|s| pb::SkillRequirement {
                skill: s.to_string(),
                credential_required: false,
            })
            .collect(),
        start_time: ts(suite, 24),
        end_time: ts(suite, 30),
        effort_minutes: 120,
        people_needed: people,
        ..Default::default()
    }
}

async fn register(
    vols: &mut pb::volunteers_client::VolunteersClient<minqing_tests::Authed>,
    v: pb::Volunteer,
) -> pb::Volunteer {
    vols.create_volunteer(pb::CreateVolunteerRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        volunteer: Some(v),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Follows matching's feed until every kind in `expected` was seen (or fails after 10 s).
async fn await_kinds(suite: &Suite, expected: &[String]) {
    use futures::StreamExt;
    let mut feed = suite.feed("matching").await;
    let mut stream = feed
        .subscribe(minqing_proto::minqing::events::v1::SubscribeRequest {
            after: String::new(),
            kinds: vec![],
            max_batch: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !expected.iter().all(|k| seen.contains(k)) {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("events missing from the feed: have {seen:?}"))
            .unwrap()
            .unwrap();
        seen.extend(batch.events.into_iter().map(|e| e.kind));
    }
}

async fn menu_need_is_matched_offered_accepted_done_and_rated(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;
    let near = register(&mut vols, volunteer("王师傅", BUILDING, &["elderly-care"])).await;
    let grid_mate = register(
        &mut vols,
        volunteer("李阿姨", "620102001001-g01-b02", &["elderly-care"]),
    )
    .await;
    let unskilled = register(&mut vols, volunteer("赵同学", BUILDING, &["tutoring"])).await;
    assert!(
        !near.personal_data_hidden && near.contact.is_some(),
        "staff of the community see personal data"
    );

    // The community posts a need and publishes its menu.
    let mut needs = suite.needs(&staff).await;
    let draft = needs
        .create_need(pb::CreateNeedRequest {
            request_id: "n1".into(),
            need: Some(need(&suite, "陪老人复查", &["elderly-care"], 1)),
            publish: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(draft.state, pb::NeedState::Draft as i32);
    assert_eq!(draft.community, COMMUNITY);
    let menu = needs
        .publish_menu(pb::PublishMenuRequest {
            request_id: "m1".into(),
            community: COMMUNITY.into(),
            title: "临潢社区十二月服务菜单".into(),
            description: String::new(),
            needs: vec![draft.name.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(menu.needs, vec![draft.name.clone()]);
    let listed = needs
        .list_needs(pb::ListNeedsRequest {
            place: GRID.into(),
            skill: "elderly-care".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.needs.len(), 1);
    assert_eq!(listed.needs[0].menu, menu.name);

    // The best candidates, with reasons: the same building first; the unskilled one is out.
    let mut matching = suite.matching(&staff).await;
    let found = matching
        .find_candidates(pb::FindCandidatesRequest {
            need: draft.name.clone(),
            max_candidates: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = found
        .candidates
        .iter()
        .map(|c| c.volunteer.as_str())
        .collect();
    assert_eq!(names, vec![near.name.as_str(), grid_mate.name.as_str()]);
    assert_eq!(found.eligible_count, 2);
    assert!(
        found.candidates[0]
            .reasons
            .iter()
            .any(|r| r.summary.starts_with("same building"))
    );
    assert!(
        found
            .exclusions
            .iter()
            .any(|x| x.reason == pb::ExclusionReason::Skill as i32 && x.count == 1)
    );
    assert!(!names.contains(&unskilled.name.as_str()));

    // Offer to the best; it declines and the place is re-offered to the next.
    let offer = matching
        .offer_need(pb::OfferNeedRequest {
            need: draft.name.clone(),
            volunteer: String::new(),
            note: "周三上午".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offer.assignee, near.name);
    assert_eq!(offer.state, pb::AssignmentState::Offered as i32);
    let near_token = suite
        .token("wang", Role::Volunteer, None, Some(&near.name))
        .await;
    let mate_token = suite
        .token("li", Role::Volunteer, None, Some(&grid_mate.name))
        .await;
    // A volunteer sees only their own offers.
    let mut mate = suite.matching(&mate_token).await;
    let err = mate
        .get_assignment(pb::GetAssignmentRequest {
            name: offer.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let theirs = mate
        .list_assignments(pb::ListAssignmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.assignments.is_empty());
    let err = mate
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: offer.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut wang = suite.matching(&near_token).await;
    let declined = wang
        .decline_assignment(pb::DeclineAssignmentRequest {
            name: offer.name.clone(),
            reason: "那天要值班".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined.state, pb::AssignmentState::Declined as i32);
    let mine = mate
        .list_assignments(pb::ListAssignmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mine.assignments.len(),
        1,
        "re-offered to the next candidate"
    );
    let reoffer = mine.assignments[0].clone();
    assert_eq!(reoffer.previous, offer.name);
    assert_eq!(reoffer.state, pb::AssignmentState::Offered as i32);

    let accepted = mate
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: reoffer.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state, pb::AssignmentState::Accepted as i32);
    let filled = needs
        .get_need(pb::GetNeedRequest {
            name: draft.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filled.state, pb::NeedState::Filled as i32);

    suite.clock.advance(chrono::Duration::hours(26));
    let done = mate
        .complete_assignment(pb::CompleteAssignmentRequest {
            name: reoffer.name.clone(),
            minutes: 150,
            participants: 0,
            note: "已陪同复查".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, pb::AssignmentState::Done as i32);
    assert_eq!((done.minutes, done.participants), (150, 1));

    // The resident's rating, recorded by the staff who called back.
    let rated = matching
        .rate_assignment(pb::RateAssignmentRequest {
            name: reoffer.name.clone(),
            satisfaction: pb::Satisfaction::VerySatisfied as i32,
            comment: "很耐心".into(),
            channel: pb::RatingChannel::CallBack as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rated.rating.unwrap().satisfaction,
        pb::Satisfaction::VerySatisfied as i32
    );
    let need_done = needs
        .get_need(pb::GetNeedRequest {
            name: draft.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(need_done.state, pb::NeedState::Done as i32);

    // Service records: hours per volunteer and person-times per community.
    let mut records = suite.records(&staff).await;
    let range = (ts(&suite, -24 * 30), ts(&suite, 24));
    let per_volunteer = records
        .summarize_service(pb::SummarizeServiceRequest {
            subject_kind: pb::RecordSubject::Volunteer as i32,
            start_time: range.0,
            end_time: range.1,
            period: pb::RecordPeriod::Month as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(per_volunteer.records.len(), 1);
    let r = &per_volunteer.records[0];
    assert_eq!(
        (r.subject.as_str(), r.minutes, r.person_times, r.ratings),
        (grid_mate.name.as_str(), 150, 1, 1)
    );
    assert_eq!(r.average_satisfaction, 5.0);
    let per_community = records
        .summarize_service(pb::SummarizeServiceRequest {
            subject_kind: pb::RecordSubject::Community as i32,
            start_time: range.0,
            end_time: range.1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(per_community.records[0].subject, COMMUNITY);
    assert_eq!(per_community.total_person_times, 1);
    // A volunteer reads only their own record.
    let mut own = suite.records(&near_token).await;
    let empty = own
        .summarize_service(pb::SummarizeServiceRequest {
            subject_kind: pb::RecordSubject::Volunteer as i32,
            start_time: range.0,
            end_time: range.1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.records.is_empty());

    // Every step is on the feed.
    let expected: Vec<String> = [
        pb::VolunteerRegistered::full_name(),
        pb::NeedPosted::full_name(),
        pb::MenuPublished::full_name(),
        pb::AssignmentOffered::full_name(),
        pb::AssignmentDeclined::full_name(),
        pb::AssignmentAccepted::full_name(),
        pb::AssignmentCompleted::full_name(),
        pb::AssignmentRated::full_name(),
        pb::NeedStateChanged::full_name(),
    ]
    .into();
    await_kinds(&suite, &expected).await;
    suite.stop().await;
}

async fn safety_rules_privacy_and_validation(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;

    // Bad input: every problem at once.
    let mut bad = volunteer("", "nowhere", &["Bad Skill"]);
    bad.capacity = Some(pb::Capacity {
        weekly_minutes: 0,
        max_open_tasks: 99,
    });
    bad.consent = None;
    bad.availability
        .as_mut()
        .unwrap()
        .weekly
        .push(pb::WeeklyWindow {
            day: 8,
            start_minute: 0,
            end_minute: 10,
        });
    let err = vols
        .create_volunteer(pb::CreateVolunteerRequest {
            request_id: "bad".into(),
            volunteer: Some(bad),
        })
        .await
        .unwrap_err();
    let fields = violated_fields(&err);
    for f in [
        "volunteer.display_name",
        "volunteer.home.building",
        "volunteer.skills[0].skill",
        "volunteer.capacity.weekly_minutes",
        "volunteer.capacity.max_open_tasks",
        "volunteer.consent.data_processing",
        "volunteer.availability.weekly[7]",
    ] {
        assert!(fields.contains(&f.to_string()), "{f} not in {fields:?}");
    }

    // A nurse whose first-aid credential expires before the need's window ends; a busy one; one
    // free only on Sunday mornings.
    let mut expired = volunteer("护士甲", BUILDING, &[]);
    expired.skills = vec![pb::Skill {
        skill: "first-aid".into(),
        credential: Some(pb::Credential {
            title: "急救证".into(),
            number: "A-1".into(),
            issuer: "红十字会".into(),
            expire_time: ts(&suite, 25),
        }),
    }];
    let expired = register(&mut vols, expired).await;
    let mut valid = volunteer("护士乙", BUILDING, &[]);
    valid.skills = vec![pb::Skill {
        skill: "first-aid".into(),
        credential: Some(pb::Credential {
            title: "急救证".into(),
            number: "A-2".into(),
            issuer: "红十字会".into(),
            expire_time: ts(&suite, 24 * 365),
        }),
    }];
    valid.capacity = Some(pb::Capacity {
        weekly_minutes: 100,
        max_open_tasks: 3,
    });
    let over_capacity = register(&mut vols, valid).await;
    let mut sunday = volunteer("周末", BUILDING, &[]);
    sunday.skills = vec![pb::Skill {
        skill: "first-aid".into(),
        credential: Some(pb::Credential {
            title: "急救证".into(),
            number: "A-3".into(),
            issuer: "红十字会".into(),
            expire_time: None,
        }),
    }];
    sunday.availability = Some(pb::Availability {
        weekly: vec![pb::WeeklyWindow {
            day: 7,
            start_minute: 8 * 60,
            end_minute: 9 * 60,
        }],
        exceptions: vec![],
    });
    let sunday = register(&mut vols, sunday).await;

    let mut n = need(&suite, "急救陪护", &[], 1);
    n.skills = vec![pb::SkillRequirement {
        skill: "first-aid".into(),
        credential_required: true,
    }];
    let mut needs = suite.needs(&staff).await;
    let n = needs
        .create_need(pb::CreateNeedRequest {
            request_id: "n".into(),
            need: Some(n),
            publish: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut matching = suite.matching(&staff).await;
    for v in [&expired, &over_capacity, &sunday] {
        let err = matching
            .offer_need(pb::OfferNeedRequest {
                need: n.name.clone(),
                volunteer: v.name.clone(),
                note: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{} was offered: {err:?}",
            v.display_name
        );
    }
    let found = matching
        .find_candidates(pb::FindCandidatesRequest {
            need: n.name.clone(),
            max_candidates: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.candidates.is_empty());
    let reasons: Vec<i32> = found.exclusions.iter().map(|x| x.reason).collect();
    for r in [
        pb::ExclusionReason::Credential,
        pb::ExclusionReason::Capacity,
        pb::ExclusionReason::Availability,
    ] {
        assert!(reasons.contains(&(r as i32)), "{r:?} not in {reasons:?}");
    }
    let err = matching
        .offer_need(pb::OfferNeedRequest {
            need: n.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Personal data: a supervisor and staff of another community see none of it.
    let supervisor = suite.token("sup", Role::Supervisor, None, None).await;
    let seen = suite
        .volunteers(&supervisor)
        .await
        .get_volunteer(pb::GetVolunteerRequest {
            name: expired.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(seen.personal_data_hidden);
    assert!(seen.contact.is_none() && seen.location.is_none());
    assert!(
        seen.home.as_ref().unwrap().building.is_empty()
            && seen.home.as_ref().unwrap().address.is_empty()
    );
    assert!(
        seen.skills[0]
            .credential
            .as_ref()
            .unwrap()
            .number
            .is_empty()
    );
    let other_staff = suite
        .token("other", Role::CommunityStaff, Some("620103"), None)
        .await;
    let err = suite
        .volunteers(&other_staff)
        .await
        .get_volunteer(pb::GetVolunteerRequest {
            name: expired.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A volunteer reads only their own record; their own includes their personal data.
    let own = suite
        .token("v", Role::Volunteer, None, Some(&sunday.name))
        .await;
    let mut as_volunteer = suite.volunteers(&own).await;
    let me = as_volunteer
        .get_volunteer(pb::GetVolunteerRequest {
            name: sunday.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!me.personal_data_hidden);
    let err = as_volunteer
        .get_volunteer(pb::GetVolunteerRequest {
            name: expired.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Events carry no personal data.
    let registered = suite.db("matching");
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("SELECT payload FROM events WHERE kind = $1")
        .bind(pb::VolunteerRegistered::full_name())
        .fetch_all(registered.pool())
        .await
        .unwrap();
    for p in payloads {
        let e: pb::VolunteerRegistered = prost::Message::decode(p.as_slice()).unwrap();
        assert!(e.volunteer.unwrap().contact.is_none());
    }
    // Every read that showed personal data is in the audit log; the supervisor's is not.
    let audited = |actor: &'static str| {
        let db = suite.db("matching").clone();
        let resource = expired.name.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM audit_log WHERE actor = $1 AND resource = $2",
            )
            .bind(actor)
            .bind(resource)
            .fetch_one(db.pool())
            .await
            .unwrap()
        }
    };
    eventually(
        Duration::from_secs(5),
        "the staff's reads are audited",
        || {
            let count = audited("community_staff:linhuang-staff");
            async move { count.await >= 1 }
        },
    )
    .await;
    assert_eq!(audited("supervisor:sup").await, 0);
    // A paused volunteer is not offered anything.
    suite
        .volunteers(&own)
        .await
        .pause_volunteer(pb::PauseVolunteerRequest {
            name: sunday.name.clone(),
            until: None,
            reason: "出差".into(),
        })
        .await
        .unwrap();
    let err = matching
        .offer_need(pb::OfferNeedRequest {
            need: n.name.clone(),
            volunteer: sunday.name.clone(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    suite.stop().await;
}

async fn teams_and_organisations_claim_confirm_and_reassign(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;
    let leader = register(&mut vols, volunteer("楼长", BUILDING, &["mutual-help"])).await;
    let team = vols
        .create_team(pb::CreateTeamRequest {
            request_id: "t1".into(),
            team: Some(pb::Team {
                display_name: "1号楼互助队".into(),
                kind: pb::TeamKind::MutualHelp as i32,
                place: Some(tpb::Place {
                    building: BUILDING.into(),
                    ..Default::default()
                }),
                leader: leader.name.clone(),
                skills: vec!["mutual-help".into(), "energy-retrofit".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let org = vols
        .create_organisation(pb::CreateOrganisationRequest {
            request_id: "o1".into(),
            organisation: Some(pb::Organisation {
                display_name: "兰州某供热公司".into(),
                kind: pb::OrganisationKind::Firm as i32,
                communities: vec![COMMUNITY.into()],
                skills: vec!["energy-retrofit".into()],
                contact: Some(tpb::Contact {
                    name: "联络人".into(),
                    phone: "13800000000".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = need(&suite, "老楼节能改造", &["energy-retrofit"], 5);
    n.claim_policy = pb::ClaimPolicy::Confirm as i32;
    n.open_to = vec![
        pb::AssigneeKind::Team as i32,
        pb::AssigneeKind::Organisation as i32,
    ];
    let mut needs = suite.needs(&staff).await;
    let n = needs
        .create_need(pb::CreateNeedRequest {
            request_id: "n".into(),
            need: Some(n),
            publish: true,
        })
        .await
        .unwrap()
        .into_inner();

    // The organisation claims through its own token; staff confirm.
    let partner = suite
        .token("heating", Role::PartnerUnit, None, Some(&org.name))
        .await;
    let mut as_partner = suite.needs(&partner).await;
    let claim = as_partner
        .claim_need(pb::ClaimNeedRequest {
            request_id: "c1".into(),
            need: n.name.clone(),
            claimant: org.name.clone(),
            people: 3,
            team: String::new(),
            plan: "周六施工".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claim.state, pb::AssignmentState::Pending as i32);
    assert_eq!(claim.organisation, org.name);
    // Retrying the claim returns it; claiming for someone else is refused.
    let again = as_partner
        .claim_need(pb::ClaimNeedRequest {
            request_id: "c1".into(),
            need: n.name.clone(),
            claimant: org.name.clone(),
            people: 3,
            team: String::new(),
            plan: "周六施工".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.name, claim.name);
    let err = as_partner
        .claim_need(pb::ClaimNeedRequest {
            request_id: "c2".into(),
            need: n.name.clone(),
            claimant: team.name.clone(),
            people: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let confirmed = needs
        .confirm_claim(pb::ConfirmClaimRequest {
            name: claim.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.state, pb::AssignmentState::Accepted as i32);

    // The team's leader claims the other two places; a volunteer alone may not (not open to them).
    let leader_token = suite
        .token("louzhang", Role::Volunteer, None, Some(&leader.name))
        .await;
    let mut as_leader = suite.needs(&leader_token).await;
    let team_claim = as_leader
        .claim_need(pb::ClaimNeedRequest {
            request_id: "c3".into(),
            need: n.name.clone(),
            claimant: team.name.clone(),
            people: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(team_claim.team, team.name);
    let err = as_leader
        .claim_need(pb::ClaimNeedRequest {
            request_id: "c4".into(),
            need: n.name.clone(),
            claimant: leader.name.clone(),
            people: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let rejected = needs
        .reject_claim(pb::RejectClaimRequest {
            name: team_claim.name.clone(),
            reason: "人数已够".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.state, pb::AssignmentState::Rejected as i32);

    // The community reassigns the organisation's part to the team; the team's leader accepts.
    let mut matching = suite.matching(&staff).await;
    let moved = matching
        .reassign_assignment(pb::ReassignAssignmentRequest {
            name: claim.name.clone(),
            assignee: team.name.clone(),
            reason: "公司改期".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (moved.state, moved.people, moved.previous.as_str()),
        (pb::AssignmentState::Offered as i32, 3, claim.name.as_str())
    );
    let mut leader_matching = suite.matching(&leader_token).await;
    leader_matching
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: moved.name.clone(),
        })
        .await
        .unwrap();
    let done = leader_matching
        .complete_assignment(pb::CompleteAssignmentRequest {
            name: moved.name.clone(),
            minutes: 600,
            participants: 4,
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.participants, 4);
    let mut records = suite.records(&staff).await;
    let per_team = records
        .summarize_service(pb::SummarizeServiceRequest {
            subject_kind: pb::RecordSubject::Team as i32,
            start_time: ts(&suite, -24),
            end_time: ts(&suite, 24),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(per_team.records.len(), 1);
    assert_eq!(
        (
            per_team.records[0].minutes,
            per_team.records[0].person_times
        ),
        (600, 4)
    );
    assert_eq!(per_team.records[0].display_name, "1号楼互助队");
    // The organisation sees its own assignments only.
    let own = suite
        .matching(&partner)
        .await
        .list_assignments(pb::ListAssignmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.assignments.len(), 1);
    assert_eq!(
        own.assignments[0].state,
        pb::AssignmentState::Reassigned as i32
    );
    suite.stop().await;
}

async fn a_batch_plan_fills_places_optimally_and_makes_offers(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;
    // One carer can do both kinds of work, one only elderly care: the plan must give the
    // tutoring to the one who can do it, so both needs are filled.
    let mut all_round = volunteer("全能", BUILDING, &["elderly-care", "tutoring"]);
    all_round.capacity = Some(pb::Capacity {
        weekly_minutes: 600,
        max_open_tasks: 1,
    });
    let both = register(&mut vols, all_round).await;
    let only = register(
        &mut vols,
        volunteer("专一", "620102001001-g02-b01", &["elderly-care"]),
    )
    .await;
    let mut needs = suite.needs(&staff).await;
    let care = needs
        .create_need(pb::CreateNeedRequest {
            request_id: "a".into(),
            need: Some(need(&suite, "探访", &["elderly-care"], 1)),
            publish: true,
        })
        .await
        .unwrap()
        .into_inner();
    let tutoring = needs
        .create_need(pb::CreateNeedRequest {
            request_id: "b".into(),
            need: Some(need(&suite, "四点半课堂", &["tutoring"], 1)),
            publish: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut matching = suite.matching(&staff).await;
    let plan = matching
        .plan_assignments(pb::PlanAssignmentsRequest {
            place: COMMUNITY.into(),
            make_offers: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((plan.places_requested, plan.places_filled), (2, 2));
    assert!(plan.unfilled.is_empty());
    let pairs: Vec<(String, String)> = plan
        .assignments
        .iter()
        .map(|a| (a.need.clone(), a.volunteer.clone()))
        .collect();
    assert!(
        pairs.contains(&(care.name.clone(), only.name.clone())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&(tutoring.name.clone(), both.name.clone())),
        "{pairs:?}"
    );
    assert_eq!(plan.offers.len(), 2);
    assert!(
        plan.offers
            .iter()
            .all(|o| o.origin == pb::AssignmentOrigin::Plan as i32)
    );
    let both_token = suite
        .token("both", Role::Volunteer, None, Some(&both.name))
        .await;
    eventually(
        Duration::from_secs(5),
        "the plan's offer reaches its volunteer",
        || {
            let suite = &suite;
            let token = both_token.clone();
            async move {
                let list = suite
                    .matching(&token)
                    .await
                    .list_assignments(pb::ListAssignmentsRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                list.assignments.len() == 1
            }
        },
    )
    .await;
    suite.stop().await;
}

/// Routing's feed, stood in: routing's own database and `EventFeed` server from the kit, with
/// real `CaseRouted` events appended the way routing appends them.
struct RoutingFeed {
    db: minqing_kit::db::Db,
}

impl RoutingFeed {
    async fn serve(suite: &Suite, listener: tokio::net::TcpListener) -> Self {
        use minqing_kit::{
            feed::EventFeedService,
            server::{GrpcServer, ServeContext},
        };
        let db = minqing_kit::db::Db::connect(&suite.test_db.options("routing"))
            .await
            .unwrap();
        db.migrate(&minqing_kit::db::Migrations {
            sqlite: &[],
            postgres: &[],
        })
        .await
        .unwrap();
        let mut server = GrpcServer::new("routing-feed");
        server.add(EventFeedService::new(db.clone(), suite.shutdown.clone()).into_server(1 << 20));
        let ctx = ServeContext {
            config: Default::default(),
            tokens: suite.tokens.clone(),
            shutdown: suite.shutdown.clone(),
        };
        tokio::spawn(server.serve(listener, ctx));
        Self { db }
    }

    async fn append<M: prost::Message + Name>(&self, suite: &Suite, subject: &str, event: &M) {
        use minqing_kit::feed::{self, EventMeta};
        let mut tx = self.db.begin().await.unwrap();
        feed::append(
            &mut tx,
            &EventMeta::current("system:routing"),
            subject,
            event,
            suite.clock.now_micros(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

fn routed(
    case: &str,
    category: &str,
    suitable: bool,
    suite: &Suite,
) -> minqing_proto::minqing::routing::v1::CaseRouted {
    use minqing_proto::minqing::routing::v1 as rpb;
    let place = tpb::Place {
        district: DISTRICT.into(),
        street: STREET.into(),
        community: COMMUNITY.into(),
        grid: GRID.into(),
        building: BUILDING.into(),
        location: None,
        address: "3号楼2单元".into(),
    };
    rpb::CaseRouted {
        route: Some(rpb::CaseRoute {
            case: case.into(),
            facts: Some(rpb::CaseFacts {
                case: case.into(),
                category: category.into(),
                place: Some(place),
                urgency: tpb::Urgency::High as i32,
                title: "独居老人需要陪同就医".into(),
                description: "老人腿脚不便，周四要去医院复查".into(),
                volunteer_suitable: suitable,
                ..Default::default()
            }),
            ..Default::default()
        }),
        cause: rpb::RouteCause::Submitted as i32,
        volunteer_suitable: suitable,
        category: category.into(),
        place_codes: vec![
            DISTRICT.into(),
            STREET.into(),
            COMMUNITY.into(),
            GRID.into(),
            BUILDING.into(),
        ],
        title: "独居老人需要陪同就医".into(),
        description: "老人腿脚不便，周四要去医院复查".into(),
        case: case.into(),
        disposition: tpb::Disposition::Committed as i32,
        unit: "units/linhuang".into(),
        due_time: ts(suite, 72),
        time_limit_working_days: 3,
        ..Default::default()
    }
}

/// The routing consumer on its own, fed routing events by a stand-in feed (routing does not
/// run): one need per case however often it is routed, none for unsuitable cases, and a need
/// called off when the case's routing is cancelled. The whole chain with routing for real is
/// `a_case_routed_as_volunteer_suitable_becomes_a_need_matched_claimed_done_and_rated`.
async fn the_routing_consumer_makes_one_need_per_case_and_calls_it_off(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let Some(suite) = Suite::start_opts(backend, |o| {
        o.routing = None;
        if let Some(m) = o.matching.as_mut() {
            m.consume_routing = true;
            m.routing_url = url.clone();
        }
    })
    .await
    else {
        return;
    };
    let routing = RoutingFeed::serve(&suite, listener).await;
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;
    let carer = register(&mut vols, volunteer("王师傅", BUILDING, &["elderly-care"])).await;

    // A real case, submitted to intake, that routing judged suitable for volunteers.
    let mut intake = suite.intake(&staff).await;
    let mut submission = submission("visit-1");
    submission.category = ELDERLY_VISITS.into();
    let case = intake.submit_case(submission).await.unwrap().into_inner();
    routing
        .append(
            &suite,
            &case.name,
            &routed(&case.name, ELDERLY_VISITS, true, &suite),
        )
        .await;
    // Not suitable, and another case that will be cancelled.
    routing
        .append(
            &suite,
            "cases/01a00000-0000-7000-8000-000000000001",
            &routed(
                "cases/01a00000-0000-7000-8000-000000000001",
                STREETLIGHTS,
                false,
                &suite,
            ),
        )
        .await;
    let withdrawn = "cases/01a00000-0000-7000-8000-000000000002";
    routing
        .append(
            &suite,
            withdrawn,
            &routed(withdrawn, ELDERLY_VISITS, true, &suite),
        )
        .await;
    // Routed again after a rejection: still one need.
    routing
        .append(
            &suite,
            &case.name,
            &routed(&case.name, ELDERLY_VISITS, true, &suite),
        )
        .await;

    let needs = suite.needs(&staff).await;
    let list_for = |case: String| {
        let mut needs = needs.clone();
        async move {
            needs
                .list_needs(pb::ListNeedsRequest {
                    case,
                    states: vec![1, 2, 3, 4, 5],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .needs
        }
    };
    eventually(
        Duration::from_secs(10),
        "the routed cases become needs",
        || {
            let (a, b) = (list_for(case.name.clone()), list_for(withdrawn.to_string()));
            async move { a.await.len() == 1 && b.await.len() == 1 }
        },
    )
    .await;
    let need = list_for(case.name.clone()).await.remove(0);
    assert_eq!(need.source, pb::NeedSource::Case as i32);
    assert_eq!(need.state, pb::NeedState::Open as i32);
    assert_eq!(need.community, COMMUNITY);
    assert_eq!(need.urgency, tpb::Urgency::High as i32);
    assert_eq!(need.skills[0].skill, "elderly-care");
    assert!(
        list_for("cases/01a00000-0000-7000-8000-000000000001".into())
            .await
            .is_empty()
    );

    // The case's routing is cancelled (withdrawn): its need is called off.
    let cancel = minqing_proto::minqing::routing::v1::RoutingCancelled {
        route: Some(minqing_proto::minqing::routing::v1::CaseRoute {
            case: withdrawn.into(),
            ..Default::default()
        }),
        reason: "withdrawn by the resident".into(),
    };
    routing.append(&suite, withdrawn, &cancel).await;
    eventually(
        Duration::from_secs(10),
        "the withdrawn case's need is cancelled",
        || {
            let f = list_for(withdrawn.to_string());
            async move {
                f.await
                    .first()
                    .is_some_and(|n| n.state == pb::NeedState::Cancelled as i32)
            }
        },
    )
    .await;

    // Matched, claimed by the volunteer, done and rated.
    let found = suite
        .matching(&staff)
        .await
        .find_candidates(pb::FindCandidatesRequest {
            need: need.name.clone(),
            max_candidates: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.candidates[0].volunteer, carer.name);
    let carer_token = suite
        .token("wang", Role::Volunteer, None, Some(&carer.name))
        .await;
    let claim = suite
        .needs(&carer_token)
        .await
        .claim_need(pb::ClaimNeedRequest {
            request_id: "claim".into(),
            need: need.name.clone(),
            claimant: carer.name.clone(),
            people: 1,
            team: String::new(),
            plan: "周四上午陪同".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (claim.state, claim.case.as_str()),
        (pb::AssignmentState::Accepted as i32, case.name.as_str())
    );
    let mut carer_matching = suite.matching(&carer_token).await;
    carer_matching
        .complete_assignment(pb::CompleteAssignmentRequest {
            name: claim.name.clone(),
            minutes: 180,
            participants: 1,
            note: "已陪同复查".into(),
        })
        .await
        .unwrap();
    let rated = suite
        .matching(&staff)
        .await
        .rate_assignment(pb::RateAssignmentRequest {
            name: claim.name.clone(),
            satisfaction: pb::Satisfaction::Satisfied as i32,
            comment: "谢谢".into(),
            channel: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rated.state, pb::AssignmentState::Done as i32);

    // Supervision and intake's timeline find every step by the case.
    let expected: Vec<String> = [
        pb::NeedPosted::full_name(),
        pb::NeedClaimed::full_name(),
        pb::AssignmentCompleted::full_name(),
        pb::AssignmentRated::full_name(),
    ]
    .into();
    await_kinds(&suite, &expected).await;
    let rated_payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM events WHERE kind = $1")
        .bind(pb::AssignmentRated::full_name())
        .fetch_one(suite.db("matching").pool())
        .await
        .unwrap();
    let event: pb::AssignmentRated = prost::Message::decode(rated_payload.as_slice()).unwrap();
    let a = event.assignment.unwrap();
    assert_eq!(
        (a.case.as_str(), a.community.as_str(), a.minutes),
        (case.name.as_str(), COMMUNITY, 180)
    );
    assert_eq!(a.place.unwrap().building, BUILDING);
    assert_eq!(
        a.rating.unwrap().satisfaction,
        pb::Satisfaction::Satisfied as i32
    );
    suite.stop().await;
}

/// Issue 4's whole chain over real gRPC with every service running: a case submitted to
/// intake, routed by routing as suitable for volunteers, becomes a need in matching, which is
/// matched, claimed, done and rated; a case routing judges unsuitable makes no need.
async fn a_case_routed_as_volunteer_suitable_becomes_a_need_matched_claimed_done_and_rated(
    backend: Backend,
) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;
    let carer = register(&mut vols, volunteer("王师傅", BUILDING, &["elderly-care"])).await;

    let window = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let mut intake = suite.intake(&window).await;
    let mut visit = submission("visit-1");
    visit.category = ELDERLY_VISITS.into();
    visit.title = "独居老人需要探访".into();
    visit.description = "楼上独居的张奶奶腿脚不便，希望有人定期上门看看".into();
    let case = intake.submit_case(visit).await.unwrap().into_inner();
    let lights = intake
        .submit_case(submission("lights-1"))
        .await
        .unwrap()
        .into_inner();

    // Routing routes both; intake shows it to the resident.
    let reader = intake.clone();
    let state_of = |name: String| {
        let mut intake = reader.clone();
        async move {
            intake
                .get_case(ipb::GetCaseRequest { name })
                .await
                .unwrap()
                .into_inner()
                .state
        }
    };
    eventually(Duration::from_secs(20), "both cases are routed", || {
        let (a, b) = (state_of(case.name.clone()), state_of(lights.name.clone()));
        async move {
            let routed = |s: i32| s != ipb::CaseState::Submitted as i32;
            routed(a.await) && routed(b.await)
        }
    })
    .await;

    let needs = suite.needs(&staff).await;
    let list_for = |case: String| {
        let mut needs = needs.clone();
        async move {
            needs
                .list_needs(pb::ListNeedsRequest {
                    case,
                    states: vec![1, 2, 3, 4, 5],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .needs
        }
    };
    eventually(
        Duration::from_secs(20),
        "the suitable case becomes a need",
        || {
            let f = list_for(case.name.clone());
            async move { f.await.len() == 1 }
        },
    )
    .await;
    let need = list_for(case.name.clone()).await.remove(0);
    assert_eq!(need.source, pb::NeedSource::Case as i32);
    assert_eq!(need.state, pb::NeedState::Open as i32);
    assert_eq!(need.community, COMMUNITY);
    assert_eq!(need.skills[0].skill, "elderly-care");
    assert!(
        list_for(lights.name.clone()).await.is_empty(),
        "a streetlight is no work for volunteers"
    );

    // Matched, claimed by the volunteer, done and rated.
    let found = suite
        .matching(&staff)
        .await
        .find_candidates(pb::FindCandidatesRequest {
            need: need.name.clone(),
            max_candidates: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.candidates[0].volunteer, carer.name);
    let carer_token = suite
        .token("wang", Role::Volunteer, None, Some(&carer.name))
        .await;
    let claim = suite
        .needs(&carer_token)
        .await
        .claim_need(pb::ClaimNeedRequest {
            request_id: "claim".into(),
            need: need.name.clone(),
            claimant: carer.name.clone(),
            people: 1,
            team: String::new(),
            plan: "每周二上午上门".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (claim.state, claim.case.as_str()),
        (pb::AssignmentState::Accepted as i32, case.name.as_str())
    );
    suite
        .matching(&carer_token)
        .await
        .complete_assignment(pb::CompleteAssignmentRequest {
            name: claim.name.clone(),
            minutes: 90,
            participants: 1,
            note: "已上门探访".into(),
        })
        .await
        .unwrap();
    let rated = suite
        .matching(&staff)
        .await
        .rate_assignment(pb::RateAssignmentRequest {
            name: claim.name.clone(),
            satisfaction: pb::Satisfaction::Satisfied as i32,
            comment: "谢谢".into(),
            channel: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rated.state, pb::AssignmentState::Done as i32);
    let rated_payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM events WHERE kind = $1")
        .bind(pb::AssignmentRated::full_name())
        .fetch_one(suite.db("matching").pool())
        .await
        .unwrap();
    let event: pb::AssignmentRated = prost::Message::decode(rated_payload.as_slice()).unwrap();
    let a = event.assignment.unwrap();
    assert_eq!((a.case.as_str(), a.minutes), (case.name.as_str(), 90));
    suite.stop().await;
}

async fn an_unanswered_offer_expires_and_goes_to_the_next_candidate(backend: Backend) {
    let Some(suite) = Suite::start_full(backend, |_| {}, |m| m.sweep_interval_seconds = 1).await
    else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let mut vols = suite.volunteers(&staff).await;
    let first = register(&mut vols, volunteer("甲", BUILDING, &["elderly-care"])).await;
    let second = register(
        &mut vols,
        volunteer("乙", "620102001001-g01-b02", &["elderly-care"]),
    )
    .await;
    let mut n = need(&suite, "探访", &["elderly-care"], 1);
    n.start_time = ts(&suite, 72);
    n.end_time = ts(&suite, 80);
    let n = suite
        .needs(&staff)
        .await
        .create_need(pb::CreateNeedRequest {
            request_id: "n".into(),
            need: Some(n),
            publish: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut matching = suite.matching(&staff).await;
    let offer = matching
        .offer_need(pb::OfferNeedRequest {
            need: n.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offer.assignee, first.name);
    // 48 hours pass unanswered.
    suite.clock.advance(chrono::Duration::hours(49));
    eventually(
        Duration::from_secs(10),
        "the offer expires and is re-offered",
        || {
            let mut matching = matching.clone();
            let need = n.name.clone();
            async move {
                let list = matching
                    .list_assignments(pb::ListAssignmentsRequest {
                        need,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                list.assignments.len() == 2
            }
        },
    )
    .await;
    let expired = matching
        .get_assignment(pb::GetAssignmentRequest {
            name: offer.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expired.state, pb::AssignmentState::Expired as i32);
    let list = matching
        .list_assignments(pb::ListAssignmentsRequest {
            need: n.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = list
        .assignments
        .iter()
        .find(|a| a.name != offer.name)
        .unwrap();
    assert_eq!(
        (next.assignee.as_str(), next.previous.as_str()),
        (second.name.as_str(), offer.name.as_str())
    );
    // Too late to accept the expired one.
    let first_token = suite
        .token("jia", Role::Volunteer, None, Some(&first.name))
        .await;
    let err = suite
        .matching(&first_token)
        .await
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: offer.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    await_kinds(&suite, &[pb::AssignmentExpired::full_name()]).await;
    suite.stop().await;
}

backend_tests!(
    menu_need_is_matched_offered_accepted_done_and_rated,
    safety_rules_privacy_and_validation,
    teams_and_organisations_claim_confirm_and_reassign,
    a_batch_plan_fills_places_optimally_and_makes_offers,
    a_case_routed_as_volunteer_suitable_becomes_a_need_matched_claimed_done_and_rated,
    the_routing_consumer_makes_one_need_per_case_and_calls_it_off,
    an_unanswered_offer_expires_and_goes_to_the_next_candidate,
);
