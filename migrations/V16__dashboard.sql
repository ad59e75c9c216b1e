-- The admin page's dashboard (GET /v1/admin/dashboard) reads counts, not the journal: a company with
-- a million calls a month would otherwise make every look at it aggregate a million rows. The
-- counts are made from the journal when the dashboard is read (store::dashboard): hours whose calls
-- have all ended are rolled up once; the hours after them are counted live. Nothing is added to
-- the write path of a call.

-- Calls per hour (UTC) by how they went. Test calls are left out; '' stands for "none".
CREATE TABLE callback_hours (
    tenant_id text NOT NULL,
    hour timestamptz NOT NULL,
    target text NOT NULL,
    status text NOT NULL,
    failed_leg text NOT NULL,
    reason text NOT NULL,
    calls integer NOT NULL,
    reached_client integer NOT NULL,
    PRIMARY KEY (tenant_id, hour, target, status, failed_leg, reason)
);

-- Each courier's calls per day (UTC), and how many failed on which leg and why.
CREATE TABLE courier_days (
    tenant_id text NOT NULL,
    day date NOT NULL,
    courier_id text NOT NULL,
    failed_leg text NOT NULL,
    reason text NOT NULL,
    calls integer NOT NULL,
    PRIMARY KEY (tenant_id, day, courier_id, failed_leg, reason)
);

-- How far each company's journal is rolled up: every call created before `hours_until` is in
-- callback_hours, every call created before `days_until` in courier_days.
CREATE TABLE dashboard_rollups (
    tenant_id text PRIMARY KEY,
    hours_until timestamptz NOT NULL,
    days_until timestamptz NOT NULL
);

-- The company's last Test (POST /v1/admin/pbx/test), which may fail before any call exists, and
-- when a Test last connected both legs: the dashboard's PBX state and the guided set-up read them.
CREATE TABLE pbx_tests (
    tenant_id text PRIMARY KEY,
    at timestamptz NOT NULL,
    ok boolean NOT NULL,
    failed_step text,
    -- Every step the last Test passed or failed, in order: [{"step": "...", "ok": true}].
    steps jsonb NOT NULL,
    callback_id uuid,
    connected_at timestamptz
);
