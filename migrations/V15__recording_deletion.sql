-- Recordings are deleted on the company's schedule (recordings.retention_days) or by an admin
-- (recordings/retention.rs). The row stays, so the journal keeps saying there was a recording and
-- why it is gone, and the file is never fetched again. 'deleting' is the step between: the row no
-- longer serves audio, the object may still exist; a run that dies there is finished by the next.
ALTER TABLE recordings DROP CONSTRAINT recordings_state_check;
ALTER TABLE recordings ADD CONSTRAINT recordings_state_check
    CHECK (state IN ('pending', 'fetching', 'stored', 'failed', 'deleting', 'deleted'));
ALTER TABLE recordings
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN deleted_because text CHECK (deleted_because IN ('retention', 'admin'));
CREATE INDEX recordings_to_delete ON recordings (tenant_id, (coalesce(recorded_at, first_seen_at)))
    WHERE state IN ('stored', 'deleting');
