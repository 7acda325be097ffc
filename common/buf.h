/* A growable byte buffer, reused across messages so the hot paths do not
 * allocate once it has reached its working size. */
#ifndef CP_BUF_H
#define CP_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int failed; /* set when an allocation failed; all later appends are no-ops */
} cp_buf;

void cp_buf_init(cp_buf *b);
void cp_buf_free(cp_buf *b);
void cp_buf_reset(cp_buf *b);
/* Makes sure at least extra more bytes fit; returns 0 or -1. */
int cp_buf_reserve(cp_buf *b, size_t extra);
void cp_buf_append(cp_buf *b, const void *data, size_t len);
void cp_buf_puts(cp_buf *b, const char *s);
void cp_buf_putc(cp_buf *b, char c);
void cp_buf_printf(cp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. Invalid UTF-8 bytes
 * are replaced by U+FFFD so the output is always valid JSON. */
void cp_buf_json_string(cp_buf *b, const char *s, size_t len);
/* NUL-terminates without counting the terminator in len. */
const char *cp_buf_cstr(cp_buf *b);



/* True when the bytes are well-formed UTF-8. */
int cp_utf8_valid(const char *s, size_t len);

#endif
