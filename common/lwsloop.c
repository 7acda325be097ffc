#include "lwsloop.h"

#include <stddef.h>
#include <string.h>

#include "log.h"

int cp_lws_loop_init(cp_lws_loop *l)
{
    memset(l, 0, sizeof *l);
    /* A private loop: ev_default_loop would take over SIGCHLD. */
    l->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
    if (!l->ev) {
        log_error("cannot create the event loop");
        return -1;
    }
    return 0;
}

struct lws_context *cp_lws_loop_create_context(cp_lws_loop *l,
                                               struct lws_context_creation_info *info)
{
    void *loops[1] = {l->ev};
    info->options |= LWS_SERVER_OPTION_LIBEV;
    info->foreign_loops = loops; /* read during lws_create_context only */
    struct lws_context *ctx = lws_create_context(info);
    info->foreign_loops = NULL;
    return ctx;
}

static void before_wait_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    cp_lws_loop *l = (cp_lws_loop *)((char *)w - offsetof(cp_lws_loop, before_wait));
    l->before_wait_fn(l->before_wait_ud);
}

void cp_lws_loop_before_wait(cp_lws_loop *l, void (*fn)(void *ud), void *ud)
{
    l->before_wait_fn = fn;
    l->before_wait_ud = ud;
    ev_prepare_init(&l->before_wait, before_wait_cb);
    ev_prepare_start(l->ev, &l->before_wait);
}

void cp_lws_loop_run(cp_lws_loop *l)
{
    ev_run(l->ev, 0);
}

void cp_lws_loop_stop(cp_lws_loop *l)
{
    ev_break(l->ev, EVBREAK_ALL);
}

void cp_lws_loop_destroy(cp_lws_loop *l, struct lws_context *ctx)
{
    /* With a foreign libev loop lws stops its watchers and frees the
     * context in this one call. */
    if (ctx)
        lws_context_destroy(ctx);
    if (l->ev) {
        if (l->before_wait_fn)
            ev_prepare_stop(l->ev, &l->before_wait);
        ev_loop_destroy(l->ev);
    }
    l->ev = NULL;
}
