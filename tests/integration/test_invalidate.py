"""Cross-instance invalidation (SPEC §11): two daemons on one Redis with invalidate_channel; a SET,
DEL or REFRESH on one drops the other's local copy."""
import json
import os
import time

from harness import DaemonTest, node, wait_for


def redis_url(test):
    url = os.environ.get("CM_TEST_REDIS_URL")
    if not url:
        test.fail("CM_TEST_REDIS_URL is not set (make test starts a Redis and sets it)")
    return url


class InvalidateTest(DaemonTest):
    def body(self, channel=True):
        extra = "invalidate_channel = inv_%d\n" % os.getpid() if channel else ""
        return ("[storage mem]\nurl = local://lru\nsize = 1000\n\n"
                "[storage shared]\nurl = %s\n\n" % redis_url(self) +
                node("inv", "inv:{id}", caches="mem:60s, shared:60s",
                     loader=self.loader("/inv/{id}"), serializer="json", extra=extra))

    def written(self, key):
        """Waits until a's write reached Redis (waiters are answered before the writes)."""
        import redis
        r = redis.Redis.from_url(redis_url(self))
        wait_for(lambda: r.exists("cacheme:%s:v1" % key), 5, what="the value in redis")

    def test_set_and_del_drop_other_instances_local_copy(self):
        a = self.daemon(self.body())
        b = self.daemon(self.body())
        ca, cb = a.client(), b.client()
        key = "inv:%d" % time.time_ns()
        first = json.loads(ca.get(key))
        self.written(key)
        self.assertEqual(json.loads(cb.get(key)), first)   # remote hit, now in b's local cache
        ca.set(key, '{"v": 2}')
        wait_for(lambda: json.loads(cb.get(key)) == {"v": 2}, 5, what="b to see the SET")
        ca.delete(key)
        wait_for(lambda: json.loads(cb.get(key)) != {"v": 2}, 5, what="b to drop the deleted key")

    def test_without_channel_local_copy_stays(self):
        """The control: without the channel, b keeps serving its stale local copy."""
        a = self.daemon(self.body(channel=False))
        b = self.daemon(self.body(channel=False))
        ca, cb = a.client(), b.client()
        key = "inv:%d" % time.time_ns()
        first = json.loads(ca.get(key))
        self.written(key)
        self.assertEqual(json.loads(cb.get(key)), first)
        ca.set(key, '{"v": 3}')
        time.sleep(0.5)
        self.assertEqual(json.loads(cb.get(key)), first)
