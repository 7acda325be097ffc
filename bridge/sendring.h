/* Many sends in one system call: the sessions a loop pass has frames for
 * (a broadcast reaches thousands) are written through one io_uring
 * submission instead of one send() each. Each send is non-blocking
 * (MSG_DONTWAIT): it completes within the submission, with what the
 * socket took, so the caller learns every result before it returns and no
 * buffer or descriptor outlives the call. */
#ifndef BRIDGE_SENDRING_H
#define BRIDGE_SENDRING_H

#include <stddef.h>
#include <stdint.h>

typedef struct send_ring send_ring;

/* A ring for up to entries sends per submission, or NULL with the reason in
 * why (the kernel or a seccomp policy refuses io_uring: callers then send
 * one by one). */
send_ring *send_ring_open(unsigned entries, char *why, size_t cap);
void send_ring_close(send_ring *r);

/* Sends that still fit in this submission. */
unsigned send_ring_space(const send_ring *r);

/* Queues a send of len bytes at data on fd; data must stay as it is until
 * send_ring_run returns. tag comes back with the result. Returns 0, or -1
 * when the submission is full. */
int send_ring_add(send_ring *r, int fd, const void *data, size_t len, uint32_t tag);

/* Submits the queued sends, waits for all of them, and calls done once for
 * each with its tag and result: the bytes sent (possibly fewer than asked)
 * or -errno (-EAGAIN: the socket took nothing). Returns the number of
 * sends made, or -1 when io_uring itself failed: the sends it did not
 * make are reported with -EIO (nothing of theirs was sent, so the caller
 * can send them itself); the ring is rebuilt, or gone (send_ring_space 0). */
int send_ring_run(send_ring *r, void (*done)(void *ud, uint32_t tag, int res), void *ud);

#endif
