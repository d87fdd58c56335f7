"""The image's HEALTHCHECK: `GET /healthz` on this container's gunicorn, with
a Host header that ALLOWED_HOSTS admits. Django answers any other Host, the
loopback address included, with 400.

Host validation stays whole: no request is answered under a Host the
operator did not allow, and the check also proves that ALLOWED_HOSTS lets a
request through. The standard library only: it runs every 30 s, and loading
Django would cost more than the request.
"""

import http.client
import os
import sys


def check_host(allowed_hosts: str) -> str:
    """A Host that Django admits under `allowed_hosts` (the variable as set):
    its first entry, without the leading dot of a domain-and-subdomains entry;
    `localhost` for `*` or none."""
    first = next((host.strip() for host in allowed_hosts.split(",") if host.strip()), "*")
    return "localhost" if first == "*" else first.removeprefix(".")


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=4)
    try:
        # No redirect is followed: a healthy process answers /healthz itself.
        connection.request(
            "GET", "/healthz", headers={"Host": check_host(os.environ.get("ALLOWED_HOSTS", ""))}
        )
        status = connection.getresponse().status
    except OSError as exc:
        print(f"/healthz does not answer on port {port}: {exc}")
        return 1
    finally:
        connection.close()
    if status != 200:
        print(f"/healthz answered {status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
