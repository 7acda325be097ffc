#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cp_buf_init(cp_buf *b) { memset(b, 0, sizeof *b); }

void cp_buf_free(cp_buf *b)
{
    free(b->data);
    cp_buf_init(b);
}

void cp_buf_reset(cp_buf *b)
{
    b->len = 0;
    b->failed = 0;
}

int cp_buf_reserve(cp_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void cp_buf_append(cp_buf *b, const void *data, size_t len)
{
    if (cp_buf_reserve(b, len) != 0)
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void cp_buf_puts(cp_buf *b, const char *s) { cp_buf_append(b, s, strlen(s)); }

void cp_buf_putc(cp_buf *b, char c) { cp_buf_append(b, &c, 1); }

void cp_buf_printf(cp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        cp_buf_append(b, small, (size_t)n);
        return;
    }
    if (cp_buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence starting at s, or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

void cp_buf_json_string(cp_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    if (cp_buf_reserve(b, len + 2) != 0)
        return;
    cp_buf_putc(b, '"');
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            size_t start = i;
            while (i < len && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\' && p[i] < 0x80)
                i++;
            cp_buf_append(b, p + start, i - start);
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_seq_len(p + i, len - i);
            if (n == 0) {
                cp_buf_puts(b, "\\ufffd");
                i++;
            } else {
                cp_buf_append(b, p + i, n);
                i += n;
            }
            continue;
        }
        switch (c) {
        case '"':
            cp_buf_puts(b, "\\\"");
            break;
        case '\\':
            cp_buf_puts(b, "\\\\");
            break;
        case '\n':
            cp_buf_puts(b, "\\n");
            break;
        case '\r':
            cp_buf_puts(b, "\\r");
            break;
        case '\t':
            cp_buf_puts(b, "\\t");
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            cp_buf_append(b, esc, 6);
        }
        }
        i++;
    }
    cp_buf_putc(b, '"');
}

const char *cp_buf_cstr(cp_buf *b)
{
    if (cp_buf_reserve(b, 0) != 0)
        return "";
    b->data[b->len] = '\0';
    return b->data;
}

int cp_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_seq_len(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}
