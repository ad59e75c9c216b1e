-- Events: what happened to a callback (each status it passed through) or a recording (bound to
-- its call), as the API showed the resource at that moment. The courier app's live stream replays
-- them and webhooks deliver them. Written by the same statement as the change they report
-- (store::events), so none is lost and none is made up.
--
-- `sequence` numbers a subject's events from 1 without gaps; a callback's row keeps its last one
-- (the transition statement moves it on only from the number it read: one writer per number).
CREATE TABLE events (
    subject_id uuid NOT NULL,
    sequence integer NOT NULL,
    tenant_id text NOT NULL,
    type text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The event's `data`, the JSON text sent as it is.
    data text NOT NULL,
    PRIMARY KEY (subject_id, sequence)
);
ALTER TABLE callbacks ADD COLUMN last_sequence integer NOT NULL DEFAULT 0;

-- A company's webhook endpoints. The signing secret is AES-256-GCM encrypted with
-- DIALBACK_SECRETS_KEY; during a rotation the previous one signs too, until its time is up.
CREATE TABLE webhook_endpoints (
    tenant_id text NOT NULL REFERENCES tenants (id),
    id text NOT NULL,
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true,
    -- Why dialback disabled it (it kept failing), shown to the admin.
    disabled_reason text,
    -- Since when every delivery has failed (NULL once one succeeds).
    failing_since timestamptz,
    secret_enc text NOT NULL,
    previous_secret_enc text,
    previous_secret_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- One event for one endpoint: the outbox the deliverer works through. A delivery is claimed with a
-- lease (so one process sends it, and another takes over when that process dies) and kept with its
-- outcome. No foreign keys: they would lock the endpoint's row in every event's insert.
CREATE TABLE webhook_deliveries (
    tenant_id text NOT NULL,
    endpoint_id text NOT NULL,
    subject_id uuid NOT NULL,
    sequence integer NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, endpoint_id, subject_id, sequence)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
