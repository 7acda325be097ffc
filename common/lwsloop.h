/* libwebsockets on a libev (epoll) loop instead of its own poll() loop.
 *
 * lws 4.1's default loop hands poll() every connection on every pass and
 * then walks them all, so with thousands of idle connections most of the
 * service thread went into poll (see docs/benchmarks.md); epoll only
 * reports the sockets that are ready. libev rather than libuv: lws 4.1's
 * libuv glue (as Debian builds it, with _DEBUG) closes a connection twice
 * after a callback returns -1, losing the close frame, and its handles
 * outlive the context; libev watchers stop synchronously. The loop is ours
 * ("foreign" to lws), so lws installs no signal handlers and the program
 * keeps its own SIGTERM handling (lwsserver.c). */
#ifndef CP_LWSLOOP_H
#define CP_LWSLOOP_H

#include <libwebsockets.h>
#include <ev.h>

typedef struct cp_lws_loop {
    struct ev_loop *ev;
    ev_prepare before_wait;
    void (*before_wait_fn)(void *ud);
    void *before_wait_ud;
} cp_lws_loop;

/* Initialises the loop. Returns 0, or -1 after logging. */
int cp_lws_loop_init(cp_lws_loop *l);

/* lws_create_context on this loop (sets the libev option and the foreign
 * loop in info). NULL when lws could not create it. */
struct lws_context *cp_lws_loop_create_context(cp_lws_loop *l,
                                               struct lws_context_creation_info *info);

/* Calls fn(ud) on every loop iteration, after the ready events were
 * handled and before the loop waits again: the place to flush work that
 * those events batched up. */
void cp_lws_loop_before_wait(cp_lws_loop *l, void (*fn)(void *ud), void *ud);

/* Runs the loop on the calling thread until cp_lws_loop_stop. */
void cp_lws_loop_run(cp_lws_loop *l);

/* Makes cp_lws_loop_run return; call it from a callback on the loop. */
void cp_lws_loop_stop(cp_lws_loop *l);

/* After cp_lws_loop_run returned: destroys ctx (every connection is
 * closed, their CLOSED callbacks run here) and then the loop. */
void cp_lws_loop_destroy(cp_lws_loop *l, struct lws_context *ctx);

#endif
