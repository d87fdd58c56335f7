"""The images on disk (or in object storage).

- `names`: the name of an image file, made and read back;
- `storage`: files written so that no reader meets a partial one;
- `links`: per-entry links for the fast path (`imagecache.api.fastpath`),
  removed first whenever an entry stops being served.
"""
