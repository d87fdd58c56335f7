"""Running and watching the service.

- `metrics`: the Prometheus metric definitions (a leaf: anything may import
  it), the multiprocess directory, the worker's metrics server;
- `health`: /healthz, /readyz and /metrics (web processes);
- `log`: the request log line, JSON logs and the redaction of credentials
  (imported while settings set logging up);
- `supervisor`: `manage.py serve`, which runs gunicorn and the qcluster (and
  the Kentik simulator without credentials) until a signal.
"""
