-- What supervision keeps of each case's reporter, to answer them (personal data: read only
-- by the reply worker and never put on the feed), and which cluster each case is in.
CREATE TABLE case_contacts (
    case_id TEXT PRIMARY KEY,
    anonymous INTEGER NOT NULL,
    method INTEGER NOT NULL,
    needs_visit INTEGER NOT NULL,
    name TEXT NOT NULL,
    phone TEXT NOT NULL,
    postal_address TEXT NOT NULL,
    online_address TEXT NOT NULL,
    visit_note TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    district TEXT NOT NULL,
    street TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE TABLE cluster_members (
    case_id TEXT PRIMARY KEY,
    cluster TEXT NOT NULL
);
CREATE INDEX cluster_members_cluster ON cluster_members (cluster, case_id);

-- Replies: one per answer (or one per cluster for a collective answer), `dedupe` making
-- a redelivered event a no-op; each reaches its recipients through deliveries.
CREATE TABLE replies (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    cluster TEXT NOT NULL,
    dedupe TEXT NOT NULL UNIQUE,
    create_time INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX replies_case ON replies (case_id, create_time);
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    reply_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    method INTEGER NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_time INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    delivered_time INTEGER NOT NULL,
    appointment TEXT NOT NULL,
    update_time INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_time);
CREATE INDEX deliveries_reply ON deliveries (reply_id, case_id);
CREATE INDEX deliveries_case ON deliveries (case_id);

-- Appointed visits (预约告知): a task for the case's grid worker; the delivery counts only
-- when the visit is recorded.
CREATE TABLE appointments (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    case_id TEXT NOT NULL,
    grid TEXT NOT NULL,
    community TEXT NOT NULL,
    state INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    visit_time INTEGER NOT NULL,
    visited_by TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX appointments_grid ON appointments (grid, state, create_time);
