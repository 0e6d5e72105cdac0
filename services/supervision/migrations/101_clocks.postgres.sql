-- Case clocks: the domain value as a JSON document beside the columns lists filter and sort
-- on, and a version for optimistic concurrency (the consumers and the timer worker both
-- change clocks). `due_time` is 0 when there is no deadline.
CREATE TABLE clocks (
    case_id TEXT PRIMARY KEY,
    state BIGINT NOT NULL,
    unit TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    due_time BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    version BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX clocks_due ON clocks (state, due_time, case_id);
CREATE INDEX clocks_unit ON clocks (unit, due_time, case_id);

-- The due-time index: every warning and escalation still to fire. A timer fires once: the
-- worker marks it fired (and when) in the transaction that writes its event. The in-memory queue is
-- rebuilt from here at start.
CREATE TABLE timers (
    id BIGINT PRIMARY KEY,
    case_id TEXT NOT NULL,
    kind BIGINT NOT NULL,
    step BIGINT NOT NULL,
    fire_time BIGINT NOT NULL,
    fired BIGINT NOT NULL,
    fired_time BIGINT NOT NULL
);
CREATE INDEX timers_due ON timers (fire_time) WHERE fired = 0;
CREATE INDEX timers_case ON timers (case_id);

-- Units as routing announces them: their ladder level, for escalations.
CREATE TABLE units (
    name TEXT PRIMARY KEY,
    level BIGINT NOT NULL
);
