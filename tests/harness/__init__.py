"""What tests and bench share; no test lives here, and nothing here imports a
test module or a conftest.

- `data`: the sample query, image and credentials;
- `api`: the Django test client checked for leaked credentials, and the
  readers of its answers;
- `profiles`: a settings profile started in a fresh process;
- `service`: the real service (`manage.py serve`) on loopback ports;
- `prometheus`: Prometheus' text format read back;
- `variables`: the environment variables the service's code reads;
- `run_tests`: the integration client that `make run` users point at a live
  service (`python -m tests.harness.run_tests --url ...`, from the checkout).
"""
