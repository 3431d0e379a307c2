#!/usr/bin/python3
"""Serializer interop with Cacheme (SPEC section 5), run by tests/unit/check_serializer.c.

  ser_interop.py gen DIR    writes, for every case N: N.src (JSON text given to cachemed),
                            N.expect (what a client must get: compact JSON), N.pyjson
                            (json.dumps(doc)), and for each serializer S the bytes Cacheme writes:
                            N.S.bare (SQL/Mongo form) and N.S.wrapped (Redis form, at the fixed
                            time in DIR/ts_us). A missing msgpack file means msgpack-python
                            refuses the document (integer out of range).
  ser_interop.py check DIR  reads the N.S.c_bare / N.S.c_wrapped files cachemed wrote and loads
                            them the way Cacheme's serializers do.

Cacheme's serializers (cacheme/serializer.py) are reproduced here without pydantic: the only
non-JSON object they meet is the datetime of the Redis wrapper, which object_encoder turns into
{"__class__": "datetime.datetime", "data": dt.isoformat()}.
"""
import datetime
import json
import os
import random
import struct
import sys
import zlib

import msgpack

SERS = ["json", "msgpack", "compressed_json", "compressed_msgpack"]
TS = datetime.datetime(2026, 11, 25, 1, 22, 56, 123456, tzinfo=datetime.timezone.utc)


def object_encoder(obj):
    if not isinstance(obj, datetime.datetime):
        raise TypeError("%r is not serializable" % (obj,))  # pydantic_encoder's answer
    return {"__class__": type(obj).__module__ + "." + type(obj).__qualname__,
            "data": obj.isoformat()}


def object_decoder(d):
    if "__class__" in d:
        assert d["__class__"] == "datetime.datetime", d
        return datetime.datetime.fromisoformat(d["data"])
    return d


def dumps(ser, obj):
    if ser.endswith("json"):
        blob = json.dumps(obj, default=object_encoder).encode()
    else:
        blob = msgpack.dumps(obj, default=object_encoder)
    return zlib.compress(blob, level=3) if ser.startswith("compressed_") else blob


def loads(ser, blob):
    if ser.startswith("compressed_"):
        blob = zlib.decompress(blob)
    if ser.endswith("json"):
        return json.loads(blob.decode(), object_hook=object_decoder)
    return msgpack.loads(blob, object_hook=object_decoder, strict_map_key=False)


def random_string(rng, key=False):
    """jansson refuses NUL in object keys (Python does not): keys get none."""
    cps = []
    for _ in range(rng.randrange(0, 12)):
        pick = rng.random()
        if pick < 0.5:
            cps.append(rng.randrange(0x20, 0x7f))
        elif pick < 0.6:
            cps.append(rng.randrange(1 if key else 0, 0x20))
        elif pick < 0.8:
            cps.append(rng.choice([0xe9, 0x7f, 0x80, 0x7ff, 0x800, 0x4e2d, 0xfeff, 0xffff]))
        else:
            cps.append(rng.randrange(0x10000, 0x110000))
    return "".join(map(chr, cps))


def random_float(rng):
    while True:
        f = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if f == f and f not in (float("inf"), float("-inf")):
            return f


def cases():
    rng = random.Random(20261125)
    deep = 1
    for i in range(100):
        deep = [deep] if i % 2 else {"k%d" % i: deep}
    srcs = [
        '{"a": [1, 2.5, null, true, false]}',
        '  {"id" : 42 ,"name":"ann"}\n',
        '0', '-0', '-0.0', '0.0', '1.0', '1E2', '1.5e300', '0.1', '1e308', '5e-324', '1e16',
        '1e15', '0.0001', '0.00001', '123456789.123456789', '2.5e-8',
        '9223372036854775807', '-9223372036854775808', '18446744073709551615',
        '9223372036854775808', '9007199254740993', '-9223372036854775809',
        '123456789012345678901234567890',
        '[-1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649, 127, 128, 255, 256,'
        ' 65535, 65536, 4294967295, 4294967296]',
        '"\\u00e9\\ud83d\\ude00 \\" \\\\ \\/ \\n\\r\\t\\b\\f \\u0001 \\u001f \\u007f \\u0000"',
        '"caf\u00e9 \u4e2d\u6587 \U0001f600"',
        '[]', '{}', '[[], {}, [{}], {"": []}]', '""',
        '{"b": 1, "a": 2, "c": {"z": 1, "y": 2, "x": [3, 2, 1]}}',
        '{"a": 1, "b": 2, "a": 3}',
        '"' + "x" * 31 + '"', '"' + "x" * 32 + '"', '"' + "y" * 255 + '"', '"' + "z" * 256 + '"',
        '"' + "w" * 65536 + '"',
        json.dumps(list(range(20))), json.dumps({"k%02d" % i: i for i in range(20)}),
        json.dumps(deep), 'true', 'false', 'null',
        json.dumps([random_float(rng) for _ in range(400)]),
        json.dumps([2.0 ** e for e in range(-1074, 1024, 3)] + [5e-324 * rng.randrange(1, 2**52)
                                                               for _ in range(200)]),
        json.dumps([round(rng.uniform(-1e6, 1e6), rng.randrange(0, 12)) for _ in range(300)]),
        json.dumps([rng.choice([rng.randrange(-2**63, 2**64), rng.randrange(-300, 300),
                                rng.randrange(-2**33, 2**33)]) for _ in range(300)]),
        json.dumps({random_string(rng, True): random_string(rng) for _ in range(60)}),
        json.dumps({random_string(rng, True): random_string(rng) for _ in range(60)}, ensure_ascii=False),
    ]
    return srcs


def gen(d):
    with open(os.path.join(d, "ts_us"), "w") as f:
        f.write(str((TS - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc))
                    // datetime.timedelta(microseconds=1)))
    srcs = cases()
    for n, src in enumerate(srcs):
        doc = json.loads(src)
        files = {
            "src": src.encode(),
            "expect": json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
            "pyjson": json.dumps(doc).encode(),
        }
        for ser in SERS:
            try:
                files[ser + ".bare"] = dumps(ser, doc)
                files[ser + ".wrapped"] = dumps(ser, {"value": doc, "updated_at": TS})
            except (OverflowError, TypeError):
                assert ser.endswith("msgpack")
        for suffix, data in files.items():
            with open(os.path.join(d, "%d.%s" % (n, suffix)), "wb") as f:
                f.write(data)
    with open(os.path.join(d, "count"), "w") as f:
        f.write(str(len(srcs)))


def check(d):
    now = datetime.datetime.now(datetime.timezone.utc)
    count = int(open(os.path.join(d, "count")).read())
    checked = 0
    for n in range(count):
        doc = json.loads(open(os.path.join(d, "%d.src" % n), "rb").read())
        for ser in SERS:
            path = os.path.join(d, "%d.%s.c_wrapped" % (n, ser))
            if not os.path.exists(path):
                continue
            got = loads(ser, open(path, "rb").read())
            assert list(got.keys()) == ["value", "updated_at"], (n, ser, list(got))
            assert got["value"] == doc, (n, ser, "wrapped value differs")
            ts = got["updated_at"]
            assert isinstance(ts, datetime.datetime) and ts.utcoffset() == datetime.timedelta(0)
            assert abs((now - ts).total_seconds()) < 600, (n, ser, ts)
            bare = loads(ser, open(os.path.join(d, "%d.%s.c_bare" % (n, ser)), "rb").read())
            assert bare == doc, (n, ser, "bare value differs")
            checked += 1
    assert checked > 0
    print("checked %d cachemed encodings" % checked)


if __name__ == "__main__":
    {"gen": gen, "check": check}[sys.argv[1]](sys.argv[2])
