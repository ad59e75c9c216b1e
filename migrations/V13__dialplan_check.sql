-- The last check of whether the company's PBX runs dialback's dialplan (dialplan_watch.rs), kept
-- with its settings so that every process shows it, not only the one that asked the PBX. Added,
-- never required: a process of the previous release neither writes nor reads it.
ALTER TABLE pbx_settings ADD COLUMN dialplan_check jsonb;
