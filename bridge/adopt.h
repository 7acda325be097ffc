/* The bridge's side of the balancer's hand-overs (common/handoff.h): a
 * Unix socket in the hand-over directory, named after the bridge id, on
 * which a balancer of this host sends a client's connection together with
 * the upgrade request it read from it. The bridge adopts the connection as
 * if it had accepted it (lws_adopt_socket_vhost_readbuf): the upgrade
 * goes through the same checks as a direct one, and from then on bytes
 * flow between client and bridge with no process in between.
 *
 * Everything runs on the service thread's loop. */
#ifndef BRIDGE_ADOPT_H
#define BRIDGE_ADOPT_H

#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <libwebsockets.h>

#include "handoff.h"

/* Connections from balancers accepted whose message has not arrived yet. */
#define ADOPT_PENDING_MAX 64

typedef struct adopt_pending {
    ev_io io;
    struct adopt_listener *owner;
    int64_t since_ms;
} adopt_pending;

typedef struct adopt_listener {
    int fd; /* the listening socket; -1: no hand-overs */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    ino_t ino;    /* of the socket's file: removed at the end only if still ours */
    pid_t opener; /* the process that made it: only it removes it */
    ev_io io;
    struct ev_loop *loop;
    struct lws_vhost *vhost;
    adopt_pending pending[ADOPT_PENDING_MAX]; /* io.fd -1: free */
    uint64_t adopted; /* clients adopted */
    uint64_t dropped; /* hand-overs that brought no usable client */
} adopt_listener;

/* Opens the hand-over socket for bridge_id in the directory of setting
 * ("auto", a path, "off"). Hand-overs are an optimisation (the balancer
 * relays otherwise), so a socket that cannot be made is logged and leaves
 * a->fd at -1. Returns -1 only for a setting that cannot work (logged). */
int adopt_open(adopt_listener *a, const char *setting, const char *bridge_id);

/* Starts taking hand-overs on the loop, into vh. Processes forked after
 * adopt_open may each start it on their own loop: the kernel gives each
 * hand-over to one of them. */
void adopt_start(adopt_listener *a, struct ev_loop *loop, struct lws_vhost *vh);

/* Stops taking hand-overs and removes the socket (balancers relay again). */
void adopt_close(adopt_listener *a);

#endif
