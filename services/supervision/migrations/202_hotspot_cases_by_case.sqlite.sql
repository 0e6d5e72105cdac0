-- Which hot spots a case is in: looked up by case for every batch of newly received cases,
-- and without this index each lookup read the whole table (it grows with every report that
-- joins a hot spot).
CREATE INDEX ind_hotspot_cases_case ON ind_hotspot_cases (case_id);
