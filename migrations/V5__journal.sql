-- What Asterisk's CDR said about each callback's channels (domain::callback::CallCdr as JSON), and
-- the journal's search by the called number (the office looks calls up by the client's phone).
ALTER TABLE callbacks ADD COLUMN cdr jsonb;
CREATE INDEX callbacks_by_number ON callbacks (tenant_id, to_number, id DESC) WHERE to_number IS NOT NULL;
