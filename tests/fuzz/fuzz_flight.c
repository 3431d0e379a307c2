/* libFuzzer target for the flight engine: the input is a schedule. Each byte pair is one step:
 * a client sends GET / MGET / SET / DEL / REFRESH over a few keys of four nodes (local only,
 * local + remote, two remotes, no loader), or goes away; a fake storage op or load completes, in
 * any order, with any outcome; a loop pass runs; or the server shuts down there and then.
 * tests/unit/flight_harness.h checks the invariants after every step (one load per key at the
 * origin, one write per key per storage, replies in order and well formed, no value older than a
 * mutation answered before it was asked for, a GET waits for at most two loads) and at the end
 * (every request answered exactly once, no key entry left, everything freed: ASan/LSan).
 *
 * The first byte picks the mode: bit 0, storage failures not allowed (the value-age check is
 * on); bit 1, storage ops complete right after each step (the load-wait check is on). */
#include "tests/unit/flight_harness.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fh H;

static void key_of(uint8_t b, char *out, size_t outsz)
{
    static const char nodes[] = "abcd";
    snprintf(out, outsz, "%c:%u", nodes[b & 3], (unsigned)((b >> 2) & 3));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    bool consistent = data[0] & 1;
    fh_init(&H, consistent);
    H.prompt = (data[0] & 2) != 0;
    bool down = false;
    for (size_t i = 1; i + 1 < size && !down; i += 2) {
        uint8_t op = data[i], arg = data[i + 1];
        int client = arg >> 6;
        char k1[24], k2[24];
        key_of(arg, k1, sizeof(k1));
        key_of((uint8_t)(arg * 7 + 3), k2, sizeof(k2));
        switch (op % 12) {
        case 0:
        case 1: fh_get(&H, client, k1); break;
        case 2: {
            const char *argv[] = { "MGET", k1, k2, k1 };
            fh_send(&H, client, FH_MGET, 2 + (op >> 7) * 2, argv);
            break;
        }
        case 3: fh_set(&H, client, k1); break;
        case 4: fh_del(&H, client, k1); break;
        case 5: fh_refresh(&H, client, k1); break;
        case 6:
        case 7:
            if (H.nops > 0) {
                bool ok = consistent || (op & 0x10) == 0;
                fh_complete_op(&H, arg % H.nops, ok);
            }
            break;
        case 8:
        case 9:
            if (H.nloads > 0) {
                fh_complete_load(&H, arg % H.nloads, (enum fh_outcome)((op >> 4) % 3));
            }
            break;
        case 10:
            if ((op >> 4) == 0) {
                fh_disconnect(&H, client);
            } else if ((op >> 4) == 1) {
                H.fetch_refuses = true;
            } else {
                fh_pass(&H);
            }
            break;
        case 11:
            if ((op >> 4) == 15) {
                down = true;   /* shutdown right here, with whatever is in progress */
            } else {
                fh_pass(&H);
            }
            break;
        }
        if (!down) {
            fh_prompt(&H);
        }
    }
    if (!down) {
        fh_settle(&H);
    }
    fh_finish(&H);
    return 0;
}
