-- A hot spot's cases as rows: the whole list was one document rewritten at every report that
-- joined it, so a hot spot of n reports cost O(n²) bytes written.
CREATE TABLE ind_hotspot_cases (
    hotspot_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    PRIMARY KEY (hotspot_id, case_id)
);
INSERT INTO ind_hotspot_cases (hotspot_id, case_id, ordinal)
    SELECT h.id, j.value, j.key FROM ind_hotspots h, json_each(h.cases) j;
ALTER TABLE ind_hotspots DROP COLUMN cases;
