/* libFuzzer target for the delivery batch format (common/dbatch.c), which
 * every bridge worker reads from the bus.
 *
 * Each input is read item by item with cp_dbatch_next. Invariants:
 *   - every item lies inside the input, its channel is 1-128 bytes, and
 *     the position only moves forward and never past the end;
 *   - the end (0) is reported only with the position at the end;
 *   - the items read, written again with cp_dbatch_add, read back as the
 *     same items (the writer and the reader agree).
 * Any violation aborts, so libFuzzer saves the input as a crash artifact. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dbatch.h"

#define ITEMS_MAX 4096

static cp_dbatch_item items[ITEMS_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t at = 0, n = 0;
    int rc;
    cp_dbatch_item it;
    while (n < ITEMS_MAX && (rc = cp_dbatch_next(p, size, &at, &it)) == 1) {
        size_t before = n ? (size_t)(items[n - 1].envelope + items[n - 1].len - p) : 0;
        if (at > size || at <= before)
            abort();
        if (it.channel_len < 1 || it.channel_len > 128 || it.channel < p ||
            it.channel + it.channel_len > p + size || it.envelope < p ||
            it.envelope + it.len > p + size || it.envelope + it.len + 1 != p + at)
            abort();
        if (memchr(it.channel, ' ', it.channel_len))
            abort();
        items[n++] = it;
    }
    if (n < ITEMS_MAX && rc == 0 && at != size)
        abort();

    /* Written again and read back: the same items. */
    char channel[129];
    cp_dbatch d;
    cp_dbatch_init(&d);
    for (size_t i = 0; i < n; i++) {
        memcpy(channel, items[i].channel, items[i].channel_len);
        channel[items[i].channel_len] = '\0';
        int broadcast = items[i].channel_len == 1 && channel[0] == '*';
        if (memchr(channel, '\0', items[i].channel_len))
            goto done; /* the writer takes a C string */
        if (cp_dbatch_add(&d, broadcast ? NULL : channel, items[i].envelope, items[i].len,
                          NULL) != 0)
            goto done;
    }
    at = 0;
    for (size_t i = 0; i < n; i++) {
        if (cp_dbatch_next(d.payload.data, d.payload.len, &at, &it) != 1 ||
            it.channel_len != items[i].channel_len ||
            memcmp(it.channel, items[i].channel, it.channel_len) != 0 ||
            it.len != items[i].len || memcmp(it.envelope, items[i].envelope, it.len) != 0)
            abort();
    }
    if (n && cp_dbatch_next(d.payload.data, d.payload.len, &at, &it) != 0)
        abort();
done:
    cp_dbatch_free(&d);
    return 0;
}
