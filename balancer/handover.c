/* The service thread's hand-overs: once an upgrade passed the balancer's
 * checks, write the request the bridge will get, take the client's socket
 * away from libwebsockets, and send both either to the bridge itself, when
 * it waits for hand-overs on this host (common/handoff.h: the balancer is
 * then out of the path), or to a byte-relay worker process (workers.h).
 *
 * Taking the socket away: lws 4.1 has no call that lets go of a socket
 * without closing it, and its close would shut the connection down
 * (shutdown(SHUT_WR) sends the client a FIN). So the socket is duplicated
 * for the worker, removed from the loop's epoll set (libev never removes
 * a descriptor itself: it relies on close(), which would not happen while
 * the worker holds the socket, and its events would keep coming), and
 * the descriptor number lws knows is pointed at a fresh unconnected
 * socket, which lws then closes as it likes. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "balancer.h"
#include "config.h"
#include "handoff.h"
#include "ids.h"
#include "log.h"
#include "lwshttp.h"

typedef struct {
    int fd;
    uint32_t len;
    unsigned char *msg;
} queued;

/* Hand-overs a worker's socket could not take yet, in order. */
typedef struct {
    queued *ring; /* WORKER_BACKLOG_MAX entries */
    unsigned head, count;
    ev_io writable;
    int index;
} outbox;

static outbox boxes[WORKERS_MAX];
static balancer *the_b;

/* The one epoll set of this process: libev's (the workers are other
 * processes; nothing else here uses epoll). */
static int find_loop_epoll(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int found = -1, count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[300], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[eventpoll]") == 0) {
            found = atoi(e->d_name);
            count++;
        }
    }
    closedir(d);
    return count == 1 ? found : -1;
}

/* A worker that cannot be reached (it died: its clients lost their
 * connections and reconnect) gets no more clients. */
static void worker_lost(worker_slot *s)
{
    if (s->pid <= 0)
        return;
    log_error("relay worker %d unreachable (%s): no more clients for it", (int)s->pid,
              strerror(errno));
    s->pid = 0;
}

static void flush_box(outbox *o)
{
    worker_slot *s = &the_b->workers->slot[o->index];
    while (o->count) {
        queued *q = &o->ring[o->head];
        int rc = cp_fd_send(s->sock, q->fd, q->msg, q->len);
        if (rc == 1)
            break;
        if (rc < 0) {
            worker_lost(s);
            atomic_fetch_add(&s->taken, 1); /* not coming: out of the backlog */
        }
        close(q->fd);
        free(q->msg);
        o->head = (o->head + 1) % WORKER_BACKLOG_MAX;
        o->count--;
    }
    if (o->count)
        ev_io_start(the_b->server.loop.ev, &o->writable);
    else
        ev_io_stop(the_b->server.loop.ev, &o->writable);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    flush_box((outbox *)w->data);
}

int handover_init(balancer *b)
{
    b->loop_epoll = find_loop_epoll();
    if (b->loop_epoll < 0) {
        log_error("hand-over: cannot find the event loop's epoll set; relaying in the service "
                  "thread instead");
        return -1;
    }
    the_b = b;
    for (int i = 0; b->workers && i < b->workers->count; i++) {
        outbox *o = &boxes[i];
        o->ring = calloc(WORKER_BACKLOG_MAX, sizeof *o->ring);
        if (!o->ring)
            return -1;
        o->index = i;
        ev_io_init(&o->writable, on_writable, b->workers->slot[i].sock, EV_WRITE);
        o->writable.data = o;
    }
    return 0;
}

int handover_enabled(const balancer *b)
{
    return b->loop_epoll >= 0 && (b->workers || b->handoff_dir[0]);
}

int handover_bridge_socket(balancer *b, const char *id)
{
    int64_t now = cp_mono_ms();
    if (now - b->handoff_checked_ms >= 1000) {
        /* Checked again now and then: the bridges create the directory. */
        char err[300];
        int ok = cp_handoff_dir_check(b->handoff_dir, 0, err, sizeof err) == 0 ? 1
                 : errno == ENOENT                                          ? 0
                                                                            : -1;
        if (ok < 0 && b->handoff_dir_ok >= 0)
            log_warn("hand-over to local bridges off: %s", err);
        else if (ok > 0 && b->handoff_dir_ok <= 0)
            log_info("bridges on this host take their clients from %s", b->handoff_dir);
        b->handoff_dir_ok = ok;
        b->handoff_checked_ms = now;
    }
    struct sockaddr_un sa;
    socklen_t sl;
    if (b->handoff_dir_ok <= 0 || cp_handoff_addr(b->handoff_dir, id, &sa, &sl) != 0)
        return -1;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s >= 0 && connect(s, (struct sockaddr *)&sa, sl) != 0) {
        close(s);
        s = -1;
    }
    return s;
}

/* Appends the strings (up to a NULL) to out. Returns -1 when out is full. */
static int put(char *out, size_t cap, size_t *at, ...)
{
    va_list ap;
    va_start(ap, at);
    const char *p;
    while ((p = va_arg(ap, const char *))) {
        size_t n = strlen(p);
        if (n >= cap - *at) {
            va_end(ap);
            return -1;
        }
        memcpy(out + *at, p, n);
        *at += n;
    }
    va_end(ap);
    out[*at] = '\0';
    return 0;
}

/* The header h of the client's request, as "Name: value\r\n" (nothing when
 * absent). */
static int copy_header(struct lws *wsi, enum lws_token_indexes h, const char *name, char *out,
                       size_t cap, size_t *at)
{
    static char v[4096];
    if (lws_hdr_total_length(wsi, h) <= 0)
        return 0;
    if (lws_hdr_copy(wsi, v, sizeof v, h) < 0)
        return -1;
    return put(out, cap, at, name, ": ", v, "\r\n", (char *)NULL);
}

/* The upgrade request the bridge gets: the client's path's query, key,
 * version, subprotocols, extensions and Origin, and its address. */
static int build_request(struct lws *wsi, const placement_bridge *t, const char *client_ip,
                         char *out, size_t cap, size_t *len)
{
    static char args[3 * CP_LWS_MAX_QUERY + 1];
    if (relay_upstream_query(wsi, args, sizeof args) < 0)
        return -1;
    const char *upath = t->url.path_at ? t->info.url + t->url.path_at : "";
    int v6 = strchr(t->url.host, ':') != NULL;
    char port[16];
    snprintf(port, sizeof port, ":%d", t->url.port);
    size_t at = 0;
    if (put(out, cap, &at, "GET /", upath, args[0] ? "?" : "", args, " HTTP/1.1\r\nHost: ",
            v6 ? "[" : "", t->url.host, v6 ? "]" : "", port, "\r\n",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            (char *)NULL) ||
        copy_header(wsi, WSI_TOKEN_KEY, "Sec-WebSocket-Key", out, cap, &at) ||
        copy_header(wsi, WSI_TOKEN_PROTOCOL, "Sec-WebSocket-Protocol", out, cap, &at) ||
        copy_header(wsi, WSI_TOKEN_EXTENSIONS, "Sec-WebSocket-Extensions", out, cap, &at) ||
        copy_header(wsi, WSI_TOKEN_ORIGIN, "Origin", out, cap, &at) ||
        (client_ip[0] &&
         put(out, cap, &at, "X-Forwarded-For: ", client_ip, "\r\n", (char *)NULL)) ||
        put(out, cap, &at, "\r\n", (char *)NULL))
        return -1;
    *len = at;
    return 0;
}

static int to_sockaddr(const placement_bridge *t, struct sockaddr_storage *ss, socklen_t *sl)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, t->info.addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)t->url.port);
        *sl = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, t->info.addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)t->url.port);
        *sl = sizeof *v6;
        return 0;
    }
    return -1;
}

/* Takes the client's socket from lws (see the top of this file). Returns
 * the worker's descriptor for it, or -1. */
static int detach(balancer *b, struct lws *wsi)
{
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0)
        return -1;
    int keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    int dummy = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (keep < 0 || dummy < 0) {
        if (keep >= 0)
            close(keep);
        if (dummy >= 0)
            close(dummy);
        return -1;
    }
    epoll_ctl(b->loop_epoll, EPOLL_CTL_DEL, fd, NULL);
    dup3(dummy, fd, O_CLOEXEC);
    close(dummy);
    return keep;
}

/* Sends the client to the bridge's hand-over socket s (closed here).
 * Returns 0 when the bridge has it. */
static int to_bridge(balancer *b, int s, int fd, const char *request, size_t len)
{
    int rc = cp_fd_send(s, fd, request, len);
    close(s);
    if (rc == 0) {
        close(fd);
        b->n.handed_to_bridge++;
        return 0;
    }
    b->n.handover_failed++;
    log_debug("hand-over to a local bridge failed (%s): relaying",
              rc > 0 ? "its socket is full" : strerror(errno));
    return -1;
}

int handover_upgrade(balancer *b, struct lws *wsi)
{
    const placement_bridge *t = placement_pick(snapshot_placement(b), cp_random_u64());
    if (!t) {
        b->n.no_bridge++;
        cp_lws_refuse_upgrade(wsi, 503, "no_bridge",
                              "no live bridge can take a connection now; retry shortly");
        return -1;
    }
    static struct {
        handover_head head;
        char request[HANDOVER_REQUEST_MAX];
    } msg;
    if (!t->url.ok || t->url.tls)
        return 1; /* wss:// (or a name): the service thread relays it */
    int relayable = b->workers && to_sockaddr(t, &msg.head.bridge, &msg.head.bridge_len) == 0;
    int local = b->handoff_dir[0] ? handover_bridge_socket(b, t->info.id) : -1;
    if (local < 0 && !relayable)
        return 1;
    int w = -1;
    if (local < 0 && (w = workers_pick(b->workers)) < 0) {
        b->n.descriptor_limited++;
        if (!b->capacity_logged)
            log_warn("refusing new clients: the relay workers are at their capacity (%llu "
                     "relays; descriptor limit %ld per process) or hand-over backlog",
                     workers_relays(b->workers), (long)cp_fd_limit());
        b->capacity_logged = 1;
        cp_lws_refuse_upgrade(wsi, 503, "descriptor_limit",
                              "this balancer has no descriptors left for another client; retry "
                              "shortly or use another balancer");
        return -1;
    }
    b->capacity_logged = 0;
    char ip[64] = "";
    lws_get_peer_simple(wsi, ip, sizeof ip);
    const char *cip = strncmp(ip, "::ffff:", 7) == 0 ? ip + 7 : ip;
    size_t rl;
    int fd = -1;
    if (build_request(wsi, t, cip, msg.request, sizeof msg.request, &rl) != 0) {
        cp_lws_refuse_upgrade(wsi, 431, "request_too_large",
                              "the upgrade request is too large to pass on to a bridge");
    } else if ((fd = detach(b, wsi)) < 0) {
        cp_lws_refuse_upgrade(wsi, 503, "descriptor_limit",
                              "this balancer has no descriptors left for another client; retry "
                              "shortly");
    }
    if (fd < 0) {
        if (local >= 0)
            close(local);
        return -1;
    }
    if (local >= 0) {
        if (to_bridge(b, local, fd, msg.request, rl) == 0)
            return 0;
        if (!relayable || (w = workers_pick(b->workers)) < 0) {
            close(fd); /* the client sees its connection closed, and retries */
            return 0;
        }
    }
    msg.head.request_len = (uint32_t)rl;
    snprintf(msg.head.bridge_id, sizeof msg.head.bridge_id, "%s", t->info.id);
    size_t len = sizeof msg.head + rl;
    b->n.handed_over++;
    for (;;) {
        worker_slot *s = &b->workers->slot[w];
        outbox *o = &boxes[w];
        atomic_fetch_add(&s->handed, 1);
        int rc = o->count ? 1 : cp_fd_send(s->sock, fd, (const unsigned char *)&msg, len);
        if (rc == 0) {
            close(fd);
            return 0;
        }
        if (rc == 1) {
            /* The worker's socket is full: queue (bounded by workers_pick). */
            queued *q = &o->ring[(o->head + o->count) % WORKER_BACKLOG_MAX];
            q->msg = malloc(len);
            if (!q->msg) {
                atomic_fetch_add(&s->taken, 1);
                close(fd);
                return 0;
            }
            memcpy(q->msg, &msg, len);
            q->len = (uint32_t)len;
            q->fd = fd;
            o->count++;
            ev_io_start(b->server.loop.ev, &o->writable);
            return 0;
        }
        /* That worker is gone: another one takes the client. */
        worker_lost(s);
        atomic_fetch_add(&s->taken, 1);
        w = workers_pick(b->workers);
        if (w < 0) {
            close(fd); /* no worker left: the client sees its connection closed */
            return 0;
        }
    }
}
