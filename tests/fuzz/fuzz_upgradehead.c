/* libFuzzer target for balancer/upgradehead.c: what the balancer reads of a
 * request it peeked at right after accept, to hand it to a bridge unread.
 *
 * Invariants (abort on violation), for every input and every max_target of
 * a few: when the scan says yes, the head it names lies inside the input,
 * starts with "GET /", ends with its blank line (the first in the input),
 * holds no NUL, and its request target is at most max_target bytes; the
 * answer does not change when more bytes follow the head (the balancer may
 * peek more than the head), and every shorter prefix of the head is "no"
 * (incomplete). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upgradehead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *buf, size_t n, size_t max_target)
{
    size_t len = 0;
    if (!upgrade_head_scan(buf, n, max_target, &len))
        return;
    if (len < 9 || len > n || memcmp(buf, "GET /", 5) != 0 ||
        memcmp(buf + len - 4, "\r\n\r\n", 4) != 0 || memchr(buf, '\0', len))
        abort();
    const char *sp = memchr(buf + 4, ' ', len - 4);
    if (!sp || (size_t)(sp - (buf + 4)) > max_target)
        abort();
    for (size_t i = 0; i + 4 < len; i++)
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
            abort(); /* an earlier blank line: the head was cut wrong */
    size_t again = 0;
    if (!upgrade_head_scan(buf, len, max_target, &again) || again != len)
        abort();
    if (upgrade_head_scan(buf, len - 1, max_target, &again))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Its own copy: the scanner must not need a terminator. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    static const size_t targets[] = {0, 1, 16, 1900};
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
        check(buf, size, targets[i]);
    free(buf);
    return 0;
}
