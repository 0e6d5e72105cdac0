-- Routing's tables (PostgreSQL). Whole records are kept as JSON in `data`; the columns beside it
-- are what queries filter and order on. Times are microseconds since the epoch.
CREATE TABLE units (
    id TEXT PRIMARY KEY,
    kind BIGINT NOT NULL,
    active BIGINT NOT NULL,
    data TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE requests (
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);
CREATE TABLE routes (
    case_id TEXT PRIMARY KEY,
    state BIGINT NOT NULL,
    disposition BIGINT NOT NULL,
    handling_unit TEXT NOT NULL,
    coordinating_unit TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    station TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    version BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX routes_handling ON routes (handling_unit, case_id);
CREATE INDEX routes_coordinating ON routes (coordinating_unit, case_id);
CREATE INDEX routes_station ON routes (station, case_id);
CREATE TABLE assignments (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    state BIGINT NOT NULL,
    accept_by BIGINT NOT NULL,
    overdue BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX assignments_unit ON assignments (unit_id, id);
CREATE INDEX assignments_case ON assignments (case_id, id);
CREATE INDEX assignments_pending ON assignments (state, overdue, accept_by);
-- Ordered like the kit's event feed: by (txid, seq), read only below the oldest running
-- transaction, so a desk never skips an item written by a slower concurrent transaction.
CREATE TABLE desk_items (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    unit_id TEXT NOT NULL,
    kind BIGINT NOT NULL,
    note TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (txid, seq)
);
CREATE INDEX desk_items_unit ON desk_items (unit_id, txid, seq);
CREATE TABLE desk_cursors (
    unit_id TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    update_time BIGINT NOT NULL
);
CREATE TABLE rule_loads (
    id BIGINT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    load_time BIGINT NOT NULL
);
CREATE TABLE stations (
    id TEXT PRIMARY KEY,
    place TEXT NOT NULL,
    data TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE TABLE deputies (
    id TEXT PRIMARY KEY,
    kind BIGINT NOT NULL,
    data TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE TABLE deputy_stations (
    station_id TEXT NOT NULL,
    deputy_id TEXT NOT NULL,
    PRIMARY KEY (station_id, deputy_id)
);
CREATE TABLE rotas (
    station_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    update_time BIGINT NOT NULL
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    state BIGINT NOT NULL,
    version BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX sessions_station ON sessions (station_id, id);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    deputy_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    title TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE INDEX visits_session ON visits (session_id, id);
CREATE TABLE station_cases (
    case_id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    deputy_id TEXT NOT NULL,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE INDEX station_cases_station ON station_cases (station_id, case_id);
CREATE TABLE suggestions (
    id TEXT PRIMARY KEY,
    deputy_id TEXT NOT NULL,
    station_id TEXT NOT NULL,
    state BIGINT NOT NULL,
    version BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX suggestions_deputy ON suggestions (deputy_id, id);
CREATE INDEX suggestions_station ON suggestions (station_id, id);
