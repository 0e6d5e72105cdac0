//! The indicators consumer applies a batch of events at once (facts read with one statement,
//! each changed case written once): a batch must leave the same facts, rollups and hot spots
//! as the same events applied one per batch.

use minqing_kit::{
    backend_tests,
    db::{Backend, Db},
    testing::TestDatabase,
    time::to_timestamp,
};
use minqing_proto::minqing::{
    events::v1::Event, intake::v1 as ipb, routing::v1 as rpb, supervision::v1 as spb,
    r#type::v1 as tpb,
};
use minqing_supervision::indicators::{self, IndicatorsConfig, facts::RATING_KIND};
use prost::{Message, Name};
use sqlx::Row;

const HOUR: i64 = 3_600_000_000;
/// 2026-03-02 08:00 UTC.
const T0: i64 = 1_772_438_400_000_000;

fn event<M: Message + Name>(n: usize, subject: &str, kind: Option<&str>, m: &M, at: i64) -> Event {
    let kind = kind.map_or_else(M::full_name, str::to_owned);
    Event {
        cursor: format!("c1.0.{n}"),
        id: format!("event-{n}"),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{kind}"),
            value: m.encode_to_vec(),
        }),
        kind,
        subject: subject.into(),
        create_time: Some(to_timestamp(at)),
        actor: "test".into(),
        traceparent: String::new(),
        tracestate: String::new(),
        source: "test".into(),
    }
}

fn submitted(n: usize, case: &str, grid: &str, category: &str, at: i64) -> Event {
    let case = ipb::Case {
        name: format!("cases/{case}"),
        channel: tpb::Channel::Hotline as i32,
        place: Some(tpb::Place {
            district: "620102".into(),
            street: "620102001".into(),
            community: "620102001001".into(),
            grid: grid.into(),
            ..Default::default()
        }),
        category: category.into(),
        create_time: Some(to_timestamp(at)),
        ..Default::default()
    };
    let subject = case.name.clone();
    event(
        n,
        &subject,
        None,
        &ipb::CaseSubmitted { case: Some(case) },
        at,
    )
}

/// Events touching the same cases several times, with hot spots that form, grow and are
/// held back by a withdrawal within the same run of events.
fn events() -> Vec<Event> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for i in 0..6 {
        let at = T0 + i * HOUR;
        let id = format!("lamp-{i}");
        out.push(submitted(next(), &id, "g01", "street-lights", at));
        if i == 1 {
            // Withdrawn before the third report: it does not count toward the hot spot.
            out.push(event(
                next(),
                &format!("cases/{id}"),
                None,
                &ipb::CaseWithdrawn::default(),
                at + 1,
            ));
        }
        out.push(event(
            next(),
            &format!("cases/{id}"),
            None,
            &rpb::CaseRouted {
                unit: "units/lights".into(),
                due_time: Some(to_timestamp(at + 48 * HOUR)),
                ..Default::default()
            },
            at + 2,
        ));
    }
    // Another grid of the same community: its cases join the community's hot spot.
    for i in 0..4 {
        let at = T0 + 10 * HOUR + i * HOUR;
        out.push(submitted(next(), &format!("road-{i}"), "g02", "roads", at));
        out.push(submitted(
            next(),
            &format!("water-{i}"),
            "g03",
            "roads",
            at + 1,
        ));
    }
    for i in 0..3 {
        let case = format!("cases/lamp-{i}");
        out.push(event(
            next(),
            &case,
            None,
            &rpb::AssignmentResolved {
                result: "fixed".into(),
                on_time: i != 2,
                ..Default::default()
            },
            T0 + 20 * HOUR + i * HOUR,
        ));
        let clock = spb::CaseClock {
            case: case.clone(),
            ..Default::default()
        };
        out.push(event(
            next(),
            &format!("clocks/{i}"),
            None,
            &spb::OverdueEscalated {
                clock: Some(clock.clone()),
                ..Default::default()
            },
            T0 + 21 * HOUR,
        ));
        if i == 0 {
            out.push(event(
                next(),
                &format!("clocks/{i}"),
                None,
                &spb::ClockClosed { clock: Some(clock) },
                T0 + 22 * HOUR,
            ));
        }
        out.push(event(
            next(),
            &format!("ratings/{i}"),
            Some(RATING_KIND),
            &spb::CaseRated {
                rating: Some(spb::CaseRating {
                    case,
                    handling_score: 3 + i as i32,
                    ..Default::default()
                }),
            },
            T0 + 23 * HOUR,
        ));
    }
    // A payload that cannot be read, for a case the batch knows nothing else of: skipped.
    let mut broken = submitted(next(), "broken", "g09", "roads", T0);
    if let Some(p) = broken.payload.as_mut() {
        p.value = vec![0xff, 0xff, 0xff];
    }
    out.push(broken);
    out
}

fn config() -> IndicatorsConfig {
    IndicatorsConfig {
        hotspot_threshold: 3,
        hotspot_window_hours: 72,
    }
}

async fn apply(db: &Db, events: &[Event]) {
    let cfg = config();
    let mut tx = db.begin().await.unwrap();
    indicators::apply_events(&mut tx, events, Some((&cfg, T0 + 100 * HOUR)))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Every row of `table` (the given columns), as text, sorted.
async fn rows(db: &Db, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(db.pool())
        .await
        .unwrap();
    let mut out: Vec<String> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.try_get::<String, _>(i) {
                    Ok(s) => s,
                    Err(_) => row.try_get::<i64, _>(i).unwrap().to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

async fn state(db: &Db) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let facts = rows(
        db,
        &format!("SELECT {} FROM ind_cases", indicators::facts::columns()),
    )
    .await;
    let rollup = rows(
        db,
        &format!(
            "SELECT grain, period, place, dim, value, {} FROM ind_rollup",
            indicators::rollup::count_columns().join(", ")
        ),
    )
    .await;
    let hotspots = rows(
        db,
        "SELECT place, level, category, district, case_count, first_time, last_time, \
         window_hours FROM ind_hotspots",
    )
    .await;
    // The hot spots' cases by place and ordinal (their ids differ between the two runs).
    let members = rows(
        db,
        "SELECT h.place, h.category, c.ordinal, c.case_id FROM ind_hotspot_cases c \
         JOIN ind_hotspots h ON h.id = c.hotspot_id",
    )
    .await;
    (facts, rollup, hotspots, members)
}

async fn a_batch_equals_one_event_at_a_time(backend: Backend) {
    let Some(test_db) = TestDatabase::new(backend).await else {
        return;
    };
    let batched = minqing_kit::db::Db::connect(&test_db.options("batched"))
        .await
        .unwrap();
    indicators::migrate(&batched).await.unwrap();
    let single = minqing_kit::db::Db::connect(&test_db.options("single"))
        .await
        .unwrap();
    indicators::migrate(&single).await.unwrap();
    let events = events();
    // The first few one by one on both, so the batch also finds stored facts to change.
    for e in &events[..3] {
        apply(&batched, std::slice::from_ref(e)).await;
    }
    // Then two batches: the second's cases join a hot spot the first raised (read back from
    // the database), and raise and join others of their own.
    apply(&batched, &events[3..10]).await;
    apply(&batched, &events[10..]).await;
    for e in &events {
        apply(&single, std::slice::from_ref(e)).await;
    }
    let (facts, rollup, hotspots, members) = state(&batched).await;
    let expected = state(&single).await;
    // The run is one the test means: every readable case stored, hot spots raised and grown.
    assert_eq!(facts.len(), 14, "{facts:#?}");
    assert!(
        !facts.iter().any(|f| f.starts_with("broken|")),
        "{facts:#?}"
    );
    assert_eq!(hotspots.len(), 4, "{hotspots:#?}");
    assert!(
        members.iter().any(|m| m.contains("lamp-5")),
        "the grid's hot spot grew: {members:#?}"
    );
    assert!(
        !members.iter().any(|m| m.contains("lamp-1")),
        "the withdrawn case is not counted: {members:#?}"
    );
    assert_eq!(facts, expected.0, "facts");
    assert_eq!(rollup, expected.1, "rollups");
    assert_eq!(hotspots, expected.2, "hot spots");
    assert_eq!(members, expected.3, "hot spots' cases");
    assert!(!rollup.is_empty());
}

/// More cases than one statement may name: the reads and writes are cut into several.
async fn a_batch_larger_than_one_statement(backend: Backend) {
    let Some(test_db) = TestDatabase::new(backend).await else {
        return;
    };
    let db = minqing_kit::db::Db::connect(&test_db.options("big"))
        .await
        .unwrap();
    indicators::migrate(&db).await.unwrap();
    let n = minqing_kit::db::MAX_ROWS_PER_STATEMENT + 300;
    let first: Vec<Event> = (0..n)
        .map(|i| submitted(i, &format!("c{i:05}"), &format!("g{i:05}"), "roads", T0))
        .collect();
    apply(&db, &first).await;
    let routed: Vec<Event> = (0..n)
        .map(|i| {
            event(
                n + i,
                &format!("cases/c{i:05}"),
                None,
                &rpb::CaseRouted {
                    unit: "units/roads".into(),
                    ..Default::default()
                },
                T0 + HOUR,
            )
        })
        .collect();
    apply(&db, &routed).await;
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ind_cases WHERE unit = 'units/roads' AND receive_time > 0",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(count, n as i64);
    let received: i64 = sqlx::query_scalar(
        "SELECT received FROM ind_rollup WHERE grain = 'D' AND place = '620102' AND dim = ''",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(received, n as i64);
}

backend_tests!(
    a_batch_equals_one_event_at_a_time,
    a_batch_larger_than_one_statement
);
