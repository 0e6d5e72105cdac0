-- Routing's tables (SQLite). Whole records are kept as JSON in `data`; the columns beside it
-- are what queries filter and order on. Times are microseconds since the epoch.
CREATE TABLE units (
    id TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    active INTEGER NOT NULL,
    data TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE requests (
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (scope, request_id)
);
CREATE TABLE routes (
    case_id TEXT PRIMARY KEY,
    state INTEGER NOT NULL,
    disposition INTEGER NOT NULL,
    handling_unit TEXT NOT NULL,
    coordinating_unit TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    station TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX routes_handling ON routes (handling_unit, case_id);
CREATE INDEX routes_coordinating ON routes (coordinating_unit, case_id);
CREATE INDEX routes_station ON routes (station, case_id);
CREATE TABLE assignments (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    accept_by INTEGER NOT NULL,
    overdue INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX assignments_unit ON assignments (unit_id, id);
CREATE INDEX assignments_case ON assignments (case_id, id);
CREATE INDEX assignments_pending ON assignments (state, overdue, accept_by);
CREATE TABLE desk_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txid INTEGER NOT NULL DEFAULT 0,
    unit_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    note TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX desk_items_unit ON desk_items (unit_id, seq);
CREATE TABLE desk_cursors (
    unit_id TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE TABLE rule_loads (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    load_time INTEGER NOT NULL
);
CREATE TABLE stations (
    id TEXT PRIMARY KEY,
    place TEXT NOT NULL,
    data TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE TABLE deputies (
    id TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    data TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE TABLE deputy_stations (
    station_id TEXT NOT NULL,
    deputy_id TEXT NOT NULL,
    PRIMARY KEY (station_id, deputy_id)
);
CREATE TABLE rotas (
    station_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX sessions_station ON sessions (station_id, id);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    deputy_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    title TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE INDEX visits_session ON visits (session_id, id);
CREATE TABLE station_cases (
    case_id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    deputy_id TEXT NOT NULL,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE INDEX station_cases_station ON station_cases (station_id, case_id);
CREATE TABLE suggestions (
    id TEXT PRIMARY KEY,
    deputy_id TEXT NOT NULL,
    station_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX suggestions_deputy ON suggestions (deputy_id, id);
CREATE INDEX suggestions_station ON suggestions (station_id, id);
