#include "workers.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "config.h"
#include "ids.h"
#include "log.h"
#include "service.h"
#include "metrics.h"
#include "registry.h"
#include "reload.h"

/* A worker that exits with an error this soon after its start could not
 * start (port, bus settings): the bridge stops instead of looping. */
#define START_FAILURE_MS 3000
/* A worker that died this soon after its start is replaced after a pause. */
#define RESPAWN_PAUSE_MS 1000
/* How long a start waits for its port to be free. */
#define PORT_WAIT_MS 5000

int workers_parse(const char *text)
{
    if (!text || !*text || strcmp(text, "auto") == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n < 1)
            n = 1;
        return n > WORKERS_MAX ? WORKERS_MAX : (int)n;
    }
    char *end;
    long n = strtol(text, &end, 10);
    if (*end || n < 1 || n > WORKERS_MAX) {
        log_error("--workers must be auto or 1 to %d, got '%s'", WORKERS_MAX, text);
        return -1;
    }
    return (int)n;
}

/* ---- the master ---------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int sock; /* the master's end of the worker's socketpair, -1: none */
    int64_t started_ms;
    int64_t respawn_at_ms; /* > 0: replace it then */
} worker_proc;

static workers_shared *shared_create(int n)
{
    workers_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        log_error("workers: mmap: %s", strerror(errno));
        return NULL;
    }
    sh->count = n;
    atomic_store(&sh->redis_healthy, -1);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    /* A worker killed while holding it must not stop the others. */
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&sh->ip_lock, &ma);
    pthread_mutexattr_destroy(&ma);
    for (int i = 0; i < n; i++) {
        sh->w[i].wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (sh->w[i].wake_fd < 0) {
            log_error("workers: eventfd: %s", strerror(errno));
            return NULL;
        }
    }
    return sh;
}

/* A dead worker's sessions no longer count anywhere. */
static void forget_worker(workers_shared *sh, int i)
{
    worker_state *w = &sh->w[i];
    atomic_store(&w->pid, 0);
    atomic_store(&w->sessions, 0);
    atomic_store(&w->channels, 0);
    atomic_store(&w->up, 0);
    atomic_store(&w->draining, 0);
    workers_ip_lock(sh);
    for (size_t k = 0; sh->ips_used && k < SHARED_IPS_MAX; k++)
        if (sh->ips[k].used)
            sh->ips[k].sessions[i] = 0;
    workers_ip_unlock(sh);
}

/* The worker's side of the fork: returns its index. */
static int become_worker(bridge *b, workers_shared *sh, worker_proc *procs, int i, int sock,
                         const sigset_t *blocked, int sfd, pid_t master)
{
    for (int k = 0; k < sh->count; k++)
        if (procs[k].sock >= 0)
            close(procs[k].sock);
    close(sfd);
    /* The master gone (killed: it has no other way to end before its
     * workers) is the bridge crashing: its registry and Redis record are
     * gone, so the workers end at once too and clients reconnect elsewhere. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != master)
        _exit(1); /* it died before prctl */
    sigprocmask(SIG_UNBLOCK, blocked, NULL);
    static char component[32];
    snprintf(component, sizeof component, "bridge w%d", i + 1);
    cp_log_init(component, cp_log_get_level());
    b->worker = i + 1;
    b->shared = sh;
    b->master_sock = sock;
    atomic_store(&sh->w[i].listening, 0);
    /* The service manager hears from the master alone (NotifyAccess=main). */
    unsetenv("NOTIFY_SOCKET");
    workers_share_port(b->cfg.port);
    return i + 1;
}

static int spawn(bridge *b, workers_shared *sh, worker_proc *procs, int i,
                 const sigset_t *blocked, int sfd, int *is_child)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        log_error("workers: socketpair: %s", strerror(errno));
        return -1;
    }
    fflush(stderr);
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log_error("workers: fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        *is_child = 1;
        return become_worker(b, sh, procs, i, sv[1], blocked, sfd, master);
    }
    close(sv[1]);
    procs[i].pid = pid;
    procs[i].sock = sv[0];
    procs[i].started_ms = cp_mono_ms();
    procs[i].respawn_at_ms = 0;
    atomic_store(&sh->w[i].pid, (int)pid);
    log_info("worker w%d started (pid %d)", i + 1, (int)pid);
    return 0;
}

/* The bridge can take sessions: every running worker is connected (the
 * kernel spreads new connections over all of them). */
static int all_up(workers_shared *sh)
{
    int running = 0;
    for (int i = 0; i < sh->count; i++) {
        if (!atomic_load(&sh->w[i].pid))
            continue;
        running++;
        if (!atomic_load(&sh->w[i].up))
            return 0;
    }
    return running > 0;
}

/* Reads what a worker sent about its sessions. */
static void read_worker(registry *reg, worker_proc *p, int i)
{
    char msg[REGISTRY_MESSAGE_MAX];
    for (;;) {
        ssize_t n = recv(p->sock, msg, sizeof msg, MSG_DONTWAIT);
        if (n <= 0)
            return;
        if (registry_worker_message(reg, i + 1, msg, (size_t)n) != 0 && reg)
            log_warn("workers: malformed session message from w%d", i + 1);
    }
}

static void signal_all(worker_proc *procs, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (procs[i].pid > 0)
            kill(procs[i].pid, sig);
}

/* The port must be free: SO_REUSEPORT would let the workers share it with
 * another bridge started on it by mistake. */
static int port_free(const bridge_config *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    const char *host = *c->host && strcmp(c->host, "0.0.0.0") != 0 ? c->host : NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return 1; /* lws will say what is wrong */
    int ok = 1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 && errno == EADDRINUSE)
            ok = 0;
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

static unsigned sessions_sum(const workers_shared *sh)
{
    unsigned n = 0;
    for (int i = 0; i < sh->count; i++)
        n += atomic_load(&sh->w[i].sessions);
    return n;
}

int workers_run(bridge *b, int n, registry *(*start_registry)(bridge *), int *exit_code)
{
    *exit_code = 1;
    /* The workers of a killed predecessor end just after it (their death
     * signal), still holding the port for a moment: a restart right after
     * a crash waits for them rather than fail. */
    int64_t give_up = cp_mono_ms() + PORT_WAIT_MS;
    int free_now = port_free(&b->cfg);
    if (!free_now)
        log_warn("%s is in use: waiting up to %d s for it (a previous instance still ending?)",
                 b->cfg.listen, PORT_WAIT_MS / 1000);
    while (!free_now && cp_mono_ms() < give_up) {
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL);
        free_now = port_free(&b->cfg);
    }
    if (!free_now) {
        log_error("cannot listen on %s: the address is in use", b->cfg.listen);
        return -1;
    }
    workers_shared *sh = shared_create(n);
    if (!sh)
        return -1;
    static worker_proc procs[WORKERS_MAX];
    for (int i = 0; i < n; i++)
        procs[i] = (worker_proc){.pid = 0, .sock = -1};
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGHUP);
    sigaddset(&blocked, SIGCHLD);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    int sfd = signalfd(-1, &blocked, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        log_error("workers: signalfd: %s", strerror(errno));
        return -1;
    }
    /* The descriptor limit is per process: each worker has all of it. */
    long fds = cp_fd_limit();
    log_info("bridge %s: master (pid %d) starting %d workers on %s, descriptor limit %ld per "
             "worker",
             b->cfg.bridge_id, (int)getpid(), n, b->cfg.listen, fds);
    if (fds > 0 && (fds - 64) * n < b->cfg.max_connections)
        log_warn("the descriptor limit bounds the bridge below --max-connections %ld: about %ld "
                 "sessions (raise the hard limit)",
                 b->cfg.max_connections, (fds - 64) * n);
    int is_child = 0;
    for (int i = 0; i < n; i++) {
        int rc = spawn(b, sh, procs, i, &blocked, sfd, &is_child);
        if (is_child)
            return rc;
        if (rc != 0) {
            signal_all(procs, n, SIGINT);
            n = i; /* reap what started */
            break;
        }
    }
    /* No thread in the master (the registry is served from this loop):
     * it forks replacements, and a fork copies only the forking thread. */
    registry *reg = sh->count == n ? start_registry(b) : NULL;
    int stopping = sh->count == n ? 0 : 2;
    int64_t mark_draining_by = 0; /* > 0: SIGTERM came, Redis not told yet */
    int ready_told = 0, stopping_told = 0; /* the service manager's READY=1, STOPPING=1 */
    if (!stopping && *b->cfg.redis_url && !reg) {
        *exit_code = 2;
        stopping = 2;
        signal_all(procs, n, SIGINT);
    } else if (!stopping) {
        *exit_code = 0;
    }
    for (;;) {
        int running = 0;
        struct pollfd pf[WORKERS_MAX + 1];
        int map[WORKERS_MAX + 1];
        int np = 0;
        pf[np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < n; i++) {
            if (procs[i].pid > 0)
                running++;
            if (procs[i].sock >= 0) {
                map[np] = i;
                pf[np++] = (struct pollfd){.fd = procs[i].sock, .events = POLLIN};
            }
        }
        if (stopping && !running)
            break;
        if (!ready_told && !stopping) {
            int listening = 0;
            for (int i = 0; i < n; i++)
                listening += atomic_load(&sh->w[i].listening) != 0;
            if (listening == n) {
                cp_service_ready(); /* every worker has its port open */
                ready_told = 1;
            }
        }
        poll(pf, (nfds_t)np, ready_told ? 250 : 20);
        for (int k = 1; k < np; k++)
            if (pf[k].revents & POLLIN)
                read_worker(reg, &procs[map[k]], map[k]);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            int sig = (int)si.ssi_signo;
            if ((sig == SIGTERM || sig == SIGINT) && !stopping_told) {
                cp_service_stopping();
                stopping_told = 1;
            }
            if (sig == SIGTERM && !stopping) {
                stopping = 1;
                log_info("SIGTERM: draining every worker");
                /* New clients are refused from now; Redis says draining once
                 * every worker told its sessions (as with one process). */
                atomic_store(&sh->drain_total, sessions_sum(sh));
                atomic_store(&sh->draining, 1);
                mark_draining_by = cp_mono_ms() + 1000;
                signal_all(procs, n, SIGTERM);
            } else if (sig == SIGTERM || sig == SIGINT) {
                stopping = 2;
                atomic_store(&sh->draining, 2);
                registry_set_draining(reg);
                signal_all(procs, n, sig);
            } else if (sig == SIGHUP) {
                log_info("SIGHUP: reloading every worker");
                cp_reload_log_level(b->cfg.log_level_file);
                signal_all(procs, n, SIGHUP);
            }
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            int i = 0;
            while (i < n && procs[i].pid != pid)
                i++;
            if (i == n)
                continue;
            worker_proc *p = &procs[i];
            /* What it said before it died comes before its removal. */
            read_worker(reg, p, i);
            registry_worker_gone(reg, i + 1);
            close(p->sock);
            p->sock = -1;
            p->pid = 0;
            forget_worker(sh, i);
            int64_t lived = cp_mono_ms() - p->started_ms;
            if (WIFSIGNALED(status))
                log_error("worker w%d (pid %d) was killed by signal %d%s", i + 1, (int)pid,
                          WTERMSIG(status), stopping ? "" : "; replacing it");
            else if (!stopping || WEXITSTATUS(status) != 0)
                log_warn("worker w%d (pid %d) exited with status %d", i + 1, (int)pid,
                         WEXITSTATUS(status));
            else
                log_info("worker w%d (pid %d) stopped", i + 1, (int)pid);
            if (stopping)
                continue;
            if (WIFEXITED(status) && WEXITSTATUS(status) != 0 && lived < START_FAILURE_MS) {
                log_error("worker w%d could not start: stopping the bridge", i + 1);
                *exit_code = WEXITSTATUS(status);
                stopping = 2;
                signal_all(procs, n, SIGINT);
                continue;
            }
            atomic_fetch_add(&sh->w[i].restarts, 1);
            p->respawn_at_ms = cp_mono_ms() + (lived < RESPAWN_PAUSE_MS ? RESPAWN_PAUSE_MS : 0);
        }
        int64_t now = cp_mono_ms();
        for (int i = 0; i < n && !stopping; i++) {
            if (procs[i].pid || !procs[i].respawn_at_ms || now < procs[i].respawn_at_ms)
                continue;
            int rc = spawn(b, sh, procs, i, &blocked, sfd, &is_child);
            if (is_child)
                return rc;
            if (rc != 0)
                procs[i].respawn_at_ms = now + RESPAWN_PAUSE_MS;
        }
        if (mark_draining_by) {
            int started = 1;
            for (int i = 0; i < n; i++)
                if (procs[i].pid > 0 && !atomic_load(&sh->w[i].draining))
                    started = 0;
            if (started || cp_mono_ms() >= mark_draining_by) {
                registry_set_draining(reg);
                mark_draining_by = 0;
            }
        }
        registry_set_connections(reg, sessions_sum(sh));
        registry_set_ready(reg, all_up(sh));
        registry_service(reg);
        if (reg)
            atomic_store(&sh->redis_healthy, registry_healthy(reg));
    }
    registry_stop(reg);
    close(sfd);
    log_info("stopped");
    return -1;
}

/* ---- the workers --------------------------------------------------------- */

void workers_listening(bridge *b)
{
    if (b->shared)
        atomic_store(&b->shared->w[b->worker - 1].listening, 1);
}

void workers_publish(bridge *b, int up, const cp_buf *metrics)
{
    if (!b->shared)
        return;
    worker_state *w = &b->shared->w[b->worker - 1];
    atomic_store(&w->up, up);
    atomic_store(&w->channels, b->channel_count);
    if (!metrics || metrics->failed)
        return;
    size_t len = metrics->len < WORKER_SNAPSHOT_MAX ? metrics->len : WORKER_SNAPSHOT_MAX;
    unsigned seq = atomic_load(&w->snap_seq);
    atomic_store(&w->snap_seq, seq + 1);
    atomic_thread_fence(memory_order_release);
    memcpy(w->snapshot, metrics->data, len);
    atomic_store(&w->snap_len, (unsigned)len);
    atomic_store(&w->snap_seq, seq + 2);
    atomic_fetch_add(&w->pub_gen, 1);
}

int workers_wake_fd(bridge *b) { return b->shared ? b->shared->w[b->worker - 1].wake_fd : -1; }

void workers_refresh_others(bridge *b)
{
    workers_shared *sh = b->shared;
    unsigned gen[WORKERS_MAX];
    for (int i = 0; i < sh->count; i++) {
        gen[i] = atomic_load(&sh->w[i].pub_gen);
        if (i != b->worker - 1 && atomic_load(&sh->w[i].pid)) {
            uint64_t one = 1;
            if (write(sh->w[i].wake_fd, &one, sizeof one) < 0)
                continue; /* the counter is full: a wake-up is pending anyway */
        }
    }
    int64_t deadline = cp_mono_ms() + WORKERS_FRESH_WAIT_MS;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < sh->count; i++)
            if (i != b->worker - 1 && atomic_load(&sh->w[i].pid) &&
                atomic_load(&sh->w[i].pub_gen) == gen[i])
                pending = 1;
        if (!pending || cp_mono_ms() >= deadline)
            return;
        usleep(100);
    }
}

void workers_session_count(void *ud, unsigned n)
{
    bridge *b = ud;
    if (b->shared)
        atomic_store(&b->shared->w[b->worker - 1].sessions, n);
}

unsigned workers_sessions_total(const bridge *b)
{
    return b->shared ? sessions_sum(b->shared) : b->session_count;
}

void workers_health(const bridge *b, int *up, int *running, unsigned *channels)
{
    *up = *running = 0;
    *channels = 0;
    for (int i = 0; b->shared && i < b->shared->count; i++) {
        const worker_state *w = &b->shared->w[i];
        if (!atomic_load(&w->pid))
            continue;
        (*running)++;
        *up += atomic_load(&w->up) != 0;
        *channels += atomic_load(&w->channels);
    }
}

/* Copies worker i's snapshot; 0 when it was being rewritten throughout. */
static size_t read_snapshot(const worker_state *w, char *out)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        unsigned s1 = atomic_load(&w->snap_seq);
        if (s1 & 1)
            continue;
        unsigned len = atomic_load(&w->snap_len);
        if (len > WORKER_SNAPSHOT_MAX)
            return 0;
        memcpy(out, w->snapshot, len);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load(&w->snap_seq) == s1)
            return len;
    }
    return 0;
}

static cp_merge_mode merge_mode(const char *name, size_t len)
{
#define IS(s) (len == sizeof(s) - 1 && memcmp(name, s, len) == 0)
    /* history_healthy: a worker that made no read yet says 0. */
    if (IS("cloudpush_bridge_uptime_seconds") || IS("cloudpush_bridge_draining") ||
        IS("cloudpush_build_info") || IS("cloudpush_bridge_history_healthy"))
        return CP_MERGE_MAX;
    if (IS("cloudpush_bridge_mqtt_connected") || IS("cloudpush_sequencer_mqtt_connected") ||
        IS("process_start_time_seconds"))
        return CP_MERGE_MIN;
#undef IS
    return CP_MERGE_SUM;
}

void workers_render_metrics(bridge *b, const cp_buf *local, cp_buf *out)
{
    workers_shared *sh = b->shared;
    const char *texts[WORKERS_MAX];
    size_t lens[WORKERS_MAX];
    char *copies[WORKERS_MAX];
    int nt = 0;
    for (int i = 0; i < sh->count; i++) {
        copies[i] = NULL;
        if (i == b->worker - 1) {
            texts[nt] = local->data;
            lens[nt++] = local->len;
            continue;
        }
        if (!atomic_load(&sh->w[i].pid) || !(copies[i] = malloc(WORKER_SNAPSHOT_MAX)))
            continue;
        size_t len = read_snapshot(&sh->w[i], copies[i]);
        if (len) {
            texts[nt] = copies[i];
            lens[nt++] = len;
        }
    }
    if (cp_metrics_merge(out, texts, lens, nt, merge_mode) != 0)
        out->failed = 1;
    for (int i = 0; i < sh->count; i++)
        free(copies[i]);
    char labels[32];
    cp_metric_simple(out, "cloudpush_bridge_workers", "gauge",
                     "Worker processes of this bridge (--workers).", sh->count);
    cp_metric_family(out, "cloudpush_bridge_worker_connections", "gauge",
                     "Open sessions per worker process (their sum is "
                     "cloudpush_bridge_connections).");
    for (int i = 0; i < sh->count; i++) {
        snprintf(labels, sizeof labels, "worker=\"%d\"", i + 1);
        cp_metric_sample(out, "cloudpush_bridge_worker_connections", labels,
                         atomic_load(&sh->w[i].sessions));
    }
    cp_metric_family(out, "cloudpush_bridge_worker_up", "gauge",
                     "1 while the worker runs with its bus connection (and sequencer) up.");
    for (int i = 0; i < sh->count; i++) {
        snprintf(labels, sizeof labels, "worker=\"%d\"", i + 1);
        cp_metric_sample(out, "cloudpush_bridge_worker_up", labels,
                         atomic_load(&sh->w[i].pid) && atomic_load(&sh->w[i].up));
    }
    cp_metric_family(out, "cloudpush_bridge_worker_restarts_total", "counter",
                     "Workers replaced by the master after they died.");
    for (int i = 0; i < sh->count; i++) {
        snprintf(labels, sizeof labels, "worker=\"%d\"", i + 1);
        cp_metric_sample(out, "cloudpush_bridge_worker_restarts_total", labels,
                         (double)atomic_load(&sh->w[i].restarts));
    }
}
