"""A tally of the entries by minute of expiry, kept by the database itself.

`/info` counts the live entries, and a count of the rows reads them one at a
time: it grew with the cache, to tens of milliseconds at a million. The tally
holds how many entries expire in each minute; `/info` sums the minutes after
the current one and counts the rows of the current minute alone.

Triggers keep it, so that no way of changing the entries can miss it: the
POST's insert, the prune's and the admin's deletes, a fetch's cascade, an
operator's extension of an expiry, a bulk load in SQL. On PostgreSQL one
trigger per statement adds its rows by minute (transition tables), on a
row of its own per server process modulo 16 (`shard`): concurrent POSTs,
each in a transaction of its own, rarely wait on one row. SQLite has one
writer at a time and triggers per row. The table is no Django model: a
test database's flush (TRUNCATE on PostgreSQL, DELETE on SQLite) empties
the entries, and the triggers empty the tally with them.

This file keeps its own copy of the SQL, as migrations must.
"""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# A statement's rows added to (or taken from) the tally, by minute: in minute
# order, so that two statements that take several rows of one shard take
# them in the same order.
_PG_ADD = """
    CREATE FUNCTION imagecache_entry_tally_{operation}() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO imagecache_entry_tally AS t (minute, shard, n)
        SELECT date_trunc('minute', expires_at, 'UTC'), pg_backend_pid() % 16, {n}
        FROM {rows} GROUP BY 1 ORDER BY 1
        ON CONFLICT (minute, shard) DO UPDATE SET n = t.n + EXCLUDED.n;
        RETURN NULL;
    END $$
"""

POSTGRESQL = [
    """
    CREATE TABLE imagecache_entry_tally (
        minute timestamptz NOT NULL,
        shard smallint NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (minute, shard)
    )
    """,
    _PG_ADD.format(operation="insert", rows="new_rows", n="COUNT(*)"),
    _PG_ADD.format(operation="delete", rows="old_rows", n="-COUNT(*)"),
    """
    CREATE FUNCTION imagecache_entry_tally_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO imagecache_entry_tally AS t (minute, shard, n)
        SELECT minute, pg_backend_pid() % 16, SUM(d) FROM (
            SELECT date_trunc('minute', expires_at, 'UTC') AS minute, 1 AS d FROM new_rows
            UNION ALL
            SELECT date_trunc('minute', expires_at, 'UTC'), -1 FROM old_rows
        ) AS moved
        GROUP BY minute HAVING SUM(d) <> 0 ORDER BY minute
        ON CONFLICT (minute, shard) DO UPDATE SET n = t.n + EXCLUDED.n;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION imagecache_entry_tally_truncate() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM imagecache_entry_tally;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER imagecache_entry_tally_insert AFTER INSERT ON imagecache_entry
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagecache_entry_tally_insert()
    """,
    """
    CREATE TRIGGER imagecache_entry_tally_delete AFTER DELETE ON imagecache_entry
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagecache_entry_tally_delete()
    """,
    """
    CREATE TRIGGER imagecache_entry_tally_update AFTER UPDATE ON imagecache_entry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION imagecache_entry_tally_update()
    """,
    """
    CREATE TRIGGER imagecache_entry_tally_truncate AFTER TRUNCATE ON imagecache_entry
    FOR EACH STATEMENT EXECUTE FUNCTION imagecache_entry_tally_truncate()
    """,
    """
    INSERT INTO imagecache_entry_tally (minute, shard, n)
    SELECT date_trunc('minute', expires_at, 'UTC'), 0, COUNT(*)
    FROM imagecache_entry GROUP BY 1
    """,
]

POSTGRESQL_REVERSE = [
    "DROP TRIGGER imagecache_entry_tally_insert ON imagecache_entry",
    "DROP TRIGGER imagecache_entry_tally_delete ON imagecache_entry",
    "DROP TRIGGER imagecache_entry_tally_update ON imagecache_entry",
    "DROP TRIGGER imagecache_entry_tally_truncate ON imagecache_entry",
    "DROP FUNCTION imagecache_entry_tally_insert()",
    "DROP FUNCTION imagecache_entry_tally_delete()",
    "DROP FUNCTION imagecache_entry_tally_update()",
    "DROP FUNCTION imagecache_entry_tally_truncate()",
    "DROP TABLE imagecache_entry_tally",
]

# Django stores SQLite's datetimes as UTC text, 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
_SQLITE_MINUTE = "strftime('%Y-%m-%d %H:%M:00', {row}.expires_at)"
_SQLITE_ADD = (
    "INSERT INTO imagecache_entry_tally (minute, shard, n) VALUES ({minute}, 0, {n})"
    " ON CONFLICT (minute, shard) DO UPDATE SET n = n + excluded.n;"
)

SQLITE = [
    """
    CREATE TABLE imagecache_entry_tally (
        minute text NOT NULL,
        shard integer NOT NULL,
        n integer NOT NULL,
        PRIMARY KEY (minute, shard)
    )
    """,
    "CREATE TRIGGER imagecache_entry_tally_insert AFTER INSERT ON imagecache_entry BEGIN "
    + _SQLITE_ADD.format(minute=_SQLITE_MINUTE.format(row="NEW"), n=1)
    + " END",
    "CREATE TRIGGER imagecache_entry_tally_delete AFTER DELETE ON imagecache_entry BEGIN "
    + _SQLITE_ADD.format(minute=_SQLITE_MINUTE.format(row="OLD"), n=-1)
    + " END",
    "CREATE TRIGGER imagecache_entry_tally_update AFTER UPDATE OF expires_at"
    " ON imagecache_entry BEGIN "
    + _SQLITE_ADD.format(minute=_SQLITE_MINUTE.format(row="OLD"), n=-1)
    + _SQLITE_ADD.format(minute=_SQLITE_MINUTE.format(row="NEW"), n=1)
    + " END",
    "INSERT INTO imagecache_entry_tally (minute, shard, n)"
    f" SELECT {_SQLITE_MINUTE.format(row='imagecache_entry')}, 0, COUNT(*)"
    " FROM imagecache_entry GROUP BY 1",
]

SQLITE_REVERSE = [
    "DROP TRIGGER imagecache_entry_tally_insert",
    "DROP TRIGGER imagecache_entry_tally_delete",
    "DROP TRIGGER imagecache_entry_tally_update",
    "DROP TABLE imagecache_entry_tally",
]


def _run(statements: dict[str, list[str]], schema_editor: BaseDatabaseSchemaEditor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in statements:
        raise NotImplementedError(f"the entry tally has no triggers for {vendor}")
    with schema_editor.connection.cursor() as cursor:
        for sql in statements[vendor]:
            cursor.execute(sql)  # no parameters: '%' is SQL's own


def create(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run({"postgresql": POSTGRESQL, "sqlite": SQLITE}, schema_editor)


def drop(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("imagecache", "0005_fetch_state_size")]

    operations = [migrations.RunPython(create, drop)]
