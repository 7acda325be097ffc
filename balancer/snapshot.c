/* The view refreshes on its own thread; the service thread takes the newest
 * snapshot into its placement when it next needs one, so a burst of
 * requests between two refreshes shares one snapshot and its hand-out
 * counts. */
#include "balancer.h"

void snapshot_on_refresh(void *ud)
{
    balancer *b = ud;
    atomic_store(&b->view_changed, 1);
}

placement *snapshot_placement(balancer *b)
{
    if (atomic_exchange(&b->view_changed, 0)) {
        size_t n = view_snapshot(b->view, b->snapshot, PLACEMENT_MAX_BRIDGES, NULL, &b->redis_ok);
        placement_load(&b->placement, b->snapshot, n);
    }
    return &b->placement;
}
