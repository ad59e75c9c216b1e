-- Return calls (domain::return_call): a client calling the company's number back is sent to the
-- courier of their order. The PBX asks over FastAGI (or HTTP) with the company's key.

-- The company's rules, and its key. The key is kept twice: hashed (SHA-256, hex) to find the
-- company from a request, encrypted (DIALBACK_SECRETS_KEY) to show it to the admin again.
CREATE TABLE return_call_settings (
    tenant_id text PRIMARY KEY REFERENCES tenants (id),
    settings jsonb NOT NULL,
    key_hash text NOT NULL UNIQUE,
    key_enc text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- "Which order has this client number?" in one index lookup.
CREATE INDEX orders_by_phone ON orders USING gin (phones);
-- "Is this caller a courier?"
CREATE INDEX couriers_by_phone ON couriers (tenant_id, phone);

-- Every return call dialback routed, then followed on the company's AMI connection by the
-- Uniqueid of the channel that ran the AGI request.
CREATE TABLE return_calls (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    caller text,
    did text,
    route_kind text NOT NULL CHECK (route_kind IN ('courier', 'office')),
    route_reason text NOT NULL,
    route text NOT NULL DEFAULT '',
    order_id text,
    courier_id text,
    agi_uniqueid text,
    status text NOT NULL,
    failed_leg text,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz,
    ended_at timestamptz,
    talk_seconds integer,
    cdr jsonb,
    last_sequence integer NOT NULL DEFAULT 1
);
CREATE INDEX return_calls_by_tenant ON return_calls (tenant_id, id DESC);
CREATE INDEX return_calls_in_flight ON return_calls (tenant_id, agi_uniqueid) WHERE ended_at IS NULL;
