#include "placement.h"

int placement_pick(const bridge_info *bridges, const unsigned *handed, size_t count,
                   uint64_t rnd)
{
    int best = -1;
    unsigned ties = 0;
    /* Compare a/b < c/d as a*d < c*b in 64 bits: exact, no float ties. */
    uint64_t best_num = 0, best_den = 1;
    for (size_t i = 0; i < count; i++) {
        const bridge_info *b = &bridges[i];
        if (b->draining || b->capacity == 0)
            continue;
        uint64_t used = (uint64_t)b->connections + handed[i];
        if (used >= b->capacity)
            continue;
        uint64_t num = used, den = b->capacity;
        if (best < 0 || num * best_den < best_num * den) {
            best = (int)i;
            best_num = num;
            best_den = den;
            ties = 1;
        } else if (num * best_den == best_num * den) {
            /* Reservoir sampling: each tied bridge is kept with equal odds. */
            ties++;
            rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((rnd >> 33) % ties == 0)
                best = (int)i;
        }
    }
    return best;
}
