#include "commalist.h"

#include <string.h>
#include <strings.h>

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

int cp_comma_has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return 1;
    }
    return 0;
}
