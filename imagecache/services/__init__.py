"""Writes: everything that changes the cache goes through here, one module
per lifecycle.

- `entries`: a client's request becomes an entry, sharing a fetch where it
  can (web processes);
- `queue`: fetch tasks put on django-q2's queue (any process);
- the fetch pipeline, in queue workers only: `fetching` runs a queued
  fetch, `claims` takes the next one in line under the bound on Kentik
  calls, `storing` stores and records its image, and `finishing` marks it
  ready or failed and tells its waiters (`fetching` and `storing` are the
  modules that import the Kentik seam);
- `housekeeping`: pruning, eviction, and reaping fetches whose worker died
  (the maintenance schedule, `prune_cache`, `recover_pending`, waiters);
- `operators`: the admin's actions (purge, refetch, extend).

Imports run one way: `operators` uses `entries` and `housekeeping`,
`fetching` uses `claims`, `storing`, `finishing` and `housekeeping`, and the
others enqueue through `queue`; outside this package only the task module
imports `fetching`.
"""
