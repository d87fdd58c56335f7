"""Writes: everything that changes the cache goes through here, one module
per lifecycle.

- `entries`: a client's request becomes an entry, sharing a fetch where it
  can (web processes);
- `queue`: fetch tasks put on django-q2's queue (any process);
- `fetching`: a queued fetch claimed, sent to Kentik and stored (queue
  workers only: the one module that imports the Kentik seam);
- `housekeeping`: pruning, eviction, and reaping fetches whose worker died
  (the maintenance schedule, `prune_cache`, `recover_pending`, waiters);
- `operators`: the admin's actions (purge, refetch, extend).

Imports run one way: `operators` uses `entries` and `housekeeping`,
`fetching` uses `housekeeping`, and the others enqueue through `queue`;
outside this package only the task module imports `fetching`.
"""
