/* A byte-relay worker process: takes clients handed over by the service
 * thread, connects each to its bridge, sends the upgrade request the
 * service thread wrote, and from then on copies bytes both ways with
 * read/write on one epoll loop. The bridge answers the upgrade itself.
 *
 * Per direction at most one buffer of RELAY_CHUNK bytes, taken from a pool
 * only when the receiver's socket is full, and reading from the sender
 * pauses until it is written: the kernel's socket buffers do the queueing,
 * nothing grows per message. The only look at the bytes is framecut's, on
 * the bridge's side, so that the worker knows when a close frame of its
 * own can go to the client (the bridge went away, or the drain). */

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utlist.h>

#include "config.h"
#include "framecut.h"
#include "handoff.h"
#include "ids.h"
#include "log.h"
#include "workers.h"

/* One read, and one direction's buffer. */
#define RELAY_CHUNK 16384
/* Free buffers kept for reuse (more are freed). */
#define POOL_KEEP 1024
/* After its close (client or bridge side), a relay waits this long for
 * the other end to finish before both sockets are closed. */
#define LINGER_MS 5000
/* Descriptors a worker keeps for itself (epoll, signalfd, socketpair, log). */
#define WORKER_RESERVED_FDS 16

enum { SIDE_CLIENT = 0, SIDE_BRIDGE = 1 };
enum { IN_HANDSHAKE, IN_OPEN, IN_LINGER };

typedef struct {
    unsigned char *buf; /* NULL: nothing pending */
    uint32_t off, len;
} pending;

typedef struct relay {
    int cfd, bfd;
    uint32_t cmask, bmask; /* what epoll watches now */
    pending to_c, to_b;
    framecut down; /* the bridge's stream */
    uint8_t where;
    uint8_t b_connected;
    uint8_t c_eof, b_eof;   /* read side ended */
    uint8_t c_dead, b_dead; /* socket failed (reset) */
    uint8_t c_shut, b_shut; /* our write side shut */
    uint8_t down_done;      /* the worker closed towards the client: bridge bytes are dropped */
    uint8_t got_bridge_bytes;
    uint8_t gone; /* freed in this round of events; released after it */
    int64_t deadline;
    struct relay *prev, *next;
} relay;

static struct {
    worker_slot *self;
    const worker_config *cfg;
    int ep, sock, sigfd;
    relay *handshaking, *open, *lingering;
    relay *graveyard; /* freed relays whose events may still be in this round */
    unsigned char scratch[RELAY_CHUNK];
    unsigned char *pool[POOL_KEEP];
    int pooled;
    int draining;
    int64_t drain_start;
    unsigned long long drain_total, drain_done;
} W;

static relay **list_of(uint8_t where)
{
    return where == IN_HANDSHAKE ? &W.handshaking : where == IN_OPEN ? &W.open : &W.lingering;
}

static void move_to(relay *r, uint8_t where, int64_t deadline)
{
    DL_DELETE(*list_of(r->where), r);
    r->where = where;
    r->deadline = deadline;
    DL_APPEND(*list_of(where), r);
}

static unsigned char *pool_get(void)
{
    return W.pooled ? W.pool[--W.pooled] : malloc(RELAY_CHUNK);
}

static void pool_put(pending *p)
{
    if (!p->buf)
        return;
    if (W.pooled < POOL_KEEP)
        W.pool[W.pooled++] = p->buf;
    else
        free(p->buf);
    p->buf = NULL;
    p->off = p->len = 0;
}

static void relay_free(relay *r)
{
    if (r->cfd >= 0)
        close(r->cfd);
    if (r->bfd >= 0)
        close(r->bfd);
    pool_put(&r->to_c);
    pool_put(&r->to_b);
    DL_DELETE(*list_of(r->where), r);
    r->gone = 1;
    r->next = W.graveyard;
    W.graveyard = r;
    atomic_fetch_sub(&W.self->relays, 1);
    atomic_fetch_add(&W.self->closed, 1);
}

static void watch(relay *r, int side, uint32_t want)
{
    int fd = side == SIDE_CLIENT ? r->cfd : r->bfd;
    uint32_t *cur = side == SIDE_CLIENT ? &r->cmask : &r->bmask;
    if (fd < 0 || *cur == want)
        return;
    struct epoll_event ev = {.events = want, .data.u64 = (uint64_t)(uintptr_t)r | (uint64_t)side};
    epoll_ctl(W.ep, EPOLL_CTL_MOD, fd, &ev);
    *cur = want;
}

/* Reading from one side pauses while the other side's buffer holds bytes. */
static void rearm(relay *r)
{
    uint32_t c = 0, b = 0;
    if (!r->c_eof && !r->to_b.buf && (r->b_connected || r->b_dead))
        c |= EPOLLIN;
    if (r->to_c.buf)
        c |= EPOLLOUT;
    if (!r->b_eof && (!r->to_c.buf || r->down_done))
        b |= EPOLLIN;
    if (!r->b_connected || r->to_b.buf)
        b |= EPOLLOUT;
    watch(r, SIDE_CLIENT, c);
    watch(r, SIDE_BRIDGE, b);
}

static int write_some(int fd, const unsigned char *p, size_t len)
{
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
    if (w >= 0)
        return (int)w;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* Writes what it can now; keeps the rest in the side's buffer. */
static void forward(relay *r, int to, const unsigned char *p, size_t len)
{
    pending *q = to == SIDE_CLIENT ? &r->to_c : &r->to_b;
    int fd = to == SIDE_CLIENT ? r->cfd : r->bfd;
    uint8_t *dead = to == SIDE_CLIENT ? &r->c_dead : &r->b_dead;
    int w = 0;
    if (!q->buf) {
        w = write_some(fd, p, len);
        if (w < 0) {
            *dead = 1;
            return;
        }
        if ((size_t)w == len)
            return;
        q->buf = pool_get();
        if (!q->buf) {
            *dead = 1;
            return;
        }
        q->off = q->len = 0;
    }
    size_t rest = len - (size_t)w;
    if (q->off + q->len + rest > RELAY_CHUNK) { /* cannot happen: reading pauses */
        memmove(q->buf, q->buf + q->off, q->len);
        q->off = 0;
    }
    memcpy(q->buf + q->off + q->len, p + w, rest);
    q->len += (uint32_t)rest;
}

static void flush(relay *r, int to)
{
    pending *q = to == SIDE_CLIENT ? &r->to_c : &r->to_b;
    if (!q->buf)
        return;
    int w = write_some(to == SIDE_CLIENT ? r->cfd : r->bfd, q->buf + q->off, q->len);
    if (w < 0) {
        *(to == SIDE_CLIENT ? &r->c_dead : &r->b_dead) = 1;
        return;
    }
    q->off += (uint32_t)w;
    q->len -= (uint32_t)w;
    if (!q->len)
        pool_put(q);
}

static void from_client(relay *r)
{
    if (r->c_eof || r->to_b.buf)
        return;
    ssize_t n = read(r->cfd, W.scratch, sizeof W.scratch);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            r->c_dead = r->c_eof = 1;
        return;
    }
    if (n == 0) {
        r->c_eof = 1;
        return;
    }
    if (r->b_dead || r->bfd < 0)
        return; /* the bridge is gone: what the client still says goes nowhere */
    atomic_fetch_add_explicit(&W.self->bytes_up, (unsigned long long)n, memory_order_relaxed);
    forward(r, SIDE_BRIDGE, W.scratch, (size_t)n);
}

static void from_bridge(relay *r)
{
    if (r->b_eof || (r->to_c.buf && !r->down_done))
        return;
    ssize_t n = read(r->bfd, W.scratch, sizeof W.scratch);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            r->b_dead = r->b_eof = 1;
        return;
    }
    if (n == 0) {
        r->b_eof = 1;
        return;
    }
    r->got_bridge_bytes = 1;
    framecut_feed(&r->down, W.scratch, (size_t)n);
    if (r->down_done)
        return;
    atomic_fetch_add_explicit(&W.self->bytes_down, (unsigned long long)n, memory_order_relaxed);
    forward(r, SIDE_CLIENT, W.scratch, (size_t)n);
}

/* Before the bridge said anything, the client can still get an HTTP
 * answer: 503, as the service thread's refusals. */
static void refuse_client(relay *r, const char *why)
{
    char body[256], head[512];
    int bl = snprintf(body, sizeof body,
                      "{\"success\":false,\"code\":\"bridge_unreachable\",\"msg\":\"%s\"}", why);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      bl, body);
    if (write_some(r->cfd, (const unsigned char *)head, (size_t)hl) < 0)
        log_debug("relay: client gone before its refusal");
}

/* A close frame of the worker's own to the client, when the bridge's
 * stream stands between two frames and the bridge has not closed itself;
 * from then on the bridge's bytes are dropped. Returns 0 when it was
 * written (or queued), -1 when the stream was not at a boundary. */
static int close_client(relay *r, uint16_t code, const char *reason)
{
    if (r->down_done || r->to_c.buf || r->down.close_seen || !framecut_at_boundary(&r->down))
        return -1;
    unsigned char frame[128];
    size_t len = framecut_close_frame(frame, code, reason);
    forward(r, SIDE_CLIENT, frame, len);
    r->down_done = 1;
    return 0;
}

/* What follows from the flags the last event set: the shutdowns that pass
 * an end of stream on, the close frame for a bridge gone, freeing. Returns
 * 1 when the relay was freed. */
static int settle(relay *r, int64_t now)
{
    if (r->c_dead) {
        relay_free(r);
        return 1;
    }
    if (!r->got_bridge_bytes && (r->b_dead || r->b_eof)) {
        atomic_fetch_add(&W.self->upstream_failed, 1);
        refuse_client(r, "the bridge closed before answering the upgrade; retry shortly");
        relay_free(r);
        return 1;
    }
    if (r->where == IN_HANDSHAKE && framecut_head_done(&r->down))
        move_to(r, IN_OPEN, 0);
    if (r->b_dead && r->bfd >= 0) {
        close(r->bfd);
        r->bfd = -1;
        pool_put(&r->to_b);
    }
    /* The client finished sending: so does the bridge's side, once its
     * buffer is written. */
    if (r->c_eof && !r->to_b.buf && r->bfd >= 0 && !r->b_shut) {
        shutdown(r->bfd, SHUT_WR);
        r->b_shut = 1;
    }
    /* The bridge finished (or the worker closed towards the client): the
     * client gets a close frame when the stream allows it, then the end. */
    if ((r->b_eof || r->down_done) && !r->to_c.buf && !r->c_shut) {
        if (!r->down_done && r->down.phase == FRAMECUT_FRAMES) {
            if (close_client(r, 1001, "bridge closed") == 0) {
                atomic_fetch_add(&W.self->bridge_gone, 1);
                if (r->to_c.buf)
                    goto rearm; /* shut once the close frame is out */
            }
        }
        shutdown(r->cfd, SHUT_WR);
        r->c_shut = 1;
    }
    /* Done when nothing more can come from or go to the client, and what
     * the client said last (its close frame) reached the bridge. */
    if (r->c_eof && r->c_shut && (r->bfd < 0 || !r->to_b.buf)) {
        relay_free(r);
        return 1;
    }
    if ((r->c_eof || r->c_shut) && r->where != IN_LINGER)
        move_to(r, IN_LINGER, now + LINGER_MS);
rearm:
    rearm(r);
    return 0;
}

static void on_relay_event(relay *r, int side, uint32_t ev, int64_t now)
{
    if (r->gone)
        return;
    if (side == SIDE_BRIDGE) {
        if (!r->b_connected) {
            int err = 0;
            socklen_t el = sizeof err;
            if (getsockopt(r->bfd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
                log_warn("relay: bridge unreachable: %s", strerror(err ? err : errno));
                r->b_dead = r->b_eof = 1;
                settle(r, now);
                return;
            }
            r->b_connected = 1;
        }
        if (ev & EPOLLOUT)
            flush(r, SIDE_BRIDGE);
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
            from_bridge(r);
        if ((ev & EPOLLERR) && !(ev & EPOLLIN))
            r->b_dead = r->b_eof = 1;
    } else {
        if (ev & EPOLLOUT)
            flush(r, SIDE_CLIENT);
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
            from_client(r);
        /* Reset, or both directions shut: nothing reaches the client now. */
        if (((ev & EPOLLERR) && !(ev & EPOLLIN)) || (ev & EPOLLHUP))
            r->c_dead = 1;
    }
    settle(r, now);
}

/* A client handed over: connect to its bridge and queue the request. */
static void take(int cfd, const handover_head *h, const unsigned char *request, int64_t now)
{
    relay *r = calloc(1, sizeof *r);
    if (!r) {
        close(cfd);
        return;
    }
    r->cfd = cfd;
    r->bfd = -1;
    framecut_init(&r->down);
    r->where = IN_HANDSHAKE;
    r->deadline = now + W.cfg->connect_timeout_ms;
    DL_APPEND(W.handshaking, r);
    atomic_fetch_add(&W.self->relays, 1);
    atomic_fetch_add(&W.self->opened, 1);
    /* The client's socket comes non-blocking and without Nagle (lws set
     * both on the shared open file). */
    int one = 1;
    struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)(uintptr_t)r | SIDE_CLIENT};
    if (epoll_ctl(W.ep, EPOLL_CTL_ADD, cfd, &ev) != 0) {
        r->c_dead = 1;
        settle(r, now);
        return;
    }
    r->bfd = socket(h->bridge.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->bfd < 0) {
        log_warn("relay: no socket for the bridge: %s", strerror(errno));
        atomic_fetch_add(&W.self->upstream_failed, 1);
        refuse_client(r, "the balancer has no descriptor left for the bridge; retry shortly");
        relay_free(r);
        return;
    }
    setsockopt(r->bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* On loopback the handshake often completes within connect(): then
     * the request goes at once, without waiting for writability. */
    int rc = connect(r->bfd, (const struct sockaddr *)&h->bridge, h->bridge_len);
    if (rc == 0)
        r->b_connected = 1;
    else if (errno != EINPROGRESS) {
        log_warn("relay: bridge %s unreachable: %s", h->bridge_id, strerror(errno));
        r->b_dead = r->b_eof = 1;
        settle(r, now);
        return;
    }
    r->bmask = EPOLLOUT;
    ev.events = r->bmask;
    ev.data.u64 = (uint64_t)(uintptr_t)r | SIDE_BRIDGE;
    epoll_ctl(W.ep, EPOLL_CTL_ADD, r->bfd, &ev);
    r->to_b.buf = pool_get();
    if (!r->to_b.buf) {
        r->c_dead = 1;
        settle(r, now);
        return;
    }
    memcpy(r->to_b.buf, request, h->request_len);
    r->to_b.len = h->request_len;
    if (r->b_connected) {
        flush(r, SIDE_BRIDGE);
        settle(r, now);
    }
}

static void start_drain(int64_t now)
{
    if (W.draining)
        return;
    W.draining = 1;
    W.drain_start = now;
    relay *r;
    unsigned long long n = 0;
    DL_COUNT(W.open, r, n);
    W.drain_total = n;
    DL_COUNT(W.handshaking, r, n);
    W.drain_total += n;
    log_info("relay worker %d: draining %llu connections over %ld s", (int)getpid(),
             W.drain_total, W.cfg->drain_seconds);
}

/* Closes the share of the open relays that the time elapsed calls for
 * (evenly over --drain-seconds, so that clients do not all reconnect at
 * once); a relay whose bridge is mid-frame is tried again next round. */
static void drain_step(int64_t now)
{
    int64_t span = W.cfg->drain_seconds * 1000;
    unsigned long long due = span <= 0 || now - W.drain_start >= span
                                 ? W.drain_total
                                 : (W.drain_total * (unsigned long long)(now - W.drain_start) +
                                    (unsigned long long)span - 1) /
                                       (unsigned long long)span;
    unsigned tries = 0;
    while (W.drain_done < due && W.open && tries++ < 1024) {
        relay *r = W.open;
        if (close_client(r, 1012, "balancer restarting") == 0) {
            W.drain_done++;
            atomic_fetch_add(&W.self->drained, 1);
            settle(r, now);
        } else {
            move_to(r, IN_OPEN, 0); /* to the tail */
        }
    }
    if (W.drain_done >= due && !W.open && !W.handshaking && !W.lingering)
        exit(0);
    if (now - W.drain_start > span + LINGER_MS) {
        log_warn("relay worker %d: drain over, closing the rest", (int)getpid());
        exit(0);
    }
}

static void take_handovers(int64_t now)
{
    static unsigned char msgbuf[sizeof(handover_head) + HANDOVER_REQUEST_MAX];
    for (int i = 0; i < 64; i++) {
        int fd;
        ssize_t n = cp_fd_recv(W.sock, msgbuf, sizeof msgbuf, &fd);
        if (n < 0)
            return;
        if (n == 0) { /* the service thread's process is gone */
            if (fd >= 0)
                close(fd);
            start_drain(now);
            epoll_ctl(W.ep, EPOLL_CTL_DEL, W.sock, NULL);
            return;
        }
        atomic_fetch_add(&W.self->taken, 1);
        const handover_head *h = (const handover_head *)msgbuf;
        if (fd < 0 || (size_t)n < sizeof *h || h->request_len > HANDOVER_REQUEST_MAX ||
            (size_t)n != sizeof *h + h->request_len) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        take(fd, h, msgbuf + sizeof *h, now);
    }
}

static void expire(relay **list, int64_t now)
{
    while (*list && (*list)->deadline <= now) {
        relay *r = *list;
        if (r->where == IN_HANDSHAKE && !r->got_bridge_bytes) {
            atomic_fetch_add(&W.self->upstream_failed, 1);
            refuse_client(r, "the bridge did not answer the upgrade in time; retry shortly");
        }
        relay_free(r);
    }
}

void worker_main(worker_slot *self, int sock, const worker_config *cfg)
{
    W.self = self;
    W.cfg = cfg;
    W.sock = sock;
    /* The service thread's process gone: drain as on SIGTERM. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    W.sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    W.ep = epoll_create1(EPOLL_CLOEXEC);
    if (W.ep < 0 || W.sigfd < 0) {
        log_error("relay worker: epoll/signalfd: %s", strerror(errno));
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, sock, &ev);
    ev.data.u64 = 1;
    epoll_ctl(W.ep, EPOLL_CTL_ADD, W.sigfd, &ev);
    long fds = cp_fd_limit();
    unsigned long long room = fds < 0 ? 1000000ULL
                                      : (unsigned long long)(fds > 2 * WORKER_RESERVED_FDS
                                                                 ? (fds - WORKER_RESERVED_FDS) / 2
                                                                 : 1);
    atomic_store(&self->capacity, room);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(W.ep, evs, 256, W.draining ? 20 : 250);
        int64_t now = cp_mono_ms();
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            if (d == 0) {
                take_handovers(now);
            } else if (d == 1) {
                struct signalfd_siginfo si;
                while (read(W.sigfd, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo == SIGTERM)
                        start_drain(now);
                    else if (si.ssi_signo == SIGINT)
                        exit(0); /* stop now: the kernel closes every socket */
                }
            } else {
                relay *r = (relay *)(uintptr_t)(d & ~(uint64_t)1);
                on_relay_event(r, (int)(d & 1), evs[i].events, now);
            }
        }
        expire(&W.handshaking, now);
        expire(&W.lingering, now);
        if (W.draining)
            drain_step(now);
        while (W.graveyard) {
            relay *r = W.graveyard;
            W.graveyard = r->next;
            free(r);
        }
    }
}
