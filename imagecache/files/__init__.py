"""The images on disk (or in object storage), and how ready ones are served.

- `storage`: files written so that no reader meets a partial one;
- `links`: per-entry links for the fast path, removed first whenever an entry
  stops being served;
- `fastpath`: WSGI middleware in the web processes that answers ready images
  from their links before Django runs.
"""
