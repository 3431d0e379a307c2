vcl 4.1;
# bench/badday.sh: Varnish in front of the bad-day origin. @ORIGIN_PORT@ and @TTL@ (seconds a
# 200 is fresh) are filled in by the script. Origin protection as Varnish offers it: grace (a
# stale object answers while one background fetch refreshes it), the waiting list (concurrent
# misses on one URL wait for a single fetch), and the usual stale-if-error recipe: a background
# fetch that gets a 5xx is abandoned, so the stale object stays and keeps answering within grace;
# a foreground 5xx is not cached.

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 5s;
    .first_byte_timeout = 10s;
    .between_bytes_timeout = 10s;
}

sub vcl_recv {
    unset req.http.Cookie;
    return (hash);
}

sub vcl_backend_response {
    if (beresp.status >= 500) {
        if (bereq.is_bgfetch) {
            return (abandon);
        }
        # A foreground 5xx (a key never cached) is passed on, not cached: kept for the ttl
        # it went on failing after the origin recovered (measured: 479 errors in "after").
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
    set beresp.ttl = @TTL@s;
    set beresp.grace = 1h;
    return (deliver);
}
