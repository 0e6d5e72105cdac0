//! A case's clock as a value, and the pure rules that move it: where its deadline falls on
//! the calendar, when its warning and escalations are due, and what each step of the case's
//! handling does to it. No storage and no wire types here.

use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use minqing_kit::time::Micros;

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Where a clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Counting towards the deadline.
    Running,
    /// Stopped, no deadline.
    Paused,
    /// Past the deadline, unanswered.
    Overdue,
    /// Answered or withdrawn.
    Closed,
}

impl State {
    /// The wire value (minqing.supervision.v1.ClockState).
    pub fn wire(self) -> i32 {
        match self {
            State::Running => 1,
            State::Paused => 2,
            State::Overdue => 3,
            State::Closed => 4,
        }
    }

    /// From the wire.
    pub fn from_wire(v: i32) -> Option<State> {
        [State::Running, State::Paused, State::Overdue, State::Closed]
            .into_iter()
            .find(|s| s.wire() == v)
    }
}

/// Why a clock is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pause {
    /// Papers are missing.
    Papers,
    /// An escalation awaits approval.
    Approval,
}

/// Why a clock closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Close {
    /// Resolved with a result.
    Resolved,
    /// Referred to the competent body.
    Referred,
    /// Done on the spot.
    Immediate,
    /// Withdrawn by the resident.
    Withdrawn,
    /// Handed to an emergency line.
    Emergency,
}

/// The place codes of a case, top down (empty where unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// District.
    pub district: String,
    /// Street office.
    pub street: String,
    /// Community.
    pub community: String,
    /// Grid.
    pub grid: String,
    /// Building.
    pub building: String,
}

impl Place {
    /// The code at a ladder level (1 district … 5 building); the city (the district's first
    /// four digits) for 0.
    pub fn at(&self, level: i32) -> String {
        match level {
            1 => self.district.clone(),
            2 => self.street.clone(),
            3 => self.community.clone(),
            4 => self.grid.clone(),
            5 => self.building.clone(),
            _ => self.district.get(..4).unwrap_or_default().to_string(),
        }
    }

    /// Every known code, top down.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        [
            &self.district,
            &self.street,
            &self.community,
            &self.grid,
            &self.building,
        ]
        .into_iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
    }
}

/// A unit's acceptance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// "assignments/{id}".
    pub assignment: String,
    /// "units/{id}".
    pub unit: String,
    /// Accept by then.
    pub accept_by: Micros,
    /// When accepted.
    pub accept_time: Option<Micros>,
    /// Whether the window passed.
    pub overdue: bool,
    /// Whether the warning went out.
    pub warned: bool,
}

/// One step of a clock's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When.
    pub time: Micros,
    /// The event kind.
    pub kind: String,
    /// For people.
    pub summary: String,
}

/// A case's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// The case id (without "cases/").
    pub case_id: String,
    /// The disposition in force (minqing.type.v1.Disposition).
    pub disposition: i32,
    /// Where it stands.
    pub state: State,
    /// The handling unit ("units/{id}").
    pub unit: String,
    /// The unit's ladder level (minqing.type.v1.PlaceLevel; 0 unknown or off the ladder).
    pub unit_level: i32,
    /// Where the case is.
    pub place: Place,
    /// The catalogue item.
    pub category: String,
    /// The calendar's city.
    pub city: String,
    /// When the deadline in force started counting.
    pub start: Option<Micros>,
    /// The deadline in force.
    pub due: Option<Micros>,
    /// Its limit in working days.
    pub limit_days: i32,
    /// Its limit in minutes (emergencies).
    pub limit_minutes: i32,
    /// Why paused.
    pub pause: Option<Pause>,
    /// Since when.
    pub pause_time: Option<Micros>,
    /// Whether the warning for the deadline in force went out.
    pub warned: bool,
    /// Overdue escalations for the deadline in force.
    pub escalations: i32,
    /// Why closed.
    pub close: Option<Close>,
    /// When closed.
    pub close_time: Option<Micros>,
    /// Whether answered by the deadline.
    pub on_time: bool,
    /// The acceptance window in force.
    pub acceptance: Option<Acceptance>,
    /// History, oldest first.
    pub history: Vec<Entry>,
    /// Bumped whenever the deadline in force changes: names its timers.
    pub generation: i64,
    /// Whether the reporter rated the answer.
    #[serde(default)]
    pub rated: bool,
    /// When the clock began.
    pub create_time: Micros,
    /// When it last changed.
    pub update_time: Micros,
    /// Row version (not stored in the document).
    #[serde(skip)]
    pub version: i64,
    /// The version of its calendar its deadline, warning and escalations were last planned
    /// with (a column, not stored in the document): an edit of the calendar re-plans the
    /// clocks planned with an older one (see `replan`).
    #[serde(skip)]
    pub calendar_version: i64,
}

/// What re-planning a clock on its edited calendar did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replanned {
    /// Nothing of its schedule changed.
    Unchanged,
    /// Its deadline stands, but its warning or next escalation moved.
    Retimed,
    /// Its deadline moved; the one before.
    Moved(Option<Micros>),
}

impl Clock {
    /// A new clock for a case, not yet started.
    pub fn new(case_id: &str, now: Micros) -> Self {
        Self {
            case_id: case_id.to_string(),
            disposition: 0,
            state: State::Paused,
            unit: String::new(),
            unit_level: 0,
            place: Place::default(),
            category: String::new(),
            city: String::new(),
            start: None,
            due: None,
            limit_days: 0,
            limit_minutes: 0,
            pause: None,
            pause_time: None,
            warned: false,
            escalations: 0,
            close: None,
            close_time: None,
            on_time: false,
            acceptance: None,
            history: Vec::new(),
            generation: 0,
            rated: false,
            create_time: now,
            update_time: now,
            version: 0,
            calendar_version: 0,
        }
    }

    /// Whether its schedule is counted on its working-day calendar: it runs (or is overdue)
    /// towards a deadline of working days. Emergencies count wall-clock minutes; paused and
    /// closed clocks have no deadline.
    pub fn on_calendar(&self) -> bool {
        matches!(self.state, State::Running | State::Overdue)
            && self.limit_minutes <= 0
            && self.start.is_some()
    }

    /// The deadline its start and limit give on `cal` (the one [`Clock::run_days`] set, when
    /// counted on the same calendar).
    pub fn planned_due(&self, cal: &Calendar) -> Option<Micros> {
        self.start
            .map(|s| cal.add_working_days(s, self.limit_days.max(0).unsigned_abs()))
    }

    /// Whether its deadline is the one `cal` gives (always true off the calendar).
    pub fn due_agrees(&self, cal: &Calendar) -> bool {
        !self.on_calendar() || self.planned_due(cal) == self.due
    }

    /// Re-plans it on its calendar as edited: the deadline is counted again from its own
    /// start and limit (a pause ends with a fresh start, so its history is in them), and the
    /// warning and escalation still to come are timed again. `scheduled` are its unfired
    /// timers as stored. Whenever anything moves, the generation is bumped, so the timers get
    /// new ids and the ones they replace can never fire.
    ///
    /// What already happened stands: a warning given stays given when the deadline moves
    /// earlier (a new one goes out before a deadline moved later); an overdue clock stays
    /// overdue with its escalations counted, even if its deadline moves past now — its next
    /// escalation is timed from the new deadline, and escalations are never taken back. A
    /// deadline moved into the past makes the clock escalate at once.
    pub fn replan(&mut self, cal: &Calendar, policy: &Policy, scheduled: &[Timer]) -> Replanned {
        if !self.on_calendar() {
            return Replanned::Unchanged;
        }
        let Some(due) = self.planned_due(cal) else {
            return Replanned::Unchanged;
        };
        let previous = self.due;
        if previous == Some(due) {
            let on_deadline =
                |t: &&Timer| matches!(t.kind, TimerKind::Warning | TimerKind::Escalation);
            let mut stored: Vec<(i64, Micros)> = scheduled
                .iter()
                .filter(on_deadline)
                .map(|t| (t.id, t.fire))
                .collect();
            let mut planned: Vec<(i64, Micros)> = timers(self, cal, policy)
                .iter()
                .filter(on_deadline)
                .map(|t| (t.id, t.fire))
                .collect();
            stored.sort_unstable();
            planned.sort_unstable();
            if stored == planned {
                return Replanned::Unchanged;
            }
            self.generation += 1;
            return Replanned::Retimed;
        }
        if self.state == State::Running && previous.is_none_or(|p| due > p) {
            self.warned = false;
        }
        self.due = Some(due);
        self.generation += 1;
        Replanned::Moved(previous)
    }

    /// Whether it is closed.
    pub fn closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Notes a step in the history.
    pub fn note(&mut self, time: Micros, kind: &str, summary: impl Into<String>) {
        self.history.push(Entry {
            time,
            kind: kind.to_string(),
            summary: summary.into(),
        });
        self.update_time = self.update_time.max(time);
    }

    /// Runs towards a deadline of `days` working days from `start`.
    pub fn run_days(&mut self, cal: &Calendar, start: Micros, days: i32) {
        self.start = Some(start);
        self.limit_days = days;
        self.limit_minutes = 0;
        self.set_due(cal.add_working_days(start, days.max(0).unsigned_abs()));
    }

    /// Runs towards a deadline of `minutes` wall-clock minutes from `start` (emergencies).
    pub fn run_minutes(&mut self, start: Micros, minutes: i32) {
        self.start = Some(start);
        self.limit_days = 0;
        self.limit_minutes = minutes;
        self.set_due(start + i64::from(minutes) * MICROS_PER_MINUTE);
    }

    fn set_due(&mut self, due: Micros) {
        if self.due != Some(due) || self.state != State::Running {
            self.generation += 1;
            self.warned = false;
            self.escalations = 0;
        }
        self.due = Some(due);
        self.state = State::Running;
        self.pause = None;
        self.pause_time = None;
    }

    /// Pauses: no deadline until it runs again.
    pub fn pause(&mut self, why: Pause, at: Micros) {
        if self.state != State::Paused || self.pause != Some(why) {
            self.generation += 1;
        }
        self.state = State::Paused;
        self.pause = Some(why);
        self.pause_time = Some(at);
        self.due = None;
        self.warned = false;
        self.escalations = 0;
    }

    /// Closes; `on_time` is judged against the deadline in force.
    pub fn close(&mut self, why: Close, at: Micros) {
        self.on_time = self.state != State::Overdue && self.due.is_none_or(|d| at <= d);
        self.state = State::Closed;
        self.close = Some(why);
        self.close_time = Some(at);
        self.pause = None;
        self.generation += 1;
        if let Some(a) = self.acceptance.as_mut()
            && a.accept_time.is_none()
        {
            // Nothing is left to accept.
            a.overdue = a.overdue || at > a.accept_by;
        }
    }

    /// Whether the acceptance window in force still waits for acceptance.
    pub fn acceptance_pending(&self) -> bool {
        !self.closed()
            && self
                .acceptance
                .as_ref()
                .is_some_and(|a| a.accept_time.is_none() && !a.overdue)
    }

    /// The ladder level an escalation goes to: `step` levels above the handling unit (or
    /// above the case's grid when the unit's level is unknown), the city above districts.
    pub fn escalation_level(&self, step: i32) -> i32 {
        let base = if (1..=5).contains(&self.unit_level) {
            self.unit_level
        } else {
            4
        };
        (base - step).max(0)
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Warn before the deadline.
    Warning,
    /// Escalate after it (`step` 1, 2, …).
    Escalation,
    /// Warn before the acceptance window ends.
    AcceptanceWarning,
    /// The acceptance window ended.
    AcceptanceOverdue,
}

impl TimerKind {
    /// Stored value.
    pub fn wire(self) -> i64 {
        match self {
            TimerKind::Warning => 1,
            TimerKind::Escalation => 2,
            TimerKind::AcceptanceWarning => 3,
            TimerKind::AcceptanceOverdue => 4,
        }
    }

    /// From the stored value.
    pub fn from_wire(v: i64) -> Option<TimerKind> {
        [
            TimerKind::Warning,
            TimerKind::Escalation,
            TimerKind::AcceptanceWarning,
            TimerKind::AcceptanceOverdue,
        ]
        .into_iter()
        .find(|k| k.wire() == v)
    }
}

/// A due time of a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Its id: the same clock, deadline and step always give the same id, so a timer that
    /// fired is never scheduled again.
    pub id: i64,
    /// The case.
    pub case_id: String,
    /// What it does.
    pub kind: TimerKind,
    /// Escalation step (1, 2, …), 0 otherwise.
    pub step: i32,
    /// When it fires.
    pub fire: Micros,
}

/// How far ahead of deadlines warnings go out, and how often overdue cases escalate again.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Warn this many working minutes before a working-day deadline.
    pub warning_working_minutes: i64,
    /// Escalate again after this many working minutes still overdue.
    pub repeat_working_minutes: i64,
    /// Warn this many minutes before an emergency's deadline.
    pub emergency_warning_minutes: i64,
    /// Escalate an emergency again after this many minutes.
    pub emergency_repeat_minutes: i64,
    /// Warn this many minutes before an acceptance window ends.
    pub acceptance_warning_minutes: i64,
    /// Escalations at most per deadline.
    pub max_escalations: i32,
}

/// A stable 63-bit id for a timer.
pub fn timer_id(case_id: &str, kind: TimerKind, key: &str, step: i32) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{case_id}|{}|{key}|{step}", kind.wire()));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 1) as i64
}

/// The timers a clock needs now: its next warning or escalation, and its acceptance window's.
pub fn timers(clock: &Clock, cal: &Calendar, policy: &Policy) -> Vec<Timer> {
    let mut out = Vec::new();
    let generation = clock.generation.to_string();
    let mut push = |kind, key: &str, step, fire| {
        out.push(Timer {
            id: timer_id(&clock.case_id, kind, key, step),
            case_id: clock.case_id.clone(),
            kind,
            step,
            fire,
        });
    };
    let emergency = clock.limit_minutes > 0;
    if let (Some(due), State::Running | State::Overdue) = (clock.due, clock.state) {
        if clock.state == State::Running && !clock.warned {
            let warn = if emergency {
                due - policy.emergency_warning_minutes * MICROS_PER_MINUTE
            } else {
                cal.shift_working_minutes(due, -policy.warning_working_minutes)
            };
            push(TimerKind::Warning, &generation, 0, warn);
        }
        if clock.escalations < policy.max_escalations {
            let step = clock.escalations + 1;
            let after = i64::from(clock.escalations);
            let fire = if emergency {
                due + after * policy.emergency_repeat_minutes * MICROS_PER_MINUTE
            } else if after == 0 {
                due
            } else {
                cal.shift_working_minutes(due, after * policy.repeat_working_minutes)
            };
            push(TimerKind::Escalation, &generation, step, fire);
        }
    }
    if clock.acceptance_pending()
        && let Some(a) = &clock.acceptance
    {
        if !a.warned {
            let warn = a.accept_by - policy.acceptance_warning_minutes * MICROS_PER_MINUTE;
            push(TimerKind::AcceptanceWarning, &a.assignment, 0, warn);
        }
        push(TimerKind::AcceptanceOverdue, &a.assignment, 0, a.accept_by);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{SAMPLE, parse_file};
    use chrono::NaiveDate;

    fn cal() -> Calendar {
        parse_file(SAMPLE).unwrap().remove(0)
    }

    fn policy() -> Policy {
        Policy {
            warning_working_minutes: 240,
            repeat_working_minutes: 420,
            emergency_warning_minutes: 10,
            emergency_repeat_minutes: 30,
            acceptance_warning_minutes: 30,
            max_escalations: 3,
        }
    }

    fn at(cal: &Calendar, d: u32, hh: u32, mm: u32) -> Micros {
        cal.instant(NaiveDate::from_ymd_opt(2026, 11, d).unwrap(), hh * 60 + mm)
    }

    #[test]
    fn a_running_clock_warns_then_escalates_a_level_higher_each_time() {
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        c.unit_level = 4; // a grid
        c.run_days(&cal, at(&cal, 23, 10, 0), 3);
        assert_eq!(c.due, Some(at(&cal, 26, 17, 30)));
        let t = timers(&c, &cal, &policy());
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].kind, TimerKind::Warning);
        assert_eq!(t[0].fire, at(&cal, 26, 13, 30));
        assert_eq!(
            (t[1].kind, t[1].step, t[1].fire),
            (TimerKind::Escalation, 1, at(&cal, 26, 17, 30))
        );
        // After the warning and the first escalation, the next goes one working day later.
        c.warned = true;
        c.state = State::Overdue;
        c.escalations = 1;
        let t = timers(&c, &cal, &policy());
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].step, t[0].fire), (2, at(&cal, 27, 17, 30)));
        assert_eq!(c.escalation_level(1), 3);
        assert_eq!(c.escalation_level(2), 2);
        c.escalations = 3;
        assert!(timers(&c, &cal, &policy()).is_empty());
    }

    #[test]
    fn timer_ids_are_stable_and_change_with_the_deadline() {
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        c.run_days(&cal, at(&cal, 23, 10, 0), 3);
        let a = timers(&c, &cal, &policy());
        assert_eq!(a, timers(&c, &cal, &policy()));
        c.run_days(&cal, at(&cal, 24, 10, 0), 3);
        let b = timers(&c, &cal, &policy());
        assert_ne!(a[0].id, b[0].id);
        // The same deadline again keeps the ids: a fired warning is not repeated.
        let gen_before = c.generation;
        c.run_days(&cal, at(&cal, 24, 10, 0), 3);
        assert_eq!(c.generation, gen_before);
    }

    #[test]
    fn paused_and_closed_clocks_have_no_deadline_timers() {
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        c.run_days(&cal, at(&cal, 23, 10, 0), 3);
        c.pause(Pause::Papers, at(&cal, 24, 10, 0));
        assert!(timers(&c, &cal, &policy()).is_empty());
        c.run_days(&cal, at(&cal, 25, 10, 0), 3);
        assert_eq!(c.due, Some(at(&cal, 30, 17, 30)));
        c.close(Close::Resolved, at(&cal, 27, 10, 0));
        assert!(c.on_time);
        assert!(timers(&c, &cal, &policy()).is_empty());
    }

    #[test]
    fn emergencies_count_minutes_and_acceptance_windows_are_clocked() {
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        let start = at(&cal, 28, 23, 0); // a Saturday night: minutes, not working days
        c.run_minutes(start, 60);
        c.acceptance = Some(Acceptance {
            assignment: "assignments/a1".into(),
            unit: "units/u1".into(),
            accept_by: start + 30 * MICROS_PER_MINUTE,
            accept_time: None,
            overdue: false,
            warned: false,
        });
        let t = timers(&c, &cal, &policy());
        let fire = |k| t.iter().find(|x| x.kind == k).unwrap().fire;
        assert_eq!(fire(TimerKind::Warning), start + 50 * MICROS_PER_MINUTE);
        assert_eq!(fire(TimerKind::Escalation), start + 60 * MICROS_PER_MINUTE);
        assert_eq!(fire(TimerKind::AcceptanceWarning), start);
        assert_eq!(
            fire(TimerKind::AcceptanceOverdue),
            start + 30 * MICROS_PER_MINUTE
        );
        c.close(Close::Resolved, start + 90 * MICROS_PER_MINUTE);
        assert!(!c.on_time);
    }

    fn edited(cal: &Calendar, date: u32, kind: crate::calendar::DayKind) -> Calendar {
        let mut c = cal.clone();
        let special = crate::calendar::Special {
            kind,
            description: "edit".into(),
        };
        c.edit(
            None,
            [(NaiveDate::from_ymd_opt(2026, 11, date).unwrap(), special)],
            [],
        );
        c
    }

    fn warning(c: &Clock, cal: &Calendar) -> Option<Micros> {
        timers(c, cal, &policy())
            .iter()
            .find(|t| t.kind == TimerKind::Warning)
            .map(|t| t.fire)
    }

    #[test]
    fn a_holiday_in_the_window_moves_the_deadline_and_its_timers_a_working_day_later() {
        use crate::calendar::DayKind;
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        c.run_days(&cal, at(&cal, 23, 17, 0), 3);
        let before = timers(&c, &cal, &policy());
        let generation = c.generation;
        // Wednesday 25 Nov off: Monday + 3 working days is Friday, not Thursday.
        let holiday = edited(&cal, 25, DayKind::Holiday);
        assert_eq!(
            c.replan(&holiday, &policy(), &before),
            Replanned::Moved(Some(at(&cal, 26, 17, 30)))
        );
        assert_eq!(c.due, Some(at(&cal, 27, 17, 30)));
        assert_eq!(c.generation, generation + 1);
        assert_eq!(warning(&c, &holiday), Some(at(&cal, 27, 13, 30)));
        let after = timers(&c, &holiday, &policy());
        assert!(after.iter().all(|t| before.iter().all(|b| b.id != t.id)));
        // Planned again on the same calendar: nothing moves.
        let generation = c.generation;
        assert_eq!(c.replan(&holiday, &policy(), &after), Replanned::Unchanged);
        assert_eq!(c.generation, generation);
        // A holiday after the deadline changes nothing either.
        let later = edited(&holiday, 30, DayKind::Holiday);
        assert_eq!(c.replan(&later, &policy(), &after), Replanned::Unchanged);
    }

    #[test]
    fn a_make_up_day_moves_the_deadline_earlier_and_a_given_warning_stands() {
        use crate::calendar::DayKind;
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        // Thursday 26 Nov + 3: Friday, Monday, Tuesday 1 Dec.
        c.run_days(&cal, at(&cal, 26, 10, 0), 3);
        let before = timers(&c, &cal, &policy());
        c.warned = true;
        let make_up = edited(&cal, 28, DayKind::Workday);
        assert_eq!(
            c.replan(&make_up, &policy(), &before),
            Replanned::Moved(Some(at(&cal, 30, 17, 30) + 86_400_000_000))
        );
        assert_eq!(c.due, Some(at(&cal, 30, 17, 30)));
        // Earlier: the warning already given stands, none is planned again.
        assert!(c.warned);
        assert_eq!(warning(&c, &make_up), None);
        // Later again (the make-up day withdrawn): the unit is warned before the new deadline.
        let now_on = timers(&c, &make_up, &policy());
        assert!(matches!(
            c.replan(&cal, &policy(), &now_on),
            Replanned::Moved(_)
        ));
        assert!(!c.warned);
        assert_eq!(
            warning(&c, &cal),
            Some(at(&cal, 30, 13, 30) + 86_400_000_000)
        );
    }

    #[test]
    fn an_overdue_clock_stays_overdue_and_its_next_escalation_is_timed_again() {
        use crate::calendar::DayKind;
        let cal = cal();
        let mut c = Clock::new("c1", 0);
        c.run_days(&cal, at(&cal, 23, 10, 0), 3);
        c.warned = true;
        c.state = State::Overdue;
        c.escalations = 1;
        let before = timers(&c, &cal, &policy());
        assert_eq!(before[0].fire, at(&cal, 27, 17, 30));
        // Friday off, after the deadline: the deadline stands, the repeat moves to Monday.
        let friday = edited(&cal, 27, DayKind::Holiday);
        assert_eq!(c.replan(&friday, &policy(), &before), Replanned::Retimed);
        assert_eq!(c.due, Some(at(&cal, 26, 17, 30)));
        let after = timers(&c, &friday, &policy());
        assert_eq!((after[0].step, after[0].fire), (2, at(&cal, 30, 17, 30)));
        assert_ne!(after[0].id, before[0].id);
        // Tuesday off, in the window: the deadline moves past now, yet the escalation that
        // fired stands and the clock stays overdue.
        let tuesday = edited(&friday, 24, DayKind::Holiday);
        assert!(matches!(
            c.replan(&tuesday, &policy(), &after),
            Replanned::Moved(_)
        ));
        assert_eq!(
            (c.state, c.escalations, c.warned),
            (State::Overdue, 1, true)
        );
        assert_eq!(c.due, Some(at(&cal, 30, 17, 30)));
    }

    #[test]
    fn emergencies_and_paused_and_closed_clocks_are_not_on_the_calendar() {
        use crate::calendar::DayKind;
        let cal = cal();
        let holiday = edited(&cal, 24, DayKind::Holiday);
        let mut e = Clock::new("e", 0);
        e.run_minutes(at(&cal, 23, 10, 0), 60);
        assert_eq!(e.replan(&holiday, &policy(), &[]), Replanned::Unchanged);
        let mut p = Clock::new("p", 0);
        p.run_days(&cal, at(&cal, 23, 10, 0), 3);
        p.pause(Pause::Papers, at(&cal, 23, 11, 0));
        assert_eq!(p.replan(&holiday, &policy(), &[]), Replanned::Unchanged);
        let mut d = Clock::new("d", 0);
        d.run_days(&cal, at(&cal, 23, 10, 0), 3);
        d.close(Close::Resolved, at(&cal, 23, 11, 0));
        assert_eq!(d.replan(&holiday, &policy(), &[]), Replanned::Unchanged);
        assert!(d.due_agrees(&holiday) && e.due_agrees(&holiday));
    }
}
