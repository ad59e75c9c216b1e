-- The processes that share the limits and each PBX's cap on originates in flight (cluster.rs) are
-- those serving requests. A process registers as it starts (`starting`), before it accepts any
-- request: counted at once, it would shrink the others' shares while the balancer cannot send it
-- anything yet. A process told to stop (SIGTERM) says so the moment it is told, before it stops
-- accepting (`stopping_since`): the requests a balancer then moves to the others must not be
-- refused while the others still hold part of a share. It stays listed, and its calls stay its
-- own, until it has handed them over and leaves. Releases before this one write neither column:
-- their rows read as serving until they leave, as they were counted before.
ALTER TABLE dialback_processes
    ADD COLUMN starting boolean NOT NULL DEFAULT false,
    ADD COLUMN stopping_since timestamptz;
