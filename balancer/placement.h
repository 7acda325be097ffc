/* Where a new connection goes: the live, non-draining bridge with the least
 * load, load = (connections + connections handed out since the last view
 * refresh) / capacity. Counting what was handed out keeps a burst from
 * landing on one bridge between two refreshes; a new, empty bridge fills up
 * to the others' level and then shares. Ties are broken at random. */
#ifndef BALANCER_PLACEMENT_H
#define BALANCER_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "view.h"

/* Returns the index of the chosen bridge, or -1 when none can take a
 * connection (none live, all draining or full). rnd: any random value. */
int placement_pick(const bridge_info *bridges, const unsigned *handed, size_t count,
                   uint64_t rnd);

#endif
