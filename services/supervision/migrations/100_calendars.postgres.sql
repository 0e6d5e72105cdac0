-- Calendars: one JSON document per city (the domain value: working hours and special days)
-- and a version for optimistic concurrency.
CREATE TABLE calendars (
    city TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    doc TEXT NOT NULL
);
