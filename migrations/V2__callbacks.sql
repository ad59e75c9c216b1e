-- PBX settings per tenant. The settings are validated JSON (see domain::settings::PbxSettings);
-- the AMI secret is kept apart, AES-256-GCM encrypted with DIALBACK_SECRETS_KEY.
CREATE TABLE pbx_settings (
    tenant_id text PRIMARY KEY REFERENCES tenants (id),
    settings jsonb NOT NULL,
    secret_enc text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The courier registry: leg 1 only ever rings the registered phone.
CREATE TABLE couriers (
    tenant_id text NOT NULL REFERENCES tenants (id),
    id text NOT NULL,
    phone text NOT NULL,
    name text NOT NULL DEFAULT '',
    active boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Orders pushed by the main system: who delivers them and which numbers may be called.
CREATE TABLE orders (
    tenant_id text NOT NULL REFERENCES tenants (id),
    id text NOT NULL,
    courier_id text,
    phones text[] NOT NULL DEFAULT '{}',
    state text NOT NULL CHECK (state IN ('active', 'closed')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX orders_by_courier ON orders (tenant_id, courier_id) WHERE state = 'active';

-- Every attempt, refused ones included. The id (uuid v7) is also the AMI ChannelId, so every
-- event of the call carries it as Uniqueid/Linkedid.
CREATE TABLE callbacks (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (id),
    courier_id text NOT NULL,
    target text NOT NULL CHECK (target IN ('client', 'office', 'test')),
    order_id text,
    to_number text,
    courier_number text,
    status text NOT NULL,
    failed_leg text,
    reason text,
    hangup_cause integer,
    detail text,
    action_id text,
    courier_channel text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    courier_answered_at timestamptz,
    connected_at timestamptz,
    ended_at timestamptz,
    talk_seconds integer,
    cdr_billable_seconds integer
);
CREATE INDEX callbacks_by_tenant ON callbacks (tenant_id, id DESC);
CREATE INDEX callbacks_by_order ON callbacks (tenant_id, order_id) WHERE order_id IS NOT NULL;
CREATE INDEX callbacks_in_flight ON callbacks (tenant_id)
    WHERE status IN ('queued', 'ringing_courier', 'ringing_client', 'connected');

-- The audit trail: every status change with what caused it.
CREATE TABLE callback_transitions (
    id bigserial PRIMARY KEY,
    callback_id uuid NOT NULL REFERENCES callbacks (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    from_status text,
    to_status text NOT NULL,
    cause text NOT NULL
);
CREATE INDEX callback_transitions_by_callback ON callback_transitions (callback_id, id);

-- Idempotency-Key: the first answer to (courier, key) is kept for 24 h and replayed.
CREATE TABLE idempotency_keys (
    tenant_id text NOT NULL,
    courier_id text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    response_status integer,
    response_body jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, courier_id, key)
);
