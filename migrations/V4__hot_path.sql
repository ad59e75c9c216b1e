-- Cheaper writes on the callback hot path (issue 7; BENCHMARKS.md measured them).
--
-- A call's row is updated two to four times while it rings and talks. PostgreSQL can update a row
-- in place on its page ("HOT": no new index entries) only when no indexed column changes and the
-- page has room. The in-flight index was partial on `status`, which every transition changes, so
-- every update rewrote all four indexes of the table. In flight is now "not ended": only the final
-- update (the one setting ended_at) touches an index. Calls marked `unknown` keep ended_at NULL and
-- stay in this small index, which is right: their outcome may still arrive.
DROP INDEX callbacks_in_flight;
CREATE INDEX callbacks_in_flight ON callbacks (tenant_id) WHERE ended_at IS NULL;

-- An Idempotency-Key names the attempt it was claimed for (in the statement that writes it): a
-- retry of a placed call is answered with the attempt, so a placed call needs no second write.
ALTER TABLE idempotency_keys ADD COLUMN callback_id uuid;

-- Room on each page for a row's next versions (new pages only; old ones keep what they have).
ALTER TABLE callbacks SET (fillfactor = 70);
ALTER TABLE idempotency_keys SET (fillfactor = 70);

-- The audit trail is only ever read per callback, in order: one index serves as its key. Its rows
-- are written only by the statements that insert or update their callback (store::callbacks), in
-- the same statement, and callbacks are never deleted; the foreign key checked that once more per
-- row (four to six rows a call), which cost a twentieth of PostgreSQL's time on the hot path.
ALTER TABLE callback_transitions DROP CONSTRAINT callback_transitions_pkey;
ALTER TABLE callback_transitions DROP CONSTRAINT callback_transitions_callback_id_fkey;
DROP INDEX callback_transitions_by_callback;
ALTER TABLE callback_transitions ADD PRIMARY KEY (callback_id, id);

-- Every attempt's insert checked its tenant row through this foreign key, locking that one row
-- (FOR KEY SHARE) in every concurrent insert of the company: a hot row that PostgreSQL must share
-- through multixacts, and about a tenth of the insert's time. Attempts are only written for a
-- tenant that exists (its courier references it; a test call creates it first) and tenants are
-- never deleted.
ALTER TABLE callbacks DROP CONSTRAINT callbacks_tenant_id_fkey;
