-- Return calls are owned like callbacks (V10): the process that routed one follows it, and the
-- return calls of a process that died or stopped are claimed by another (return_calls/takeover.rs).
ALTER TABLE return_calls ADD COLUMN owner uuid, ADD COLUMN orphaned_at timestamptz, ADD COLUMN orphaned_because text;

CREATE INDEX return_calls_in_flight_by_owner ON return_calls (owner, created_at)
    WHERE ended_at IS NULL AND agi_uniqueid IS NOT NULL;
