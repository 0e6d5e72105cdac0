-- Calendars: one JSON document per city (the domain value: working hours and special days)
-- and a version for optimistic concurrency.
CREATE TABLE calendars (
    city TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    doc TEXT NOT NULL
);
