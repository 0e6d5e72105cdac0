-- Indicators (200): the facts of each case as the feeds told them, and rollups of those
-- facts. A case counts in the period (city day and month) in which it was received; its
-- contribution is added to one row per (grain, period, place at every level, dimension),
-- so any place's figures for any period read a few rows. `ind_cases` is what a rebuild
-- starts from nothing and must reproduce.
CREATE TABLE ind_cases (
    case_id TEXT PRIMARY KEY,
    receive_time BIGINT NOT NULL DEFAULT 0,
    district TEXT NOT NULL DEFAULT '',
    street TEXT NOT NULL DEFAULT '',
    community TEXT NOT NULL DEFAULT '',
    grid TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    channel BIGINT NOT NULL DEFAULT 0,
    station TEXT NOT NULL DEFAULT '',
    deputy TEXT NOT NULL DEFAULT '',
    unit TEXT NOT NULL DEFAULT '',
    due_time BIGINT NOT NULL DEFAULT 0,
    answer_time BIGINT NOT NULL DEFAULT 0,
    on_time BIGINT NOT NULL DEFAULT 0,
    resolved BIGINT NOT NULL DEFAULT 0,
    referred BIGINT NOT NULL DEFAULT 0,
    withdrawn BIGINT NOT NULL DEFAULT 0,
    overdue BIGINT NOT NULL DEFAULT 0,
    rating BIGINT NOT NULL DEFAULT 0,
    answer TEXT NOT NULL DEFAULT ''
);
CREATE INDEX ind_cases_station ON ind_cases (station, receive_time);
CREATE INDEX ind_cases_district ON ind_cases (district, receive_time);
CREATE INDEX ind_cases_community ON ind_cases (community, category, receive_time);
CREATE INDEX ind_cases_grid ON ind_cases (grid, category, receive_time);

-- grain 'D' (period = YYYYMMDD) or 'M' (period = YYYYMM); dim '' (all), 'category', 'unit'
-- or 'channel'; h0..h19 count answered cases by handling time (see rollup.rs BUCKETS).
CREATE TABLE ind_rollup (
    grain TEXT NOT NULL,
    period BIGINT NOT NULL,
    place TEXT NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    withdrawn BIGINT NOT NULL DEFAULT 0,
    answered BIGINT NOT NULL DEFAULT 0,
    answered_on_time BIGINT NOT NULL DEFAULT 0,
    resolved BIGINT NOT NULL DEFAULT 0,
    overdue BIGINT NOT NULL DEFAULT 0,
    rated BIGINT NOT NULL DEFAULT 0,
    satisfied BIGINT NOT NULL DEFAULT 0,
    rating_sum BIGINT NOT NULL DEFAULT 0,
    handling_sum BIGINT NOT NULL DEFAULT 0,
    h0 BIGINT NOT NULL DEFAULT 0,
    h1 BIGINT NOT NULL DEFAULT 0,
    h2 BIGINT NOT NULL DEFAULT 0,
    h3 BIGINT NOT NULL DEFAULT 0,
    h4 BIGINT NOT NULL DEFAULT 0,
    h5 BIGINT NOT NULL DEFAULT 0,
    h6 BIGINT NOT NULL DEFAULT 0,
    h7 BIGINT NOT NULL DEFAULT 0,
    h8 BIGINT NOT NULL DEFAULT 0,
    h9 BIGINT NOT NULL DEFAULT 0,
    h10 BIGINT NOT NULL DEFAULT 0,
    h11 BIGINT NOT NULL DEFAULT 0,
    h12 BIGINT NOT NULL DEFAULT 0,
    h13 BIGINT NOT NULL DEFAULT 0,
    h14 BIGINT NOT NULL DEFAULT 0,
    h15 BIGINT NOT NULL DEFAULT 0,
    h16 BIGINT NOT NULL DEFAULT 0,
    h17 BIGINT NOT NULL DEFAULT 0,
    h18 BIGINT NOT NULL DEFAULT 0,
    h19 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (place, dim, grain, period, value)
);

-- Systemic problems (hot spots): one row per hot spot, raised once with its event.
CREATE TABLE ind_hotspots (
    id TEXT PRIMARY KEY,
    district TEXT NOT NULL,
    place TEXT NOT NULL,
    level BIGINT NOT NULL,
    category TEXT NOT NULL,
    case_count BIGINT NOT NULL,
    window_hours BIGINT NOT NULL,
    first_time BIGINT NOT NULL,
    last_time BIGINT NOT NULL,
    raise_time BIGINT NOT NULL,
    cases TEXT NOT NULL
);
CREATE INDEX ind_hotspots_place ON ind_hotspots (place, category, last_time);
CREATE INDEX ind_hotspots_district ON ind_hotspots (district, raise_time, id);
