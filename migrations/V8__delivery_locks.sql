-- Deliveries are claimed by locking their rows for the sender's transaction (store::webhooks),
-- which PostgreSQL releases when the sender's connection dies: no lease column to write at each
-- claim. Room on each page lets the update that records an attempt stay on its page.
ALTER TABLE webhook_deliveries DROP COLUMN lease_until;
ALTER TABLE webhook_deliveries SET (fillfactor = 70);
