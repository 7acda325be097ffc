#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "upgradehead.h"

#include <string.h>
#include <strings.h>

#include "commalist.h"

/* The first CRLF in [p, lim): the head's end guarantees one. */
static const char *crlf(const char *p, const char *lim)
{
    return memmem(p, (size_t)(lim - p), "\r\n", 2);
}

int upgrade_head_scan(const char *buf, size_t n, size_t max_target, size_t *head_len)
{
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t len = (size_t)(end - buf) + 4;
    if (memchr(buf, '\0', len))
        return 0;
    /* The request line: GET /target HTTP/1.1 */
    if (len < 5 || memcmp(buf, "GET /", 5) != 0)
        return 0;
    const char *target = buf + 4;
    const char *sp = memchr(target, ' ', (size_t)(end - target));
    if (!sp || (size_t)(sp - target) > max_target)
        return 0;
    const char *eol = crlf(sp, end + 2);
    if (eol - sp != 9 || memcmp(sp, " HTTP/1.1", 9) != 0)
        return 0;
    for (const char *t = target; t < sp; t++)
        if ((unsigned char)*t <= ' ' || *t == 0x7f)
            return 0;
    /* The header lines, up to the blank one. */
    int upgrade = 0;
    const char *line = eol + 2;
    while (line < end + 2) {
        const char *next = crlf(line, end + 2);
        if (line[0] == ' ' || line[0] == '\t')
            return 0; /* a folded line: lws decides */
        const char *colon = memchr(line, ':', (size_t)(next - line));
        if (!colon)
            return 0;
        if (colon - line == 7 && strncasecmp(line, "upgrade", 7) == 0)
            upgrade |= cp_comma_has_token(colon + 1, (size_t)(next - colon - 1), "websocket");
        line = next + 2;
    }
    if (!upgrade)
        return 0;
    *head_len = len;
    return 1;
}
