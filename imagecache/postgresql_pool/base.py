"""Django's PostgreSQL backend, with a pool that checks a connection before it
hands it out (the web workers' pool; config/settings/base.py).

Django 5.2 passes psycopg_pool's stock check when CONN_HEALTH_CHECKS is set,
and refuses a `check` of its own in OPTIONS["pool"]. The stock check finds
the dead connections one at a time, with pauses of 1, 2, 4... s between
them: a worker whose pool held ten when PostgreSQL restarted would keep its
next request waiting past the pool's timeout, and fail it.
"""

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)


class DatabaseWrapper(base.DatabaseWrapper):
    # Django's own (5.1 on), which django-stubs does not know yet; psycopg_pool
    # ignores what `configure` returns.
    _connection_pools: ClassVar[dict[str, ConnectionPool[Any]]]
    _configure_connection: Callable[[psycopg.Connection[Any]], None]

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        if self.alias not in self._connection_pools:

            def check(connection: psycopg.Connection[Any]) -> None:
                try:
                    ConnectionPool.check_connection(connection)
                except psycopg.Error:
                    # The server dropped this one (a restart, a failover, a
                    # terminated backend), and most likely every other one
                    # idle beside it: open new ones now rather than find each
                    # dead one with a failed check.
                    logger.warning("PostgreSQL dropped a pooled connection; renewing the pool")
                    pool.drain()
                    raise

            # As Django's own pool: autocommit, which Django sets itself later.
            pool = ConnectionPool(
                kwargs={**self.get_connection_params(), "autocommit": True},
                open=False,
                configure=self._configure_connection,
                check=check,
                **options,
            )
            # Threads that race here build a pool each; the first one stays.
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]
