"""Requests that wait for a pending image (web processes).

- `waiter`: one thread per process watches every pending fetch a request
  waits on, with one query per tick (no Django: it is handed its queries);
- `ready`: `GET /image/{id}`'s wait, with this process's waiter wired to the
  database, to PostgreSQL's notifications (`imagecache.notify`) and to the
  reaper that takes over fetches whose worker died.

Unlike the selectors, waiting blocks and, through the reaper, writes.
"""
