#!/usr/bin/python3
"""Reads and writes a cacheme_data row the way Cacheme's SQLiteStorage does (stdlib sqlite3).

  sqlite_read.py read  DB TABLE KEY
      prints one JSON object: found, value_hex, expire (raw text), expire_utc (parsed with
      datetime.fromisoformat(...).replace(tzinfo=utc), as Cacheme's serialize()), expired
      (expire <= now), updated_at (raw) and updated_at_utc (parsed the same way)
  sqlite_read.py write DB TABLE KEY VALUE_HEX TTL_SECONDS|none
      Cacheme's sync_set_data: the upsert with a timezone-aware datetime bound as expire
      (Python's default sqlite3 datetime adapter writes "YYYY-MM-DD HH:MM:SS[.ffffff]+00:00")
Exits 0 on success, 1 with a message on stderr otherwise.
"""
import json
import re
import sqlite3
import sys
from datetime import datetime, timedelta, timezone


def connect(db):
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def check_table(table):
    if re.fullmatch(r"\w+", table) is None:
        raise SystemExit("invalid table name")


def read(db, table, key):
    conn = connect(db)
    row = conn.execute(f"select * from {table} where key=?", (key,)).fetchone()
    if row is None:
        print(json.dumps({"found": False}))
        return
    value = row["value"]
    out = {
        "found": True,
        "value_hex": bytes(value).hex() if value is not None else None,
        "value_type": type(value).__name__,
        "expire": row["expire"],
        "updated_at": row["updated_at"],
    }
    # Cacheme's serialize(): both columns go through datetime.fromisoformat
    updated_at = datetime.fromisoformat(row["updated_at"]).replace(tzinfo=timezone.utc)
    out["updated_at_utc"] = updated_at.isoformat()
    if row["expire"] is not None:
        expire = datetime.fromisoformat(row["expire"]).replace(tzinfo=timezone.utc)
        out["expire_utc"] = expire.isoformat()
        out["expired"] = expire <= datetime.now(timezone.utc)
    else:
        out["expire_utc"] = None
        out["expired"] = False
    print(json.dumps(out))


def write(db, table, key, value_hex, ttl):
    expire = None
    if ttl != "none":
        expire = datetime.now(timezone.utc) + timedelta(seconds=float(ttl))
    conn = connect(db)
    conn.execute(
        f"insert into {table}(key, value, expire) values(?,?,?) on conflict(key) do update "
        "set value=EXCLUDED.value, expire=EXCLUDED.expire",
        (key, bytes.fromhex(value_hex), expire),
    )
    print(json.dumps({"written": True}))


def main(argv):
    if len(argv) >= 5 and argv[1] == "read":
        check_table(argv[3])
        read(argv[2], argv[3], argv[4])
    elif len(argv) >= 7 and argv[1] == "write":
        check_table(argv[3])
        write(argv[2], argv[3], argv[4], argv[5], argv[6])
    else:
        sys.stderr.write(__doc__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
