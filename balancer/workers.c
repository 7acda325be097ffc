/* The byte relay's worker processes, seen from the service thread's
 * process: starting them, choosing one, their summed figures, stopping. */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ids.h"
#include "log.h"
#include "workers.h"

/* Descriptors a worker keeps for itself (see worker.c). */
#define WORKER_RESERVED_FDS 16

workers *workers_start(int n, const worker_config *cfg)
{
    if (n < 1 || n > WORKERS_MAX) {
        log_error("--relay-workers must be 1..%d", WORKERS_MAX);
        return NULL;
    }
    workers *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) {
        log_error("relay workers: mmap: %s", strerror(errno));
        return NULL;
    }
    memset(w, 0, sizeof *w);
    w->drain_seconds = cfg->drain_seconds;
    long fds = cp_fd_limit();
    unsigned long long room =
        fds < 0 ? 1000000ULL
                : (unsigned long long)(fds > 2 * WORKER_RESERVED_FDS ? (fds - WORKER_RESERVED_FDS) / 2
                                                                   : 1);
    for (int i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
            log_error("relay workers: socketpair: %s", strerror(errno));
            return NULL;
        }
        atomic_store(&w->slot[i].capacity, room);
        pid_t pid = fork();
        if (pid < 0) {
            log_error("relay workers: fork: %s", strerror(errno));
            return NULL;
        }
        if (pid == 0) {
            close(sv[0]);
            for (int j = 0; j < i; j++)
                close(w->slot[j].sock);
            worker_main(&w->slot[i], sv[1], cfg);
            _exit(0);
        }
        close(sv[1]);
        fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
        w->slot[i].sock = sv[0];
        w->slot[i].pid = pid;
        w->count = i + 1;
    }
    return w;
}

int workers_pick(workers *w)
{
    int best = -1;
    unsigned long long best_load = 0;
    for (int i = 0; i < w->count; i++) {
        worker_slot *s = &w->slot[i];
        if (s->pid <= 0)
            continue;
        unsigned long long backlog = atomic_load(&s->handed) - atomic_load(&s->taken);
        unsigned long long load = atomic_load(&s->relays) + backlog;
        if (backlog >= WORKER_BACKLOG_MAX || load >= atomic_load(&s->capacity))
            continue;
        if (best < 0 || load < best_load) {
            best = i;
            best_load = load;
        }
    }
    return best;
}

unsigned long long workers_relays(const workers *w)
{
    unsigned long long n = 0;
    for (int i = 0; w && i < w->count; i++)
        n += atomic_load(&w->slot[i].relays);
    return n;
}

unsigned long long workers_capacity(const workers *w)
{
    unsigned long long n = 0;
    for (int i = 0; w && i < w->count; i++)
        if (w->slot[i].pid > 0)
            n += atomic_load(&w->slot[i].capacity);
    return n;
}

static void wait_all(workers *w, long ms, int (*stop_now)(void *), void *ud)
{
    int64_t until = cp_mono_ms() + ms;
    int told_now = 0;
    for (;;) {
        if (stop_now && !told_now && stop_now(ud)) {
            log_info("stopping now: the relay workers close their connections");
            for (int i = 0; i < w->count; i++)
                if (w->slot[i].pid > 0)
                    kill(w->slot[i].pid, SIGINT);
            told_now = 1;
        }
        int left = 0;
        for (int i = 0; i < w->count; i++) {
            worker_slot *s = &w->slot[i];
            if (s->pid <= 0)
                continue;
            if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
                s->pid = 0;
            else
                left++;
        }
        if (!left)
            return;
        if (cp_mono_ms() >= until)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < w->count; i++) {
        worker_slot *s = &w->slot[i];
        if (s->pid > 0) {
            log_warn("relay worker %d did not finish: killed", (int)s->pid);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
        }
    }
}

void workers_drain_and_wait(workers *w, int (*stop_now)(void *), void *ud)
{
    if (!w)
        return;
    for (int i = 0; i < w->count; i++) {
        if (w->slot[i].pid > 0)
            kill(w->slot[i].pid, SIGTERM);
        close(w->slot[i].sock);
    }
    /* A worker ends its drain drain_seconds + 5 s after it began. */
    wait_all(w, w->drain_seconds * 1000 + 8000, stop_now, ud);
}

void workers_stop_now(workers *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->count; i++) {
        if (w->slot[i].pid > 0)
            kill(w->slot[i].pid, SIGINT);
        close(w->slot[i].sock);
    }
    wait_all(w, 3000, NULL, NULL);
}
