/* Hand-over at accept: a client placed on a bridge of this host goes to it
 * before libwebsockets reads a byte of its request.
 *
 * lws offers every accepted socket to LWS_CALLBACK_FILTER_NETWORK_CONNECTION
 * before it allocates anything for it, and closes it (a plain close(), no
 * shutdown) when the callback says no. There the balancer peeks at the
 * socket: when it holds a whole, plain WebSocket upgrade (upgradehead.h),
 * the head is read off and sent with the socket to the chosen bridge's
 * hand-over socket (common/handoff.h), which parses it as if it had
 * accepted the client itself. What the balancer would have spent parsing
 * the request, checking it, writing a new one and taking the socket back
 * from lws (handover.c) is saved, and the bridge sees the client's own
 * request and address.
 *
 * A client whose bytes are not there yet at accept (the connection is
 * accepted as soon as the TCP handshake ends) waits here for its first
 * bytes, at most WAIT_MS, in a waiting room of its own: a second epoll set
 * watched by the loop, one-shot registrations, so a socket that leaves
 * needs no removal. Anything else (no upgrade, a head in pieces, a TLS
 * listener, a balancer with token or Origin rules of its own, a bridge
 * elsewhere) is served by lws as before. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "handoff.h"
#include "ids.h"
#include "log.h"
#include "upgradehead.h"

/* The longest request target handed over unread: the relay's query rule
 * (relay.c) is then certainly met; a longer one goes through lws. */
#define TARGET_MAX 1900
/* Sockets waiting for their first bytes, at most, and for how long; then
 * (or when the room is full) lws takes them as usual. */
#define WAIT_MAX 1024
#define WAIT_MS 1000

typedef struct {
    int fd; /* -1: free */
    int64_t since_ms;
} waiter;

static struct {
    balancer *b;
    struct lws_vhost *vhost; /* the listener's: where lws takes clients back */
    int ep;                  /* the waiting room's epoll set; -1 before first use */
    int broken;              /* no epoll set could be made: lws reads every request */
    ev_io ready;
    ev_timer tick;
    waiter slot[WAIT_MAX];
    int free_slots[WAIT_MAX];
    int nfree, waiting;
} room = {.ep = -1};

static char head[CP_HANDOFF_REQUEST_MAX]; /* the service thread's */

/* The balancer checks nothing here that the bridge does not check itself. */
static int eligible(const balancer *b)
{
    return b->handoff_dir[0] && !b->server.jwt && !b->cfg.allowed_origins[0] &&
           !b->cfg.server.tls_cert[0];
}

/* Hands fd (n bytes peeked into head) to a local bridge. Returns 1 when
 * the caller is done with fd (the bridge has it, or lws took a duplicate
 * back with the head), 0 when lws should serve fd as usual. */
static int hand(balancer *b, int fd, ssize_t n)
{
    size_t len;
    if (n <= 0 || !upgrade_head_scan(head, (size_t)n, TARGET_MAX, &len))
        return 0;
    placement *p = snapshot_placement(b);
    const placement_bridge *t = placement_pick(p, cp_random_u64());
    if (!t)
        return 0; /* lws answers no_bridge */
    int local = handover_bridge_socket(b, t->info.id);
    if (local < 0) {
        placement_unpick(p, t); /* relayed the usual way, picked again there */
        return 0;
    }
    /* The head leaves the socket and travels with it: the bridge reads it
     * from the message, then the rest from the socket. */
    if (recv(fd, head, len, MSG_DONTWAIT) != (ssize_t)len) {
        close(local);
        return 1; /* the connection broke */
    }
    int rc = cp_fd_send(local, fd, head, len);
    close(local);
    if (rc == 0) {
        b->n.handed_to_bridge++;
        b->n.handed_at_accept++;
        return 1;
    }
    /* The bridge's socket is full or gone: lws takes the client after all,
     * with the head it would have read, and relays it the usual way. */
    b->n.handover_failed++;
    placement_unpick(p, t);
    int keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (keep >= 0 && !lws_adopt_socket_vhost_readbuf(room.vhost, keep, head, len))
        log_debug("hand-over at accept failed, and lws could not take the client back");
    return 1;
}

static void leave(int i)
{
    room.slot[i].fd = -1;
    room.free_slots[room.nfree++] = i;
    if (--room.waiting == 0)
        ev_timer_stop(room.b->server.loop.ev, &room.tick); /* no wake-ups when idle */
}

/* A waiting socket lws serves after all: it reads the request itself. */
static void to_lws(int fd)
{
    if (!lws_adopt_socket_vhost(room.vhost, fd))
        log_debug("lws could not take a waiting client (it closed it)");
}

static void on_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    struct epoll_event ev[64];
    int n = epoll_wait(room.ep, ev, 64, 0);
    for (int k = 0; k < n; k++) {
        int i = (int)ev[k].data.u32;
        int fd = room.slot[i].fd;
        if (fd < 0)
            continue;
        leave(i); /* one-shot: its registration is spent */
            ssize_t got = eligible(room.b) ? recv(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT) : -1;
        if (got == 0) {
            close(fd); /* the client left before a word */
            continue;
        }
        if (hand(room.b, fd, got))
            close(fd);
        else
            to_lws(fd);
    }
}

/* Twice a second: who waited WAIT_MS goes to lws (its own timeouts then
 * apply). A scan of the room, not per connection. */
static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    int64_t now = cp_mono_ms();
    for (int i = 0; i < WAIT_MAX && room.waiting; i++) {
        int fd = room.slot[i].fd;
        if (fd < 0 || now - room.slot[i].since_ms < WAIT_MS)
            continue;
        epoll_ctl(room.ep, EPOLL_CTL_DEL, fd, NULL);
        leave(i);
        to_lws(fd);
    }
}

static int open_room(balancer *b)
{
    room.ep = epoll_create1(EPOLL_CLOEXEC);
    if (room.ep < 0) {
        log_warn("hand-over at accept: no epoll set (%s): lws reads every request",
                 strerror(errno));
        return -1;
    }
    for (int i = 0; i < WAIT_MAX; i++) {
        room.slot[i].fd = -1;
        room.free_slots[i] = WAIT_MAX - 1 - i;
    }
    room.nfree = WAIT_MAX;
    ev_io_init(&room.ready, on_ready, room.ep, EV_READ);
    ev_io_start(b->server.loop.ev, &room.ready);
    ev_timer_init(&room.tick, on_tick, WAIT_MS / 2000.0, WAIT_MS / 2000.0);
    return 0;
}

/* Keeps fd until its first bytes arrive. Returns 1 when it waits here (a
 * duplicate: lws closes its own), 0 when the room is full. */
static int wait_first_bytes(int fd)
{
    if (!room.nfree)
        return 0;
    int keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (keep < 0)
        return 0;
    int i = room.free_slots[room.nfree - 1];
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(room.ep, EPOLL_CTL_ADD, keep, &ev) != 0) {
        close(keep);
        return 0;
    }
    room.nfree--;
    if (room.waiting++ == 0)
        ev_timer_start(room.b->server.loop.ev, &room.tick);
    room.slot[i].fd = keep;
    room.slot[i].since_ms = cp_mono_ms();
    return 1;
}

int accept_handover(balancer *b, struct lws *listener, int fd)
{
    if (!eligible(b) || room.broken)
        return 0;
    if (room.ep < 0) {
        room.b = b;
        room.vhost = lws_get_vhost(listener);
        if (open_room(b) != 0) {
            room.broken = 1;
            return 0;
        }
    }
    ssize_t n = recv(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return wait_first_bytes(fd);
    return hand(b, fd, n);
}

void accept_close_waiting(void)
{
    if (room.ep < 0)
        return;
    ev_io_stop(room.b->server.loop.ev, &room.ready);
    for (int i = 0; i < WAIT_MAX && room.waiting; i++)
        if (room.slot[i].fd >= 0) {
            close(room.slot[i].fd);
            leave(i);
        }
    close(room.ep);
    room.ep = -1;
}
