vcl 4.1;
# bench/trace.sh: Varnish in front of the trace origin. @ORIGIN_PORT@ is filled in by the script.
# Concurrent misses on one URL wait on Varnish's waiting list for the single fetch (coalescing).

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 5s;
    .first_byte_timeout = 300s;
    .between_bytes_timeout = 300s;
}

sub vcl_recv {
    unset req.http.Cookie;
    return (hash);
}

sub vcl_backend_response {
    set beresp.ttl = 10m;
    set beresp.grace = 0s;
    return (deliver);
}
