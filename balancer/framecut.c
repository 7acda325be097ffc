/* See framecut.h. */
#include "framecut.h"

#include <string.h>

void framecut_init(framecut *f)
{
    memset(f, 0, sizeof *f);
    f->phase = FRAMECUT_HEAD;
    f->hneed = 2;
}

static size_t feed_head(framecut *f, const unsigned char *p, size_t len)
{
    static const char end[] = "\r\n\r\n";
    for (size_t i = 0; i < len; i++) {
        if (f->head_seen < sizeof f->status)
            f->status[f->head_seen++] = (char)p[i];
        if (p[i] == (unsigned char)end[f->crlf])
            f->crlf++;
        else
            f->crlf = p[i] == '\r' ? 1 : 0;
        if (f->crlf == 4) {
            int upgraded = f->head_seen == sizeof f->status &&
                           memcmp(f->status, "HTTP/1.1 101", sizeof f->status) == 0;
            f->phase = upgraded ? FRAMECUT_FRAMES : FRAMECUT_OPAQUE;
            return i + 1;
        }
    }
    return len;
}

/* Bytes of header a frame needs, once its first two bytes are known. */
static uint8_t header_size(const uint8_t *hdr)
{
    uint8_t len7 = hdr[1] & 0x7f;
    return (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((hdr[1] & 0x80) ? 4 : 0));
}

void framecut_feed(framecut *f, const unsigned char *p, size_t len)
{
    if (f->phase == FRAMECUT_HEAD) {
        size_t used = feed_head(f, p, len);
        p += used;
        len -= used;
    }
    if (f->phase != FRAMECUT_FRAMES)
        return;
    while (len) {
        if (f->remaining) {
            size_t skip = f->remaining < len ? (size_t)f->remaining : len;
            f->remaining -= skip;
            p += skip;
            len -= skip;
            continue;
        }
        f->hdr[f->hlen++] = *p++;
        len--;
        if (f->hlen == 2)
            f->hneed = header_size(f->hdr);
        if (f->hlen < 2 || f->hlen < f->hneed)
            continue;
        uint8_t len7 = f->hdr[1] & 0x7f;
        uint64_t n = len7;
        if (len7 == 126)
            n = (uint64_t)f->hdr[2] << 8 | f->hdr[3];
        else if (len7 == 127) {
            n = 0;
            for (int i = 2; i < 10; i++)
                n = n << 8 | f->hdr[i];
        }
        if ((f->hdr[0] & 0x0f) == 0x8)
            f->close_seen = 1;
        f->remaining = n;
        f->hlen = 0;
        f->hneed = 2;
    }
}

size_t framecut_close_frame(unsigned char *out, uint16_t code, const char *reason)
{
    size_t rl = strlen(reason);
    if (rl > 123)
        rl = 123;
    out[0] = 0x88; /* FIN, close */
    out[1] = (unsigned char)(2 + rl);
    out[2] = (unsigned char)(code >> 8);
    out[3] = (unsigned char)(code & 0xff);
    memcpy(out + 4, reason, rl);
    return 4 + rl;
}
