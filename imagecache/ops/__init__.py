"""Running and watching the service.

- `metrics`: the Prometheus metric definitions (a leaf: anything may count),
  and the worker's metrics server;
- `metrics_dir`: the multiprocess directory every process writes its metrics
  to, prepared before prometheus_client is first imported;
- `health`: /healthz, /readyz and /metrics (web processes);
- `log`: the request log line, JSON logs and the redaction of credentials
  (imported while the settings set logging up);
- `supervisor`: `manage.py serve`'s runner of gunicorn and the qcluster (and
  of the Kentik simulator when there are no credentials), until a signal;
- `local_kentik`: the credentials it gives that simulator (a leaf, outside the
  simulator, which the production image leaves out).
"""
