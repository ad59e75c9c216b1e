-- The FTP password of a company's recordings source, AES-256-GCM encrypted with
-- DIALBACK_SECRETS_KEY like the AMI secret (the rest of the source lives in pbx_settings.settings).
ALTER TABLE pbx_settings ADD COLUMN recordings_password_enc text;

-- Every recording file seen on a company's FTP server, keyed by its remote path. The row is the
-- only record of what was fetched: a download is claimed here (state 'fetching' with a lease the
-- downloader keeps extending), so it happens once across restarts, concurrent runs and replicas.
CREATE TABLE recordings (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (id),
    remote_path text NOT NULL,
    file_name text NOT NULL,
    -- What the name says (see the tenant's filename_pattern): the call id it carries, the numbers
    -- and the time, used to bind the file to its callback.
    call_ref uuid,
    call_ref_group text CHECK (call_ref_group IN ('uniqueid', 'linkedid', 'call_id')),
    exten text,
    src text,
    recorded_at timestamptz,
    remote_size bigint NOT NULL,
    content_type text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'fetching', 'stored', 'failed')),
    claim_token uuid,
    claimed_until timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    retry_at timestamptz,
    last_error text,
    storage_key text,
    size_bytes bigint,
    sha256 text,
    fetched_at timestamptz,
    callback_id uuid REFERENCES callbacks (id),
    matched_by text CHECK (matched_by IN ('uniqueid', 'linkedid', 'call_id', 'numbers_time')),
    bound_at timestamptz,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, remote_path)
);
CREATE INDEX recordings_by_tenant ON recordings (tenant_id, id DESC);
CREATE INDEX recordings_by_callback ON recordings (callback_id) WHERE callback_id IS NOT NULL;
CREATE INDEX recordings_unbound ON recordings (tenant_id, first_seen_at) WHERE callback_id IS NULL AND state = 'stored';
