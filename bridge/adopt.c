#include "adopt.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ids.h"
#include "log.h"

/* Accepted connections are served in turns of this many per wake-up, so a
 * burst of hand-overs does not keep the loop from its sessions. */
#define ADOPT_BATCH 64
/* A balancer sends its message right after connecting; one that has not
 * within this long is dropped. */
#define ADOPT_PENDING_MS 2000

static void take(adopt_listener *a, int conn, int *done)
{
    static char request[CP_HANDOFF_REQUEST_MAX];
    int client;
    ssize_t n = cp_fd_recv(conn, request, sizeof request, &client);
    *done = !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    if (!*done)
        return;
    if (n <= 0 || client < 0 || (size_t)n >= sizeof request) {
        if (client >= 0)
            close(client);
        a->dropped++;
        return;
    }
    /* lws reads the request from the buffer as if from the socket, then
     * carries on with the socket: the upgrade's checks are the usual ones. */
    if (lws_adopt_socket_vhost_readbuf(a->vhost, client, request, (size_t)n))
        a->adopted++;
    else
        a->dropped++; /* lws closed the socket */
}

static void pending_done(adopt_pending *p)
{
    ev_io_stop(p->owner->loop, &p->io);
    close(p->io.fd);
    p->io.fd = -1;
}

static void on_pending(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    adopt_pending *p = (adopt_pending *)w;
    int done;
    take(p->owner, w->fd, &done);
    if (done)
        pending_done(p);
}

/* Keeps conn until its message arrives (rare: the balancer sends at once). */
static void wait_for(adopt_listener *a, int conn)
{
    int64_t now = cp_mono_ms();
    adopt_pending *slot = NULL;
    for (int i = 0; i < ADOPT_PENDING_MAX; i++) {
        adopt_pending *p = &a->pending[i];
        if (p->io.fd >= 0 && now - p->since_ms > ADOPT_PENDING_MS) {
            a->dropped++;
            pending_done(p);
        }
        if (p->io.fd < 0 && !slot)
            slot = p;
    }
    if (!slot) {
        a->dropped++;
        close(conn);
        return;
    }
    slot->since_ms = now;
    ev_io_init(&slot->io, on_pending, conn, EV_READ);
    ev_io_start(a->loop, &slot->io);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    adopt_listener *a = w->data;
    for (int i = 0; i < ADOPT_BATCH; i++) {
        int conn = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn("hand-over socket: accept: %s", strerror(errno));
            return;
        }
        int done;
        take(a, conn, &done);
        if (done)
            close(conn);
        else
            wait_for(a, conn);
    }
}

/* 1 when a live process answers on path (another bridge with this id). */
static int in_use(const struct sockaddr_un *sa, socklen_t sl)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return 0;
    int live = connect(s, (const struct sockaddr *)sa, sl) == 0;
    close(s);
    return live;
}

int adopt_open(adopt_listener *a, const char *setting, const char *bridge_id)
{
    memset(a, 0, sizeof *a);
    a->fd = -1;
    for (int i = 0; i < ADOPT_PENDING_MAX; i++) {
        a->pending[i].io.fd = -1;
        a->pending[i].owner = a;
    }
    char dir[sizeof a->path], err[300];
    int on = cp_handoff_dir(setting, dir, sizeof dir);
    if (on < 0) {
        log_error("--handover-dir '%s' is too long for a socket path", setting);
        return -1;
    }
    if (!on)
        return 0;
    struct sockaddr_un sa;
    socklen_t sl;
    if (cp_handoff_dir_check(dir, 1, err, sizeof err) != 0 ||
        cp_handoff_addr(dir, bridge_id, &sa, &sl) != 0) {
        log_warn("no hand-overs from balancers (they relay this bridge's clients): %s",
                 err[0] ? err : "path too long");
        return 0;
    }
    if (in_use(&sa, sl)) {
        log_error("another bridge with id %s takes hand-overs at %s: this one does not (give "
                  "each bridge its own --id)",
                  bridge_id, sa.sun_path);
        return 0;
    }
    unlink(sa.sun_path); /* left by a bridge that crashed */
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177); /* the socket is 0600 from the start */
    int bound = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sl) == 0;
    umask(old);
    if (!bound || listen(fd, SOMAXCONN) != 0) {
        log_warn("no hand-overs from balancers: %s: %s", sa.sun_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 0;
    }
    struct stat st;
    a->fd = fd;
    a->ino = stat(sa.sun_path, &st) == 0 ? st.st_ino : 0;
    a->opener = getpid();
    snprintf(a->path, sizeof a->path, "%s", sa.sun_path);
    log_info("taking clients handed over by balancers on this host at %s", a->path);
    return 0;
}

void adopt_start(adopt_listener *a, struct ev_loop *loop, struct lws_vhost *vh)
{
    if (a->fd < 0)
        return;
    if (!vh) {
        /* Nobody would accept: balancers must not queue clients there. */
        log_error("hand-over socket: no vhost to adopt clients into; balancers relay instead");
        adopt_close(a);
        return;
    }
    a->loop = loop;
    a->vhost = vh;
    ev_io_init(&a->io, on_accept, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
}

void adopt_close(adopt_listener *a)
{
    if (a->fd < 0)
        return;
    if (a->loop) {
        ev_io_stop(a->loop, &a->io);
        for (int i = 0; i < ADOPT_PENDING_MAX; i++)
            if (a->pending[i].io.fd >= 0)
                pending_done(&a->pending[i]);
    }
    /* Only by the process that made it (forked workers share it), and only
     * our own socket: a successor may already have bound the path. */
    struct stat st;
    if (getpid() == a->opener && stat(a->path, &st) == 0 && st.st_ino == a->ino)
        unlink(a->path);
    close(a->fd);
    a->fd = -1;
}
