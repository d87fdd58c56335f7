"""The HTTP edge (web processes).

`fastpath` answers ready images from their links before Django runs; the
rest goes to `urls`, which maps the paths to `views`: one DRF view per
operation, which validates, calls one service, selector or wait, and
serializes, with their `serializers`, `parsers`, content `negotiation`, the
OpenAPI description (`openapi`, `examples`) and the one place where domain
errors become HTTP answers (`exception_handlers`).
"""
