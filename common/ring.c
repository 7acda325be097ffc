#include "ring.h"

#include <stdlib.h>
#include <string.h>

int cp_ring_init(cp_ring *r, size_t elem, size_t cap, size_t max_cap)
{
    memset(r, 0, sizeof *r);
    r->slots = calloc(cap ? cap : 1, elem);
    if (!r->slots)
        return -1;
    r->elem = elem;
    r->cap = r->base_cap = cap ? cap : 1;
    r->max_cap = max_cap < r->cap ? r->cap : max_cap;
    return 0;
}

void *cp_ring_at(const cp_ring *r, size_t i)
{
    return r->slots + ((r->head + i) % r->cap) * r->elem;
}

/* Moves the elements, in order, into new slots of cap elements. */
static int resize(cp_ring *r, size_t cap)
{
    unsigned char *slots = malloc(cap * r->elem);
    if (!slots)
        return -1;
    for (size_t i = 0; i < r->count; i++)
        memcpy(slots + i * r->elem, cp_ring_at(r, i), r->elem);
    free(r->slots);
    r->slots = slots;
    r->cap = cap;
    r->head = 0;
    return 0;
}

void *cp_ring_push(cp_ring *r, int *grew)
{
    if (grew)
        *grew = 0;
    if (r->count == r->cap) {
        if (r->cap >= r->max_cap)
            return NULL;
        size_t cap = r->cap > r->max_cap / 2 ? r->max_cap : r->cap * 2;
        if (resize(r, cap) != 0)
            return NULL;
        if (grew)
            *grew = 1;
    }
    void *slot = cp_ring_at(r, r->count);
    r->count++;
    return slot;
}

size_t cp_ring_take(cp_ring *r, void *out, size_t max)
{
    size_t n = r->count < max ? r->count : max;
    for (size_t i = 0; i < n; i++)
        memcpy((unsigned char *)out + i * r->elem, cp_ring_at(r, i), r->elem);
    r->head = (r->head + n) % r->cap;
    r->count -= n;
    if (!r->count && r->cap != r->base_cap)
        resize(r, r->base_cap); /* on failure it keeps the larger slots */
    return n;
}

void cp_ring_free(cp_ring *r)
{
    free(r->slots);
    r->slots = NULL;
    r->count = r->cap = 0;
}
