"""Reads: what the API, the admin and the probes show, taken from the
database alone, one module per reader.

- `images`: an entry and the image that answers for it (`GET /image/{id}`,
  the waiter, the admin's image view);
- `shield`: the Kentik budget and pause, as the waits, /info, /metrics and
  the admin see them;
- `info`: `GET /info`;
- `stats`: the cache at a glance and its hourly activity (the admin,
  /metrics);
- `workers`: the queue workers' heartbeats (/readyz).

Nothing here blocks or writes: the wait for a pending image is
`imagecache.waiting.ready`. They import the models and the leaves only.
"""
