/* Unit tests for what a --workers worker tells its master about sessions
 * (bridge/registry.c, registry_to_master): every change arrives once and in
 * order, a burst goes in few datagrams of at most REGISTRY_MESSAGE_MAX
 * bytes, one line per change; the master's parser takes every line of a
 * datagram and reports a malformed one without losing the others. On a
 * socketpair of the kind the master uses (SOCK_SEQPACKET). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "registry.h"

#define SESSIONS 2000

typedef struct {
    int sv[2];
    registry *r;
} wire;

static int setup(void **state)
{
    wire *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, w->sv), 0);
    w->r = registry_to_master(w->sv[1], NULL, NULL);
    assert_non_null(w->r);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    wire *w = *state;
    registry_stop(w->r); /* closes its end, sv[1] */
    close(w->sv[0]);
    free(w);
    return 0;
}

/* Reads datagrams until `lines` lines arrived (or 5 s without one). */
static size_t read_lines(int sock, char *all, size_t cap, size_t lines, size_t *datagrams)
{
    size_t len = 0, seen = 0;
    *datagrams = 0;
    while (seen < lines) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1)
            break;
        char msg[REGISTRY_MESSAGE_MAX + 1];
        ssize_t n = recv(sock, msg, sizeof msg, 0);
        assert_true(n > 0);
        assert_true((size_t)n <= REGISTRY_MESSAGE_MAX);
        assert_int_equal(msg[n - 1], '\n'); /* whole lines only */
        (*datagrams)++;
        assert_true(len + (size_t)n < cap);
        memcpy(all + len, msg, (size_t)n);
        len += (size_t)n;
        for (ssize_t i = 0; i < n; i++)
            seen += msg[i] == '\n';
    }
    all[len] = '\0';
    return seen;
}

static void test_burst_arrives_whole_in_few_datagrams(void **state)
{
    wire *w = *state;
    char sid[32], channel[32];
    for (int i = 0; i < SESSIONS; i++) {
        snprintf(channel, sizeof channel, "user-%d", i);
        snprintf(sid, sizeof sid, "s%d", i);
        if (i % 3 == 2)
            registry_session_down(w->r, channel, sid, strlen(sid));
        else
            registry_session_up(w->r, channel, sid, strlen(sid), 1000 + i);
    }
    size_t cap = (size_t)SESSIONS * 64;
    char *all = malloc(cap);
    assert_non_null(all);
    size_t datagrams;
    assert_int_equal(read_lines(w->sv[0], all, cap, SESSIONS, &datagrams), SESSIONS);
    /* Batched: the thread takes what queued meanwhile, so a burst of 2 000
     * changes takes far fewer datagrams than changes. */
    assert_true(datagrams < SESSIONS / 4);
    char *save = NULL, *line = strtok_r(all, "\n", &save);
    for (int i = 0; i < SESSIONS; i++, line = strtok_r(NULL, "\n", &save)) {
        assert_non_null(line);
        char want[96];
        if (i % 3 == 2)
            snprintf(want, sizeof want, "D user-%d s%d", i, i);
        else
            snprintf(want, sizeof want, "U%d user-%d s%d", 1000 + i, i, i);
        assert_string_equal(line, want);
    }
    assert_null(line);
    free(all);
}

/* The master's side: every line of a datagram is taken; a malformed line
 * is reported (-1) and the well-formed ones around it are still taken (the
 * queue they went to is this registry's: stopping it frees them). */
static void test_master_parses_every_line(void **state)
{
    wire *w = *state;
    static const char ok[] = "U5 a s1\nD a s1\nU6 b s2\n";
    assert_int_equal(registry_worker_message(w->r, 1, ok, sizeof ok - 1), 0);
    static const char last_unterminated[] = "U5 a s1\nD a s1";
    assert_int_equal(
        registry_worker_message(w->r, 1, last_unterminated, sizeof last_unterminated - 1), 0);
    static const char bad[] = "U5 a s1\nX nonsense\nD a s1\n";
    assert_int_equal(registry_worker_message(w->r, 1, bad, sizeof bad - 1), -1);
    static const char no_sid[] = "U5 a\n";
    assert_int_equal(registry_worker_message(w->r, 1, no_sid, sizeof no_sid - 1), -1);
    assert_int_equal(registry_worker_message(w->r, 1, "", 0), -1);
    assert_int_equal(registry_worker_message(NULL, 1, ok, sizeof ok - 1), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_burst_arrives_whole_in_few_datagrams, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_master_parses_every_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
