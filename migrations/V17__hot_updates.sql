-- The write path of a call (issue 27). A call's row is updated at every status it passes through;
-- PostgreSQL can do such an update in place on its page (a HOT update: no new entry in any index)
-- only when no indexed column changes, and a column an index's WHERE reads counts as indexed.
-- `callbacks_in_flight_by_owner` read `status`, so every status change wrote a new entry in each of
-- the table's six indexes. Its replacement reads only `ended_at`, which changes once, when the call
-- ends; the queries that use it (`store::callbacks::IN_FLIGHT`) still ask for the statuses in flight.
-- Calls that became `unknown` keep `ended_at` NULL and stay in it, as they already were in
-- `callbacks_in_flight`.
CREATE INDEX callbacks_owned_until_ended ON callbacks (owner, created_at) WHERE ended_at IS NULL;
DROP INDEX callbacks_in_flight_by_owner;

-- (The room on each page for the new versions, fillfactor 70, is V4's.)

-- `callback_transitions` is no longer written: a call's events (`events`) are its history. The table
-- stays while a release that writes it may still run on this database (a rolling upgrade, a rollback).
