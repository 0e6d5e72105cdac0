-- Calendar edits re-plan running clocks (src/replan.rs). Each clock records the city whose
-- calendar counts its deadline and the version of that calendar its schedule (deadline,
-- warning, escalations) was last planned with; running and overdue clocks planned with an
-- older version than their calendar's are re-planned, batch by batch, and found again after
-- a restart. Clocks written before this carry version 0, so they are all looked at once.
ALTER TABLE clocks ADD COLUMN city TEXT NOT NULL DEFAULT '';
ALTER TABLE clocks ADD COLUMN calendar_version INTEGER NOT NULL DEFAULT 0;
UPDATE clocks SET city = COALESCE(json_extract(doc, '$.city'), '');
-- Only clocks with a deadline (running 1, overdue 3) are ever re-planned, so closed and paused
-- ones, however many, cost the search nothing.
CREATE INDEX clocks_replan ON clocks (city, calendar_version) WHERE state IN (1, 3);
