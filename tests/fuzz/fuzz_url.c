/* libFuzzer target for storage URLs (conf/url.c): any text either parses into NUL-terminated
 * fields with a port in 0..65535, or fails with a reason; nothing leaks either way. */
#include "conf/url.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_URL 1024

static void check_str(const char *s)
{
    if (s != NULL && strlen(s) > MAX_URL) {
        abort();   /* a field longer than the whole URL: not terminated where it should be */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_URL) {
        return 0;
    }
    char s[MAX_URL + 1];
    memcpy(s, data, size);
    s[size] = '\0';
    struct cm_url u;
    char err[160] = "";
    if (cm_url_parse(s, &u, err, sizeof(err)) != CM_OK) {
        if (err[0] == '\0') {
            abort();   /* every error has a reason */
        }
        return 0;
    }
    if (u.scheme == NULL || u.port < 0 || u.port > 65535) {
        abort();
    }
    check_str(u.scheme);
    check_str(u.user);
    check_str(u.password);
    check_str(u.host);
    check_str(u.path);
    check_str(u.query);
    cm_url_deinit(&u);
    return 0;
}
