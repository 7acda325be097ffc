#include "sendring.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct send_ring {
    struct io_uring ring;
    int live;          /* ring set up (it is rebuilt after a failed submission) */
    unsigned entries;
    unsigned queued;
    uint32_t *tags;    /* by slot: user_data is the slot */
    unsigned char *reported;
};

send_ring *send_ring_open(unsigned entries, char *why, size_t cap)
{
    send_ring *r = calloc(1, sizeof *r);
    if (r) {
        r->tags = calloc(entries, sizeof *r->tags);
        r->reported = calloc(entries, 1);
    }
    if (!r || !r->tags || !r->reported) {
        snprintf(why, cap, "out of memory");
        send_ring_close(r);
        return NULL;
    }
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) {
        snprintf(why, cap, "io_uring_setup: %s", strerror(-rc));
        send_ring_close(r);
        return NULL;
    }
    r->live = 1;
    r->entries = entries;
    return r;
}

void send_ring_close(send_ring *r)
{
    if (!r)
        return;
    if (r->live)
        io_uring_queue_exit(&r->ring);
    free(r->tags);
    free(r->reported);
    free(r);
}

unsigned send_ring_space(const send_ring *r) { return r->live ? r->entries - r->queued : 0; }

int send_ring_add(send_ring *r, int fd, const void *data, size_t len, uint32_t tag)
{
    struct io_uring_sqe *sqe = send_ring_space(r) ? io_uring_get_sqe(&r->ring) : NULL;
    if (!sqe)
        return -1;
    /* MSG_DONTWAIT: a full socket answers -EAGAIN at once instead of the
     * ring waiting for it; MSG_NOSIGNAL: a closed peer is -EPIPE, not a
     * signal. */
    io_uring_prep_send(sqe, fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, r->queued);
    r->tags[r->queued] = tag;
    r->reported[r->queued] = 0;
    r->queued++;
    return 0;
}

/* Reports every completion that is ready, waiting for at least min. */
static int reap(send_ring *r, unsigned min, void (*done)(void *, uint32_t, int), void *ud)
{
    unsigned seen = 0;
    while (seen < min) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&r->ring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return -1;
        uint64_t slot = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&r->ring, cqe);
        if (slot < r->queued && !r->reported[slot]) {
            r->reported[slot] = 1;
            done(ud, r->tags[slot], res);
        }
        seen++;
    }
    return 0;
}

int send_ring_run(send_ring *r, void (*done)(void *ud, uint32_t tag, int res), void *ud)
{
    unsigned want = r->queued;
    if (!want)
        return 0;
    unsigned submitted = 0;
    int failed = 0;
    while (submitted < want && !failed) {
        int rc = io_uring_submit_and_wait(&r->ring, want - submitted);
        if (rc == -EINTR)
            continue;
        if (rc <= 0)
            failed = 1;
        else
            submitted += (unsigned)rc;
    }
    if (reap(r, submitted, done, ud) != 0)
        failed = 1;
    if (failed) {
        /* What the kernel did not take is still queued in the ring: rebuild
         * it so that nothing is sent later, and report those unsent. */
        io_uring_queue_exit(&r->ring);
        r->live = io_uring_queue_init(r->entries, &r->ring, 0) == 0;
        for (unsigned i = 0; i < want; i++)
            if (!r->reported[i])
                done(ud, r->tags[i], -EIO);
    }
    r->queued = 0;
    return failed ? -1 : (int)submitted;
}
