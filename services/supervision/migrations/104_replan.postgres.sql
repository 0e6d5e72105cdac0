-- Calendar edits re-plan running clocks (src/replan.rs). Each clock records the city whose
-- calendar counts its deadline and the version of that calendar its schedule (deadline,
-- warning, escalations) was last planned with; running and overdue clocks planned with an
-- older version than their calendar's are re-planned, batch by batch, and found again after
-- a restart. Clocks written before this carry version 0, so they are all looked at once.
ALTER TABLE clocks ADD COLUMN city TEXT NOT NULL DEFAULT '';
ALTER TABLE clocks ADD COLUMN calendar_version BIGINT NOT NULL DEFAULT 0;
UPDATE clocks SET city = COALESCE(doc::jsonb ->> 'city', '');
-- Only clocks with a deadline (running 1, overdue 3) are ever re-planned: with the state
-- before the version, the search seeks straight to them, so closed and paused ones, however
-- many, cost it nothing. (A whole index, not a partial one: a partial index makes SQLite
-- re-plan statements on the table whenever their bound values change.)
CREATE INDEX clocks_replan ON clocks (city, state, calendar_version);
