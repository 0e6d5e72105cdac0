-- Matching's tables on SQLite. Each resource is one JSON document (`doc`, the domain value)
-- plus the columns its lists filter and sort on, and a `version` for optimistic concurrency
-- (SQLite has no FOR UPDATE). A volunteer's version is bumped by every change to their
-- assignments too, so a check against their capacity and a new offer cannot interleave.
CREATE TABLE volunteers (
    id TEXT PRIMARY KEY,
    registered_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    external_id TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    state INTEGER NOT NULL,
    party_member INTEGER NOT NULL,
    organisation TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (registered_by, request_id)
);
CREATE UNIQUE INDEX volunteers_external_id ON volunteers (external_id) WHERE external_id <> '';
CREATE INDEX volunteers_district ON volunteers (district, id);
CREATE INDEX volunteers_street ON volunteers (street, id);
CREATE INDEX volunteers_community ON volunteers (community, id);
CREATE INDEX volunteers_grid ON volunteers (grid, id);
CREATE INDEX volunteers_organisation ON volunteers (organisation) WHERE organisation <> '';

CREATE TABLE volunteer_skills (
    volunteer_id TEXT NOT NULL,
    skill TEXT NOT NULL,
    PRIMARY KEY (volunteer_id, skill)
);
CREATE INDEX volunteer_skills_skill ON volunteer_skills (skill, volunteer_id);

CREATE TABLE volunteer_teams (
    volunteer_id TEXT NOT NULL,
    team_id TEXT NOT NULL,
    PRIMARY KEY (volunteer_id, team_id)
);
CREATE INDEX volunteer_teams_team ON volunteer_teams (team_id, volunteer_id);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    kind INTEGER NOT NULL,
    state INTEGER NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (created_by, request_id)
);

CREATE TABLE organisations (
    id TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    kind INTEGER NOT NULL,
    state INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (created_by, request_id)
);

CREATE TABLE organisation_places (
    organisation_id TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    PRIMARY KEY (organisation_id, community)
);

CREATE TABLE needs (
    id TEXT PRIMARY KEY,
    posted_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    source INTEGER NOT NULL,
    case_name TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    state INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL,
    urgency INTEGER NOT NULL,
    menu_id TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (posted_by, request_id)
);
CREATE INDEX needs_state_start ON needs (state, start_time, id);
CREATE INDEX needs_community ON needs (community, start_time, id);
CREATE INDEX needs_case ON needs (case_name) WHERE case_name <> '';
CREATE INDEX needs_menu ON needs (menu_id) WHERE menu_id <> '';

CREATE TABLE need_skills (
    need_id TEXT NOT NULL,
    skill TEXT NOT NULL,
    PRIMARY KEY (need_id, skill)
);
CREATE INDEX need_skills_skill ON need_skills (skill, need_id);

CREATE TABLE menus (
    id TEXT PRIMARY KEY,
    published_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    publish_time INTEGER NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (published_by, request_id)
);

CREATE TABLE assignments (
    id TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    need_id TEXT NOT NULL,
    case_name TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    building TEXT NOT NULL,
    assignee TEXT NOT NULL,
    team_id TEXT NOT NULL,
    organisation_id TEXT NOT NULL,
    origin INTEGER NOT NULL,
    state INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    effort_minutes INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    offer_expire_time INTEGER NOT NULL,
    complete_time INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX assignments_request ON assignments (created_by, request_id) WHERE request_id <> '';
CREATE INDEX assignments_need ON assignments (need_id, id);
CREATE INDEX assignments_assignee ON assignments (assignee, state, start_time);
CREATE INDEX assignments_offers ON assignments (state, offer_expire_time);
CREATE INDEX assignments_done ON assignments (state, complete_time);
CREATE INDEX assignments_case ON assignments (case_name) WHERE case_name <> '';
