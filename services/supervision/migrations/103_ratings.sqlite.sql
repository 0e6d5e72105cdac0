-- Per-case ratings (one per case: the primary key refuses a second), with the columns
-- indicators group by.
CREATE TABLE case_ratings (
    case_id TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    handling_score INTEGER NOT NULL,
    staff_score INTEGER NOT NULL,
    on_behalf INTEGER NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX case_ratings_time ON case_ratings (create_time);

-- Residents' monthly scores of streets and communities; `resident` is a hash of the phone.
CREATE TABLE place_scores (
    place TEXT NOT NULL,
    period TEXT NOT NULL,
    resident TEXT NOT NULL,
    score INTEGER NOT NULL,
    comment TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (place, period, resident)
);
CREATE INDEX place_scores_period ON place_scores (period, place);

-- Two-way assessments, once per period, rater and ratee.
CREATE TABLE assessments (
    period TEXT NOT NULL,
    rater TEXT NOT NULL,
    ratee TEXT NOT NULL,
    direction INTEGER NOT NULL,
    score INTEGER NOT NULL,
    comment TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (period, rater, ratee)
);
CREATE INDEX assessments_ratee ON assessments (period, ratee);

-- Supervisors' notes on cases.
CREATE TABLE annotations (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE INDEX annotations_case ON annotations (case_id, create_time);
