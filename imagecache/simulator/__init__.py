"""A stand-in for Kentik's chart API, bundled for tests and local development.

It answers ``POST {base}/query/topXchart`` the way Kentik does -- a JSON object
``{"dataUri": "data:<mime>;base64,<payload>"}`` -- with a real, deterministic chart
drawn from the query, so the image cache can be exercised without a Kentik
account. Tests steer it through rules (errors, Retry-After, delays, hangs, broken
bodies) and modes (a rate limit per credentials, an outage), and read back what
it received and answered, either in-process through
:class:`~imagecache.simulator.server.KentikSimulator` or over HTTP through the
``/_sim/...`` endpoints.

It deliberately imports nothing from Django so that it runs on its own::

    python -m imagecache.simulator --port 8001 --email me@example.com --token secret

Its parts: `server` (the HTTP server and `KentikSimulator`), `rules` (how
tests steer single answers), `modes` (the rate limit and the outage), `state`
(what a running simulator holds and has received), `render` (the checks of a
body and the image answered), `chart` (the chart a query describes) and
`drawing` (the chart drawn).

It is a tool for development and tests: Pillow comes from pyproject.toml's
`simulator` extra, and the production image leaves the package out
(the production profile refuses to start without Kentik credentials).
"""
