/* Unit tests for bridge/sendring.c on real sockets (socketpairs): every
 * send comes back once with its tag and what the socket took; a full
 * socket answers -EAGAIN or a short count, at once; a closed peer is
 * -EPIPE, not a signal; a full submission refuses more; the ring is
 * reusable after a run. Skipped where the kernel refuses io_uring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sendring.h"

#define MAX_RESULTS 64

typedef struct {
    int n;
    uint32_t tags[MAX_RESULTS];
    int res[MAX_RESULTS];
} results;

static void record(void *ud, uint32_t tag, int res)
{
    results *r = ud;
    assert_true(r->n < MAX_RESULTS);
    r->tags[r->n] = tag;
    r->res[r->n] = res;
    r->n++;
}

/* The result recorded for tag; fails when there is not exactly one. */
static int result_of(const results *r, uint32_t tag)
{
    int found = -1;
    for (int i = 0; i < r->n; i++)
        if (r->tags[i] == tag) {
            assert_int_equal(found, -1);
            found = i;
        }
    assert_int_not_equal(found, -1);
    return r->res[found];
}

static send_ring *open_or_skip(unsigned entries)
{
    char why[128];
    send_ring *ring = send_ring_open(entries, why, sizeof why);
    if (!ring) {
        print_message("io_uring unavailable here (%s): skipped\n", why);
        skip();
    }
    return ring;
}

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
}

static void every_send_is_reported_once_with_its_bytes(void **state)
{
    (void)state;
    send_ring *ring = open_or_skip(8);
    int a[2], b[2];
    pair(a);
    pair(b);
    assert_int_equal(send_ring_space(ring), 8);
    assert_int_equal(send_ring_add(ring, a[0], "hello", 5, 70), 0);
    assert_int_equal(send_ring_add(ring, b[0], "world!", 6, 71), 0);
    assert_int_equal(send_ring_space(ring), 6);
    results r = {0};
    assert_int_equal(send_ring_run(ring, record, &r), 2);
    assert_int_equal(r.n, 2);
    assert_int_equal(result_of(&r, 70), 5);
    assert_int_equal(result_of(&r, 71), 6);
    char buf[16];
    assert_int_equal(read(a[1], buf, sizeof buf), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(read(b[1], buf, sizeof buf), 6);
    assert_memory_equal(buf, "world!", 6);
    /* The ring is empty again and reusable. */
    assert_int_equal(send_ring_space(ring), 8);
    r.n = 0;
    assert_int_equal(send_ring_add(ring, a[0], "again", 5, 1), 0);
    assert_int_equal(send_ring_run(ring, record, &r), 1);
    assert_int_equal(result_of(&r, 1), 5);
    assert_int_equal(read(a[1], buf, sizeof buf), 5);
    assert_memory_equal(buf, "again", 5);
    assert_int_equal(send_ring_run(ring, record, &r), 0); /* nothing queued */
    close(a[0]), close(a[1]), close(b[0]), close(b[1]);
    send_ring_close(ring);
}

static void a_full_socket_answers_at_once(void **state)
{
    (void)state;
    send_ring *ring = open_or_skip(4);
    int sv[2];
    pair(sv);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    results r = {0};
    /* More than the socket holds: a short count, then nothing at all
     * (the peer reads nothing); neither waits for the reader. */
    assert_int_equal(send_ring_add(ring, sv[0], big, sizeof big, 1), 0);
    assert_int_equal(send_ring_run(ring, record, &r), 1);
    int took = result_of(&r, 1);
    assert_true(took > 0 && took < (int)sizeof big);
    r.n = 0;
    assert_int_equal(send_ring_add(ring, sv[0], big, sizeof big, 2), 0);
    assert_int_equal(send_ring_run(ring, record, &r), 1);
    assert_int_equal(result_of(&r, 2), -EAGAIN);
    close(sv[0]), close(sv[1]);
    send_ring_close(ring);
}

static void a_closed_peer_is_an_error_not_a_signal(void **state)
{
    (void)state;
    send_ring *ring = open_or_skip(4);
    int sv[2], ok[2];
    pair(sv);
    pair(ok);
    close(sv[1]);
    results r = {0};
    assert_int_equal(send_ring_add(ring, sv[0], "gone", 4, 9), 0);
    assert_int_equal(send_ring_add(ring, ok[0], "fine", 4, 10), 0);
    assert_int_equal(send_ring_run(ring, record, &r), 2); /* SIGPIPE would end the test */
    assert_int_equal(result_of(&r, 9), -EPIPE);
    assert_int_equal(result_of(&r, 10), 4); /* the other send is not affected */
    close(sv[0]), close(ok[0]), close(ok[1]);
    send_ring_close(ring);
}

static void a_full_submission_refuses_more(void **state)
{
    (void)state;
    send_ring *ring = open_or_skip(2);
    int sv[2];
    pair(sv);
    assert_int_equal(send_ring_add(ring, sv[0], "a", 1, 0), 0);
    assert_int_equal(send_ring_add(ring, sv[0], "b", 1, 1), 0);
    assert_int_equal(send_ring_space(ring), 0);
    assert_int_equal(send_ring_add(ring, sv[0], "c", 1, 2), -1);
    results r = {0};
    assert_int_equal(send_ring_run(ring, record, &r), 2);
    assert_int_equal(r.n, 2);
    /* Sent in the order added. */
    char buf[4];
    assert_int_equal(read(sv[1], buf, sizeof buf), 2);
    assert_memory_equal(buf, "ab", 2);
    close(sv[0]), close(sv[1]);
    send_ring_close(ring);
}

static void a_bad_descriptor_is_reported_not_fatal(void **state)
{
    (void)state;
    send_ring *ring = open_or_skip(2);
    results r = {0};
    assert_int_equal(send_ring_add(ring, 1000000, "x", 1, 5), 0);
    assert_int_equal(send_ring_run(ring, record, &r), 1);
    assert_int_equal(result_of(&r, 5), -EBADF);
    send_ring_close(ring);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_send_is_reported_once_with_its_bytes),
        cmocka_unit_test(a_full_socket_answers_at_once),
        cmocka_unit_test(a_closed_peer_is_an_error_not_a_signal),
        cmocka_unit_test(a_full_submission_refuses_more),
        cmocka_unit_test(a_bad_descriptor_is_reported_not_fatal),
    };
    send_ring_close(NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
