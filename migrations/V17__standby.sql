-- Standby sessions (src/cluster.rs): each process says which companies' calls in flight it follows
-- (it holds an AMI session to their PBX for them); for a company only one process follows,
-- another process chosen by rendezvous hashing keeps a session to its PBX too, so the death of
-- either leaves the calls heard. Added with a default: a process of an earlier release does not
-- write it and is taken to follow none.
ALTER TABLE dialback_processes ADD COLUMN tenants text[] NOT NULL DEFAULT '{}';
