-- Tables with the same columns and indexes as intake's `cases` and the kit's `events` (plus the
-- subject index intake adds), so pgbench does exactly the database work SubmitCase does.
DROP SCHEMA IF EXISTS pgbench_intake CASCADE;
CREATE SCHEMA pgbench_intake;
SET search_path TO pgbench_intake;
CREATE TABLE cases (
    id TEXT PRIMARY KEY, recorded_by TEXT NOT NULL, request_id TEXT NOT NULL, request_hash TEXT NOT NULL,
    channel BIGINT NOT NULL, category TEXT NOT NULL, urgency BIGINT NOT NULL,
    district TEXT NOT NULL, street TEXT NOT NULL, community TEXT NOT NULL, grid TEXT NOT NULL, building TEXT NOT NULL,
    lat_e6 BIGINT, lng_e6 BIGINT, reporter_phone TEXT NOT NULL, state BIGINT NOT NULL, disposition BIGINT NOT NULL,
    handling_unit TEXT NOT NULL, due_time BIGINT, cluster_id TEXT, supplement_count BIGINT NOT NULL,
    withdraw_reason TEXT NOT NULL, create_time BIGINT NOT NULL, update_time BIGINT NOT NULL, version BIGINT NOT NULL,
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
CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, create_time BIGINT NOT NULL,
    payload BYTEA NOT NULL, actor TEXT NOT NULL, traceparent TEXT NOT NULL, tracestate TEXT NOT NULL,
    PRIMARY KEY (txid, seq)
);
CREATE INDEX events_subject ON events (subject);
