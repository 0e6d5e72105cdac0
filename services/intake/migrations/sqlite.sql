-- Intake's tables on SQLite. Mutable, filterable facts are columns; what the resident raised
-- (fixed once accepted) is one JSON document in `submission`.
CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    recorded_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    channel INTEGER NOT NULL,
    category TEXT NOT NULL,
    urgency INTEGER NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    lat_e6 INTEGER,
    lng_e6 INTEGER,
    reporter_phone TEXT NOT NULL,
    state INTEGER NOT NULL,
    disposition INTEGER NOT NULL,
    handling_unit TEXT NOT NULL,
    due_time INTEGER,
    cluster_id TEXT,
    supplement_count INTEGER NOT NULL,
    withdraw_reason TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    submission TEXT NOT NULL,
    UNIQUE (recorded_by, request_id)
);
CREATE INDEX cases_category_time ON cases (category, create_time);
CREATE INDEX cases_district ON cases (district, id);
CREATE INDEX cases_street ON cases (street, id);
CREATE INDEX cases_community ON cases (community, id);
CREATE INDEX cases_grid ON cases (grid, id);
CREATE INDEX cases_phone ON cases (reporter_phone) WHERE reporter_phone <> '';
CREATE INDEX cases_cluster ON cases (cluster_id) WHERE cluster_id IS NOT NULL;

CREATE TABLE clusters (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    reason TEXT NOT NULL,
    create_time INTEGER NOT NULL
);

CREATE TABLE supplements (
    case_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (case_id, request_id)
);

-- A case's timeline is its events.
CREATE INDEX events_subject ON events (subject);
