/* cloudpush-sendcost: what one small write to each of many loopback TCP
 * connections costs, one send() each against one io_uring submission for
 * all of them through the bridge's own bridge/sendring.c (docs/benchmarks.md,
 * "Broadcast fan-out"). Process CPU per write, the receivers' loopback work
 * included; the receivers do not read (ROUNDS x SIZE must fit in a socket's
 * buffers, ~200 KB by default: checked). Loopback only.
 *
 * Usage: cloudpush-sendcost [--conns N] [--rounds K] [--size BYTES] [--repeat R]
 * Prints one line per mode and run, then the ratio of the medians. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sendring.h"

#define RING_MAX 1024

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long results_short;

static void count_short(void *ud, uint32_t tag, int res)
{
    size_t want = *(size_t *)ud;
    (void)tag;
    if (res < 0 || (size_t)res != want)
        results_short++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One run: every connection gets size bytes, rounds times. Returns the CPU
 * microseconds per write, or -1. */
static double run(int *fds, int n, int rounds, size_t size, send_ring *ring)
{
    static char msg[65536];
    memset(msg, 'x', size);
    long shorts = 0;
    results_short = 0;
    double t0 = cpu_s();
    for (int k = 0; k < rounds; k++) {
        if (!ring) {
            for (int i = 0; i < n; i++)
                if (send(fds[i], msg, size, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)size)
                    shorts++;
            continue;
        }
        for (int i = 0; i < n;) {
            while (i < n && send_ring_space(ring))
                send_ring_add(ring, fds[i++], msg, size, 0);
            if (send_ring_run(ring, count_short, &size) < 0)
                return -1;
        }
    }
    double t1 = cpu_s();
    shorts += results_short;
    if (shorts) {
        fprintf(stderr, "%ld writes were short: lower --rounds or --size\n", shorts);
        return -1;
    }
    return (t1 - t0) / ((double)n * rounds) * 1e6;
}

int main(int argc, char **argv)
{
    int n = 5000, rounds = 20, repeat = 3;
    size_t size = 130;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--conns") && v)
            n = atoi(v), i++;
        else if (!strcmp(argv[i], "--rounds") && v)
            rounds = atoi(v), i++;
        else if (!strcmp(argv[i], "--size") && v)
            size = (size_t)atol(v), i++;
        else if (!strcmp(argv[i], "--repeat") && v)
            repeat = atoi(v), i++;
        else {
            fprintf(stderr, "usage: %s [--conns N] [--rounds K] [--size BYTES] [--repeat R]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n < 1 || rounds < 1 || repeat < 1 || repeat > 99 || size < 1 || size > 65536 ||
        (size_t)rounds * size > 200000) {
        fprintf(stderr, "bad arguments (rounds x size must stay below 200 000 bytes)\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)n * 2 + 16 > rl.rlim_cur) {
        fprintf(stderr, "--conns %d needs %d descriptors, the limit is %lu\n", n, n * 2 + 16,
                (unsigned long)rl.rlim_cur);
        return 2;
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 4096) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
        perror("listen");
        return 1;
    }
    int *client = calloc((size_t)n, sizeof *client), *server = calloc((size_t)n, sizeof *server);
    if (!client || !server)
        return 1;
    for (int i = 0; i < n; i++) {
        client[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (client[i] < 0 || connect(client[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            (server[i] = accept(ls, NULL, NULL)) < 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(server[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(server[i], F_SETFL, O_NONBLOCK);
    }
    char why[128];
    send_ring *ring = send_ring_open(RING_MAX, why, sizeof why);
    if (!ring) {
        fprintf(stderr, "io_uring unavailable: %s\n", why);
        return 1;
    }
    double med[2][99];
    static const char *name[2] = {"send()", "io_uring"};
    for (int r = 0; r < repeat; r++)
        for (int mode = 0; mode < 2; mode++) {
            double us = run(server, n, rounds, size, mode ? ring : NULL);
            if (us < 0)
                return 1;
            med[mode][r] = us;
            printf("%-8s conns %d rounds %d size %zu: %.2f us of CPU per write\n", name[mode],
                   n, rounds, size, us);
            /* The receivers' buffers empty again for the next run. */
            static char sink[1 << 16];
            for (int i = 0; i < n; i++)
                while (recv(client[i], sink, sizeof sink, MSG_DONTWAIT) > 0)
                    ;
        }
    qsort(med[0], (size_t)repeat, sizeof(double), cmp_double);
    qsort(med[1], (size_t)repeat, sizeof(double), cmp_double);
    double s = med[0][repeat / 2], u = med[1][repeat / 2];
    printf("median: send() %.2f us, io_uring %.2f us per write: %.2fx\n", s, u, u / s);
    send_ring_close(ring);
    for (int i = 0; i < n; i++)
        close(client[i]), close(server[i]);
    free(client);
    free(server);
    close(ls);
    return 0;
}
