#!/usr/bin/python3
"""Reads one cachemed row the way Cacheme does (cacheme/storages/{postgres,mysql}.py + base.py):
`select * from TABLE where key = <key>` with the driver's bound parameter, then the expire check
of BaseStorage.get (expire <= now(UTC) is a miss). Only `value` is returned.

usage: sql_read.py postgresql|mysql URL TABLE HEXKEY
prints "HIT <value as hex>" or "MISS"; exits 2 on bad usage.
Needs Debian's python3-psycopg2 / python3-pymysql (Cacheme itself uses asyncpg / aiomysql, which
Debian does not ship; the SQL and the row handling are the same).
"""
import re
import sys
from datetime import datetime, timezone
from urllib.parse import unquote, urlparse


def read_pg(url, table, key):
    import psycopg2
    conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"select key, value, expire, updated_at from {table} where key=%s", (key,))
        row = cur.fetchone()
        return None if row is None else {"value": bytes(row[1]), "expire": row[2]}
    finally:
        conn.close()


def read_mysql(url, table, key):
    import pymysql
    u = urlparse(url)
    conn = pymysql.connect(host=u.hostname, port=u.port or 3306, user=unquote(u.username or ""),
                           password=unquote(u.password or ""), database=u.path[1:],
                           autocommit=True, charset="utf8mb4")
    try:
        cur = conn.cursor(pymysql.cursors.DictCursor)
        cur.execute(f"select * from {table} where `key`=%s", (key,))
        row = cur.fetchone()
        return None if row is None else {"value": bytes(row["value"]), "expire": row["expire"]}
    finally:
        conn.close()


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("postgresql", "mysql"):
        print(__doc__, file=sys.stderr)
        return 2
    dialect, url, table, hexkey = sys.argv[1:]
    if re.fullmatch(r"\w+", table) is None:
        print("invalid table name", file=sys.stderr)
        return 2
    key = bytes.fromhex(hexkey).decode("utf-8")
    row = (read_pg if dialect == "postgresql" else read_mysql)(url, table, key)
    # Cacheme's BaseStorage.get: naive datetimes (MySQL) are UTC.
    if row is None or (row["expire"] is not None and
                       row["expire"].replace(tzinfo=timezone.utc) <= datetime.now(timezone.utc)):
        print("MISS")
    else:
        print("HIT " + row["value"].hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
