//! The facts of one case as the feeds told them, and how each event changes them. Every
//! field is set by one feed only (or set the same way by two), so the facts — and the rollups
//! computed from them — do not depend on the order in which the three feeds are read.

use std::collections::HashMap;

use prost::Message;
use sqlx::Row;

use minqing_kit::{db::Tx, error::StoreError, time::from_timestamp};
use minqing_proto::minqing::{
    events::v1::Event, intake::v1 as ipb, routing::v1 as rpb, supervision::v1 as spb,
};

/// One case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The case's id (without "cases/").
    pub case_id: String,
    /// When intake accepted it (0 until intake's event is read).
    pub receive_time: i64,
    /// District code.
    pub district: String,
    /// Street code.
    pub street: String,
    /// Community code.
    pub community: String,
    /// Grid code.
    pub grid: String,
    /// Catalogue item.
    pub category: String,
    /// `minqing.type.v1.Channel` value.
    pub channel: i32,
    /// Liaison station it was raised at.
    pub station: String,
    /// The deputy who received it there.
    pub deputy: String,
    /// Handling unit ("units/{id}").
    pub unit: String,
    /// The deadline in force (0 while none).
    pub due_time: i64,
    /// When the resident was answered (0 while not).
    pub answer_time: i64,
    /// Answered by the deadline.
    pub on_time: bool,
    /// Resolved by its unit.
    pub resolved: bool,
    /// Referred to the competent body.
    pub referred: bool,
    /// Withdrawn by the resident.
    pub withdrawn: bool,
    /// Escalated as overdue by supervision and not closed since.
    pub overdue: bool,
    /// The resident's rating, 1–5 (0 none).
    pub rating: i32,
    /// The answer as the resident was told.
    pub answer: String,
}

/// The rating event of supervision's ratings part, by its full name.
pub const RATING_KIND: &str = "minqing.supervision.v1.CaseRated";

/// The kinds read from intake's feed.
pub fn intake_kinds() -> Vec<String> {
    [kind::<ipb::CaseSubmitted>(), kind::<ipb::CaseWithdrawn>()].into()
}

/// The kinds read from routing's feed.
pub fn routing_kinds() -> Vec<String> {
    [
        kind::<rpb::CaseRouted>(),
        kind::<rpb::AssignmentResolved>(),
        kind::<rpb::CaseReferred>(),
        kind::<rpb::RoutingCancelled>(),
    ]
    .into()
}

/// The kinds read from supervision's own feed.
pub fn supervision_kinds() -> Vec<String> {
    [
        kind::<spb::OverdueEscalated>(),
        kind::<spb::ClockClosed>(),
        RATING_KIND.to_string(),
    ]
    .into()
}

fn kind<M: prost::Name>() -> String {
    M::full_name()
}

/// "cases/{id}" → id.
pub fn case_id(name: &str) -> Option<&str> {
    name.strip_prefix("cases/").filter(|id| !id.is_empty())
}

/// The case an event is about, if it is one indicators read.
pub fn subject_case(event: &Event) -> Option<String> {
    case_id(&event.subject).map(str::to_owned)
}

fn decode<M: Message + Default>(event: &Event) -> anyhow::Result<M> {
    let payload = event
        .payload
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.id))?;
    Ok(M::decode(payload.value.as_slice())?)
}

fn ts(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().and_then(from_timestamp).unwrap_or(0)
}

/// The case an event changes, read from its payload (the subject for most).
pub fn event_case(event: &Event) -> anyhow::Result<Option<String>> {
    if event.kind == kind::<ipb::CaseSubmitted>() {
        let e: ipb::CaseSubmitted = decode(event)?;
        return Ok(e.case.and_then(|c| case_id(&c.name).map(str::to_owned)));
    }
    if event.kind == kind::<spb::OverdueEscalated>() || event.kind == kind::<spb::ClockClosed>() {
        let clock = if event.kind == kind::<spb::ClockClosed>() {
            decode::<spb::ClockClosed>(event)?.clock
        } else {
            decode::<spb::OverdueEscalated>(event)?.clock
        };
        return Ok(clock.and_then(|c| case_id(&c.case).map(str::to_owned)));
    }
    if event.kind == RATING_KIND {
        let e: spb::CaseRated = decode(event)?;
        return Ok(e.rating.and_then(|r| case_id(&r.case).map(str::to_owned)));
    }
    Ok(subject_case(event))
}

/// Applies `event` to `f`. Returns true for a newly received case (hot spots look at it).
pub fn apply(f: &mut Facts, event: &Event) -> anyhow::Result<bool> {
    let at = ts(&event.create_time);
    let k = event.kind.as_str();
    if k == kind::<ipb::CaseSubmitted>() {
        let Some(case) = decode::<ipb::CaseSubmitted>(event)?.case else {
            return Ok(false);
        };
        let new = f.receive_time == 0;
        f.receive_time = match ts(&case.create_time) {
            0 => at,
            t => t,
        };
        let place = case.place.unwrap_or_default();
        f.district = place.district;
        f.street = place.street;
        f.community = place.community;
        f.grid = place.grid;
        f.category = case.category;
        f.channel = case.channel;
        let details = case.channel_details.unwrap_or_default();
        f.station = details.liaison_station;
        f.deputy = details.deputy;
        return Ok(new);
    }
    if k == kind::<ipb::CaseWithdrawn>() || k == kind::<rpb::RoutingCancelled>() {
        f.withdrawn = true;
    } else if k == kind::<rpb::CaseRouted>() {
        let e: rpb::CaseRouted = decode(event)?;
        f.unit = e.unit;
        f.due_time = ts(&e.due_time);
    } else if k == kind::<rpb::AssignmentResolved>() {
        let e: rpb::AssignmentResolved = decode(event)?;
        if let Some(route) = &e.route
            && !route.handling_unit.is_empty()
        {
            f.unit = route.handling_unit.clone();
        }
        f.answer_time = at;
        f.resolved = true;
        f.referred = false;
        f.on_time = e.on_time;
        f.answer = e.result;
    } else if k == kind::<rpb::CaseReferred>() {
        let e: rpb::CaseReferred = decode(event)?;
        let referral = e.referral.unwrap_or_default();
        f.answer_time = at;
        f.referred = true;
        f.resolved = false;
        let due = ts(&e.due_time);
        f.on_time = due == 0 || at <= due;
        f.answer = if referral.competent_body.is_empty() {
            referral.reason
        } else {
            format!("{}: {}", referral.competent_body, referral.reason)
        };
    } else if k == kind::<spb::OverdueEscalated>() {
        f.overdue = true;
    } else if k == kind::<spb::ClockClosed>() {
        f.overdue = false;
    } else if k == RATING_KIND {
        let e: spb::CaseRated = decode(event)?;
        let score = e.rating.map(|r| r.handling_score).unwrap_or(0);
        if (1..=5).contains(&score) {
            f.rating = score;
        }
    }
    Ok(false)
}

const COLUMNS: &str = "case_id, receive_time, district, street, community, grid, category, \
    channel, station, deputy, unit, due_time, answer_time, on_time, resolved, referred, \
    withdrawn, overdue, rating, answer";

/// The SELECT list for [`from_row`].
pub fn columns() -> &'static str {
    COLUMNS
}

/// Facts from a row selected with [`columns`].
pub fn from_row(row: &sqlx::any::AnyRow) -> Result<Facts, StoreError> {
    let b = |i: usize| -> Result<bool, StoreError> { Ok(row.try_get::<i64, _>(i)? != 0) };
    let n = |i: usize| -> Result<i32, StoreError> { Ok(row.try_get::<i64, _>(i)? as i32) };
    Ok(Facts {
        case_id: row.try_get(0)?,
        receive_time: row.try_get(1)?,
        district: row.try_get(2)?,
        street: row.try_get(3)?,
        community: row.try_get(4)?,
        grid: row.try_get(5)?,
        category: row.try_get(6)?,
        channel: n(7)?,
        station: row.try_get(8)?,
        deputy: row.try_get(9)?,
        unit: row.try_get(10)?,
        due_time: row.try_get(11)?,
        answer_time: row.try_get(12)?,
        on_time: b(13)?,
        resolved: b(14)?,
        referred: b(15)?,
        withdrawn: b(16)?,
        overdue: b(17)?,
        rating: n(18)?,
        answer: row.try_get(19)?,
    })
}

/// One case's facts.
pub async fn load(tx: &mut Tx, case_id: &str) -> Result<Option<Facts>, StoreError> {
    Ok(load_many(tx, &[case_id.to_owned()]).await?.remove(case_id))
}

/// The facts of the cases `ids` that are stored, by case id: one statement for every
/// [`MAX_ROWS_PER_STATEMENT`](minqing_kit::db::MAX_ROWS_PER_STATEMENT) ids (well under either
/// backend's parameter limit).
pub async fn load_many(tx: &mut Tx, ids: &[String]) -> Result<HashMap<String, Facts>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(minqing_kit::db::MAX_ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {COLUMNS} FROM ind_cases WHERE case_id IN ({})",
            minqing_kit::db::placeholders(chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(tx.conn()).await? {
            let f = from_row(&row)?;
            out.insert(f.case_id.clone(), f);
        }
    }
    Ok(out)
}

/// Writes one case's facts.
pub async fn save(tx: &mut Tx, f: &Facts) -> Result<(), StoreError> {
    save_many(tx, [f]).await
}

/// Writes many cases' facts (each case at most once) with multi-row upserts, cut by
/// [`execute_rows`](minqing_kit::db::execute_rows).
pub async fn save_many<'a>(
    tx: &mut Tx,
    facts: impl IntoIterator<Item = &'a Facts>,
) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        20,
        facts,
        |f| {
            // Twelve numbers and the text columns, with room for quoting and separators.
            160 + f.case_id.len()
                + f.district.len()
                + f.street.len()
                + f.community.len()
                + f.grid.len()
                + f.category.len()
                + f.station.len()
                + f.deputy.len()
                + f.unit.len()
                + f.answer.len()
        },
        |values| {
            format!(
                "INSERT INTO ind_cases ({COLUMNS}) VALUES {values} \
                 ON CONFLICT (case_id) DO UPDATE SET receive_time = excluded.receive_time, \
                 district = excluded.district, street = excluded.street, \
                 community = excluded.community, grid = excluded.grid, \
                 category = excluded.category, channel = excluded.channel, \
                 station = excluded.station, deputy = excluded.deputy, unit = excluded.unit, \
                 due_time = excluded.due_time, answer_time = excluded.answer_time, \
                 on_time = excluded.on_time, resolved = excluded.resolved, \
                 referred = excluded.referred, withdrawn = excluded.withdrawn, \
                 overdue = excluded.overdue, rating = excluded.rating, answer = excluded.answer"
            )
        },
        |q, f| {
            q.bind(f.case_id.clone())
                .bind(f.receive_time)
                .bind(f.district.clone())
                .bind(f.street.clone())
                .bind(f.community.clone())
                .bind(f.grid.clone())
                .bind(f.category.clone())
                .bind(i64::from(f.channel))
                .bind(f.station.clone())
                .bind(f.deputy.clone())
                .bind(f.unit.clone())
                .bind(f.due_time)
                .bind(f.answer_time)
                .bind(i64::from(f.on_time))
                .bind(i64::from(f.resolved))
                .bind(i64::from(f.referred))
                .bind(i64::from(f.withdrawn))
                .bind(i64::from(f.overdue))
                .bind(i64::from(f.rating))
                .bind(f.answer.clone())
        },
    )
    .await?;
    Ok(())
}
