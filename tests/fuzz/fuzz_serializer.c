/* libFuzzer target for the serializers: stored bytes from Redis/SQL/Mongo are untrusted (another
 * writer, corruption), and so are loader bodies. Every decoder must fail cleanly, never crash or
 * leak; what the encoders accept must decode back. */
#include "daemon/buf.h"
#include "daemon/serializer.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static const enum cm_ser sers[] = {CM_SER_RAW, CM_SER_JSON, CM_SER_MSGPACK, CM_SER_COMPRESSED_JSON,
                                   CM_SER_COMPRESSED_MSGPACK};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    char err[128];
    struct cm_buf out, back;
    cm_buf_init(&out);
    cm_buf_init(&back);
    for (size_t i = 0; i < sizeof(sers) / sizeof(sers[0]); i++) {
        for (int w = 0; w < 2; w++) {
            int rc = w ? cm_ser_decode_wrapped(sers[i], p, size, &out, err, sizeof(err))
                       : cm_ser_decode(sers[i], p, size, &out, err, sizeof(err));
            (void)rc;
            cm_buf_reset(&out);
        }
    }
    /* As a loader body: validate and encode, then the encoding must decode. */
    for (size_t i = 1; i < sizeof(sers) / sizeof(sers[0]); i++) {
        int ok = cm_ser_validate(sers[i], p, size, err, sizeof(err)) == CM_OK;
        for (int w = 0; w < 2; w++) {
            int rc = w ? cm_ser_encode_wrapped(sers[i], p, size, 1795569776123456, &out, err,
                                               sizeof(err))
                       : cm_ser_encode(sers[i], p, size, &out, err, sizeof(err));
            if (rc != CM_OK) {
                if (ok) {
                    __builtin_trap(); /* validated but not encodable */
                }
                continue;
            }
            if (!ok) {
                __builtin_trap(); /* encoded what validate refused */
            }
            rc = w ? cm_ser_decode_wrapped(sers[i], cm_buf_start(&out), cm_buf_used(&out), &back,
                                           err, sizeof(err))
                   : cm_ser_decode(sers[i], cm_buf_start(&out), cm_buf_used(&out), &back, err,
                                   sizeof(err));
            if (rc != CM_OK) {
                __builtin_trap(); /* our own encoding must decode */
            }
            cm_buf_reset(&out);
            cm_buf_reset(&back);
        }
    }
    cm_buf_deinit(&out);
    cm_buf_deinit(&back);
    return 0;
}
