"""The HTTP API (web processes): `urls` maps the paths to `views` (one DRF
view per operation: validate, call one service, selector or wait, serialize),
with their `serializers`, `parsers`, content `negotiation`, the OpenAPI
description (`openapi`, `examples`) and the one place where domain errors
become HTTP answers (`exception_handlers`)."""
