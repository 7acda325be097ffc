/* Comma-separated option values ("a,b,c"), walked in place:
 *
 *     const char *item;
 *     size_t len;
 *     for (const char *p = list; cp_comma_next(&p, &item, &len);)
 *         use(item, len);
 *
 * Empty items ("a,,b", a trailing comma) are skipped; items are not
 * trimmed. list may be NULL. */
#ifndef CP_COMMALIST_H
#define CP_COMMALIST_H

#include <stddef.h>

/* Gives the next non-empty item at *cursor and moves past it: 1, or 0 at
 * the end. */
int cp_comma_next(const char **cursor, const char **item, size_t *len);

/* Whether the comma-separated list v[0..len) (an HTTP header's value such
 * as "keep-alive, Upgrade") has token: compared without case, blanks
 * around items ignored, no terminator needed. */
int cp_comma_has_token(const char *v, size_t len, const char *token);

#endif
