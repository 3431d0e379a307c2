#!/usr/bin/python3
"""What bench/soak.sh's disconnecting clients do to the loader, alone (found by the soak run of
2026-12-07): clients that pipeline GETs of cold keys and disconnect before the replies. Their
loads still run (orphaned flights); once more are asked than the origin serves, loads fail with
"timeout after 1000 ms" while the origin is idle, a GET of another key with loader_timeout = 1s is
answered after several seconds, and the origin sees thousands of new connections but almost no
requests. With clients that read their replies (MODE=read) the same volume is served at ~2k loads/s
over ~90 kept-alive connections.

usage: bench/soak-repro-disconnect.py [rst|fin|read] [SECS]   (N=4 client threads; env N)
Needs only the build (CACHEMED_BIN, default build/cachemed) and tests/origin.py; loopback only.
"""

import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from harness import MEM, Daemon, Origin, node  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "rst"
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 20
origin = Origin()
origin.rule("/i/", prefix=1, delay_ms=5)
daemon = Daemon(MEM + node("raw", "raw:{id}", caches="mem:60s", loader=origin.url("/i/{id}"),
                           extra="loader_timeout = 1s\n"))
end = time.time() + secs
rounds = [0]


def client():
    s = socket.create_connection(("127.0.0.1", daemon.port)) if mode == "read" else None
    while time.time() < end:
        batch = b"".join(b"GET raw:c%d\r\n" % random.randrange(10**9) for _ in range(20))
        if mode == "read":
            s.sendall(batch)
            buf = b""
            while buf.count(b"$") + buf.count(b"-ERR") < 20:   # 20 bulks or errors back
                buf += s.recv(1 << 16)
        else:
            c = socket.create_connection(("127.0.0.1", daemon.port))
            c.sendall(batch)
            time.sleep(random.uniform(0, 0.02))
            if mode == "rst":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        rounds[0] += 1


threads = [threading.Thread(target=client) for _ in range(int(os.environ.get("N", "4")))]
for t in threads:
    t.start()
probe = daemon.client()
i = 0
try:
    while time.time() < end:
        i += 1
        t0 = time.time()
        try:
            probe.get("raw:probe%d" % i)
            res = "ok"
        except Exception as e:  # the reply is an error: show it
            res = str(e)[:70]
        st = origin.stats()
        print("%5.1fs probe GET took %.2fs: %s | origin: %d requests, %d active, %d connections "
              "| %d batches of 20" % (secs - (end - time.time()), time.time() - t0, res,
                                      st["total"], st["active"], st["connections"], rounds[0]),
              flush=True)
        time.sleep(1)
finally:
    for t in threads:
        t.join()
    daemon.stop()
    origin.stop()
