-- A process that was told to stop (SIGTERM) says so the moment it is told, before it stops
-- accepting requests: the others stop counting it when they share the limits and each PBX's cap on
-- originates in flight (cluster.rs), so the requests a balancer moves to them are not refused
-- while they still hold half a share. It stays listed, and its calls stay its own, until it has
-- handed them over and leaves. Releases before this one do not read the column: they keep counting
-- a stopping process until it leaves, as they did.
ALTER TABLE dialback_processes ADD COLUMN stopping_since timestamptz;
