/* Value equality of two cJSON trees for the fuzz targets: cJSON_Compare
 * takes inf for unequal to inf (1e400 parses to inf), and a tree printed
 * and parsed again may differ in a number's last digit (cJSON prints 15-17
 * significant digits). Numbers are equal when both are non-finite with the
 * same sign, or within a relative 1e-14; a non-finite number equals null
 * (how cJSON prints it). */
#ifndef FUZZ_JSON_SAME_H
#define FUZZ_JSON_SAME_H

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

static int json_same(const cJSON *a, const cJSON *b)
{
    if (!a || !b)
        return a == b;
    /* cJSON prints a non-finite number as null */
    if (cJSON_IsNumber(a) && cJSON_IsNull(b))
        return !isfinite(a->valuedouble);
    if (cJSON_IsNull(a) && cJSON_IsNumber(b))
        return !isfinite(b->valuedouble);
    if ((a->type & 0xFF) != (b->type & 0xFF))
        return 0;
    if (cJSON_IsNumber(a)) {
        double x = a->valuedouble, y = b->valuedouble;
        if (!isfinite(x) || !isfinite(y))
            return !isfinite(x) && !isfinite(y) && signbit(x) == signbit(y);
        return fabs(x - y) <= 1e-14 * fmax(fabs(x), fabs(y));
    }
    if (cJSON_IsString(a))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsArray(a) || cJSON_IsObject(a)) {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next) {
            if (cJSON_IsObject(a) && strcmp(x->string, y->string) != 0)
                return 0;
            if (!json_same(x, y))
                return 0;
        }
        return !x && !y;
    }
    return 1; /* true, false, null */
}

#endif
