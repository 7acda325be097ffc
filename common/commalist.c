#include "commalist.h"

#include <string.h>

int cp_comma_next(const char **cursor, const char **item, size_t *len)
{
    const char *p = *cursor;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *start = p;
        p = comma ? comma + 1 : p + n;
        if (n) {
            *cursor = p;
            *item = start;
            *len = n;
            return 1;
        }
    }
    *cursor = p;
    return 0;
}
