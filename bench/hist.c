#include "hist.h"

#include <string.h>

void hist_reset(hist *h)
{
    memset(h, 0, sizeof *h);
}

unsigned hist_index(uint64_t v)
{
    if (v < 16)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 4 */
    unsigned sub = (unsigned)(v >> (e - 4)) & 15u;
    return (e - 3) * 16 + sub;
}

uint64_t hist_upper(unsigned idx)
{
    if (idx < 16)
        return idx;
    unsigned e = idx / 16 + 3, sub = idx % 16;
    if (e >= 63)
        return UINT64_MAX;
    return (((uint64_t)(17 + sub)) << (e - 4)) - 1;
}

void hist_add(hist *h, uint64_t v)
{
    unsigned i = hist_index(v);
    if (i >= HIST_BUCKETS)
        i = HIST_BUCKETS - 1;
    h->b[i]++;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
}

void hist_merge(hist *into, const hist *from)
{
    if (from->count == 0)
        return;
    if (into->count == 0 || from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
    into->count += from->count;
    into->sum += from->sum;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
}

uint64_t hist_quantile(const hist *h, double q)
{
    if (h->count == 0)
        return 0;
    /* The rank of the q-quantile, 1-based: ceil(q * count), at least 1. */
    double r = q * (double)h->count;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t u = hist_upper(i);
            return u > h->max ? h->max : u;
        }
    }
    return h->max;
}
