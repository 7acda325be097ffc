/* Stopping the bridge (docs/operations.md, "Draining a bridge"). One state
 * machine for both ways:
 * - SIGTERM, the paced drain: draining in the registry at once (the
 *   balancer stops placing here), new upgrades refused (503), a RECONNECT
 *   envelope to every session telling it when it will be closed, then
 *   closes with 1012 spread evenly over --drain-seconds, each after the
 *   session's queued frames are written;
 * - SIGINT or a second SIGTERM, the quick stop: every session closed at
 *   once with 1001.
 * Either way the loop stops when no session is left, or --shutdown-grace
 * after the last close was asked for. */
#include <stdio.h>
#include <string.h>

#include "bridge.h"
#include "workers.h"
#include "ids.h"
#include "log.h"

static void send_reconnect(bridge *b, session *s, int64_t delay_ms)
{
    cp_envelope env;
    memset(&env, 0, sizeof env);
    char msg[48];
    snprintf(msg, sizeof msg, "{\"delayMs\":%lld}", (long long)delay_ms);
    env.fields = CP_F_MSG_TYPE | CP_F_FROM | CP_F_RESULT_MSG | CP_F_MSG;
    env.msg_type = CP_MSG_RECONNECT;
    env.from = "system";
    env.result_msg = "bridge draining";
    env.msg_raw = msg;
    env.msg_raw_len = strlen(msg);
    cp_envelope_fill_defaults(&env, CP_TRIGGER_WEBSOCKET, NULL);
    session_send_built(b, s, &env, 0);
    b->n.drain_reconnects++;
}

/* Every open session learns when it will be closed: session i of n at
 * i * drain / n, in the order of the session list (which is also the order
 * the tick closes them in). A client may leave earlier; one that waits is
 * closed at its time, so reconnects arrive spread over the drain either
 * way. Sessions not greeted yet have nothing to lose: closed now. */
static void schedule(bridge *b, int64_t now)
{
    int64_t span = b->drain_end_ms - now;
    uint32_t n = b->session_count, i = 0;
    uint32_t total = b->shared ? atomic_load(&b->shared->drain_total) : 0;
    if (!total)
        total = workers_sessions_total(b);
    for (session *s = b->all; s; s = s->all_next) {
        if (s->state == SESSION_CLOSING)
            continue;
        if (s->state != SESSION_OPEN) {
            session_close(b, s, END_SHUTDOWN, CLOSE_SERVICE_RESTART);
            continue;
        }
        int64_t delay = n ? span * i / n : 0;
        if (b->shared) {
            /* With workers, the bridge's sessions share one pacing: each
             * takes the next of the bridge's turns (the workers drain at
             * the same time), so closes do not come W at a time. */
            uint32_t turn = atomic_fetch_add(&b->shared->drain_turn, 1);
            delay = total ? span * (turn < total ? turn : total - 1) / total : 0;
        }
        i++;
        s->drain_at_ms = now + delay;
        send_reconnect(b, s, delay);
    }
}

void drain_start(bridge *b, int quick, int64_t now)
{
    if (quick && b->draining == 2)
        return;
    if (!quick && b->draining)
        return;
    if (!b->draining) {
        /* First: the balancer must stop sending clients here. */
        registry_set_draining(b->registry);
        b->shutting_down = 1;
        b->drain_started_ms = now;
    }

    if (quick) {
        b->draining = 2;
        log_info("stopping: closing %u sessions now", b->session_count);
        sessions_close_all(b, END_SHUTDOWN, LWS_CLOSE_STATUS_GOINGAWAY);
        b->drain_end_ms = now;
    } else {
        b->draining = 1;
        b->drain_end_ms = now + b->cfg.drain_seconds * 1000;
        log_info("draining: %u sessions told to reconnect, closed over %ld s", b->session_count,
                 b->cfg.drain_seconds);
        schedule(b, now);
    }
    b->shutdown_deadline_ms = b->drain_end_ms + b->cfg.shutdown_grace_s * 1000;
    if (b->shared) /* its sessions were told: the master may mark Redis now */
        atomic_store(&b->shared->w[b->worker - 1].draining, 1);
    b->next_drain_log_ms = now + 1000;
}

/* Closes the sessions whose time has come. The list keeps its order while
 * draining (no session is added), so the walk stops at the first one not
 * due; those already asked to close are passed over (they leave the list
 * when their connection ends, within a few passes). */
static void close_due(bridge *b, int64_t now)
{
    for (session *s = b->all; s; s = s->all_next) {
        if (s->state == SESSION_CLOSING || s->close_when_flushed || !s->drain_at_ms)
            continue;
        if (s->drain_at_ms > now)
            break;
        session_close_when_flushed(b, s, END_SHUTDOWN, CLOSE_SERVICE_RESTART);
    }
}

int drain_tick(bridge *b, int64_t now)
{
    if (!b->draining)
        return 0;
    if (b->draining == 1)
        close_due(b, now);
    if (b->session_count == 0)
        return 1;
    if (now >= b->shutdown_deadline_ms) {
        log_warn("stopping with %u sessions still open after the drain", b->session_count);
        return 1;
    }
    if (now >= b->next_drain_log_ms) {
        log_info("draining: %u sessions left", b->session_count);
        b->next_drain_log_ms = now + 1000;
    }
    return 0;
}
