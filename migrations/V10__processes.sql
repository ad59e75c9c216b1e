-- Several dialback processes share one database (callbacks/takeover.rs). Each registers here and
-- beats every second; one whose beat is older than a few seconds is dead, and the calls it was
-- following (callbacks.owner) are taken over by a live one. Timestamps are the database's own
-- clock, so processes on hosts whose clocks disagree still agree on who is alive.
CREATE TABLE dialback_processes (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- The process following a call in flight; NULL once released (its process stopped, or lost its
-- AMI link) until another claims it, `orphaned_at` and `orphaned_because` saying since when and why.
ALTER TABLE callbacks ADD COLUMN owner uuid, ADD COLUMN orphaned_at timestamptz, ADD COLUMN orphaned_because text;

CREATE INDEX callbacks_in_flight_by_owner ON callbacks (owner, created_at)
    WHERE ended_at IS NULL AND status IN ('queued', 'ringing_courier', 'ringing_client', 'connected');
