/* Streams on the bridge (docs/design-delivery.md sections 2 and 3): every
 * sequenced message goes through its stream's order (order.c) before the
 * sessions see it; gaps are fetched from the history (history.c) and
 * reported when lost; a session is greeted with its streams' positions and
 * recovers what it missed (since/epoch, bsince/bepoch) before live
 * messages; after a broker reconnect every stream catches up from the
 * history. Runs on the service thread; Redis only on the history thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "bridge.h"
#include "ids.h"
#include "log.h"

/* A session between its subscription and its CONNECTION. */
typedef struct recovery {
    struct recovery *prev, *next; /* b->greet_head, until its read is sent */
    session *s;
    recovery_params p;
    uint8_t listed;
    uint8_t waiting; /* the read is out */
    /* live messages that arrived meanwhile, in order */
    struct held {
        out_frame *f;
        int64_t offset;
        uint64_t epoch_h; /* the stream's epoch when it was delivered */
        uint8_t broadcast;
    } *held;
    uint32_t n, cap;
} recovery;

/* ------------------------------------------------------ fan-out to sessions */

/* One frame of a stream for one session: held while it recovers, skipped
 * when its greeting already covered the offset. */
static void session_deliver(bridge *b, session *s, out_frame *f, int64_t offset,
                            uint64_t epoch_h, int broadcast)
{
    if (s->state != SESSION_OPEN)
        return;
    recovery *rec = s->rec;
    if (rec) {
        if (rec->n == rec->cap) {
            uint32_t cap = rec->cap ? rec->cap * 2 : 16;
            struct held *p = (long)rec->n < b->cfg.max_queue_messages
                                 ? realloc(rec->held, cap * sizeof *p)
                                 : NULL;
            if (!p) {
                /* As a full queue: the client reconnects and recovers. */
                log_warn("session %.*s: too many live messages while recovering: closing slow "
                         "consumer",
                         (int)s->sid_len, s->recipient + SESSION_ID_OFFSET);
                session_close(b, s, END_SLOW_CONSUMER, CLOSE_SLOW_CONSUMER);
                return;
            }
            rec->held = p;
            rec->cap = cap;
        }
        frame_ref(f);
        rec->held[rec->n].f = f;
        rec->held[rec->n].offset = offset;
        rec->held[rec->n].epoch_h = epoch_h;
        rec->held[rec->n].broadcast = (uint8_t)broadcast;
        rec->n++;
        return;
    }
    if (offset > 0) {
        int64_t floor = broadcast ? s->bfloor : s->floor;
        uint64_t floor_h = broadcast ? s->bfloor_epoch_h : s->floor_epoch_h;
        if (offset <= floor && epoch_h == floor_h) {
            b->n.session_duplicates++;
            return;
        }
    }
    session_send(b, s, f);
    if (f->msg_type == CP_MSG_BUSINESS)
        b->n.deliveries++;
}

typedef struct {
    bridge *b;
    channel *ch; /* NULL: the broadcast stream */
} sink_ctx;

static void sink_deliver(void *ud, void *item, int64_t offset)
{
    sink_ctx *c = ud;
    out_frame *f = item;
    if (c->ch) {
        uint64_t h = c->ch->order.epoch_h;
        for (session *s = c->ch->sessions; s; s = s->chan_next)
            session_deliver(c->b, s, f, offset, h, 0);
    } else {
        uint64_t h = c->b->border.epoch_h;
        for (session *s = c->b->all; s; s = s->all_next)
            session_deliver(c->b, s, f, offset, h, 1);
    }
    frame_unref(f);
}

static void sink_discard(void *ud, void *item)
{
    sink_ctx *c = ud;
    c->b->n.duplicates++;
    frame_unref(item);
}

/* The reorder buffer was full: the gap fetch reads it back. */
static void sink_spill(void *ud, void *item)
{
    sink_ctx *c = ud;
    c->b->n.spilled++;
    frame_unref(item);
}

/* A range nobody could deliver: every session of the stream is told. */
static void sink_gap(void *ud, int64_t from, int64_t to)
{
    sink_ctx *c = ud;
    bridge *b = c->b;
    const order_stream *st = c->ch ? &c->ch->order : &b->border;
    b->n.gaps++;
    b->n.gap_messages += (uint64_t)(to - from + 1);
    log_warn("gap: offsets %lld..%lld of %s%s (epoch %s) were lost", (long long)from,
             (long long)to, c->ch ? "channel " : "the broadcast stream",
             c->ch ? c->ch->name : "", st->epoch);
    char text[96];
    snprintf(text, sizeof text, "gap: offsets %lld..%lld were lost", (long long)from,
             (long long)to);
    cp_envelope env;
    memset(&env, 0, sizeof env);
    env.fields = CP_F_MSG_TYPE | CP_F_RESULT_MSG | CP_F_EPOCH;
    env.msg_type = CP_MSG_ERROR;
    env.result_msg = text;
    env.epoch = st->epoch;
    if (!c->ch)
        env.fields |= CP_F_BROADCAST;
    cp_envelope_fill_defaults(&env, CP_TRIGGER_WEBSOCKET, NULL);
    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    size_t split = 0;
    out_frame *f = cp_envelope_write(sb, &env, &split) == 0
                       ? frame_new(sb->data, sb->len, split, 1, CP_MSG_ERROR)
                       : NULL;
    if (!f) {
        log_error("out of memory reporting a gap");
        return;
    }
    frame_ref(f);
    sink_deliver(c, f, -1);
    frame_unref(f);
}

/* An offset far ahead of the stream that nothing confirmed: delivered, but
 * the stream stays where it is. */
static void sink_beyond(void *ud, void *item, int64_t offset)
{
    sink_ctx *c = ud;
    const order_stream *st = c->ch ? &c->ch->order : &c->b->border;
    c->b->n.beyond_delivered++;
    log_warn("bus: offset %lld of %s%s is %lld past its stream (last %lld) and unconfirmed: "
             "delivered without moving the stream",
             (long long)offset, c->ch ? "channel " : "the broadcast stream",
             c->ch ? c->ch->name : "", (long long)(offset - st->last), (long long)st->last);
    sink_deliver(ud, item, offset);
}

#define SINK(ctx) {sink_deliver, sink_discard, sink_gap, sink_beyond, sink_spill, &(ctx)}

/* ------------------------------------------------------------- gap fetches */

static void retry_catch_up(bridge *b, channel *ch);
static void retry_due(bridge *b, int64_t now_ms);

static order_stream *stream_of(bridge *b, channel *ch) { return ch ? &ch->order : &b->border; }

static void list_gap(bridge *b, channel *ch)
{
    if (ch && !ch->gap_listed && order_waiting(&ch->order)) {
        ch->gap_listed = 1;
        DL_APPEND2(b->gap_head, ch, gap_prev, gap_next);
    }
}

static void unlist_gap(bridge *b, channel *ch)
{
    if (ch->gap_listed) {
        ch->gap_listed = 0;
        DL_DELETE2(b->gap_head, ch, gap_prev, gap_next);
    }
}

/* Asks the history for the stream's open gap, once at a time. */
static void fetch_gap(bridge *b, channel *ch)
{
    order_stream *st = stream_of(b, ch);
    int64_t since, to;
    if (!b->history || !order_missing(st, &since, &to))
        return;
    history_req *req = history_req_new(HISTORY_FILL);
    if (req) {
        req->broadcast = ch == NULL;
        req->generation = ch ? ch->generation : 0;
        history_req_add(req, ch ? ch->name : CP_REDIS_BROADCAST_STREAM, since,
                        (size_t)(to - since));
        if (history_submit(b->history, req) == 0) {
            b->n.gap_fetches++;
            order_fetch_started(st, to, 1);
            return;
        }
        b->n.history_busy++;
        history_req_free(req);
    }
    order_fetch_started(st, to, 0); /* not again: the window reports the gap */
}

/* While a gap is open its window is checked this often (the service
 * tick, 250 ms, is too coarse for --reorder-window-ms). */
#define GAP_CHECK_US (20 * LWS_US_PER_MS)

static void gap_timer_fired(lws_sorted_usec_list_t *sul)
{
    bridge *b = lws_container_of(sul, bridge, gap_timer);
    b->gap_timer_armed = 0;
    streams_tick(b, cp_mono_ms());
}

static void arm_gap_timer(bridge *b)
{
    if (!b->gap_timer_armed && b->ctx) {
        b->gap_timer_armed = 1;
        lws_sul_schedule(b->ctx, 0, &b->gap_timer, gap_timer_fired, GAP_CHECK_US);
    }
}

/* The stream holds messages behind a gap: fetch it, watch its window. */
static void holding(bridge *b, channel *ch)
{
    list_gap(b, ch);
    fetch_gap(b, ch);
    arm_gap_timer(b);
}

/* A live message brought an epoch the stream has not seen: is it the
 * history's current one, or a late message of an older one? */
static void verify_epoch(bridge *b, channel *ch)
{
    order_stream *st = stream_of(b, ch);
    order_verify_started(st);
    history_req *req = history_req_new(HISTORY_VERIFY);
    if (req) {
        req->broadcast = ch == NULL;
        req->generation = ch ? ch->generation : 0;
        history_req_add(req, ch ? ch->name : CP_REDIS_BROADCAST_STREAM, 0, 0);
        if (history_submit(b->history, req) == 0)
            return;
        b->n.history_busy++;
        history_req_free(req);
    }
    sink_ctx ctx = {b, ch};
    order_sink sink = SINK(ctx);
    order_epoch_verified(st, &b->olim, &sink, 0, NULL, cp_mono_ms()); /* cannot ask: take it */
}

void streams_offer(bridge *b, channel *ch, out_frame *f, int64_t offset, const char *epoch)
{
    sink_ctx ctx = {b, ch};
    order_sink sink = SINK(ctx);
    order_stream *st = stream_of(b, ch);
    order_offer(st, &b->olim, &sink, offset, epoch, f, cp_mono_ms());
    if (b->history && order_verify_wanted(st))
        verify_epoch(b, ch);
    if (order_waiting(st))
        holding(b, ch);
}

void streams_tick(bridge *b, int64_t now_ms)
{
    retry_due(b, now_ms);
    sink_ctx ctx = {b, NULL};
    order_sink sink = SINK(ctx);
    if (order_waiting(&b->border) && order_tick(&b->border, &b->olim, &sink, now_ms))
        fetch_gap(b, NULL);
    channel *ch, *next;
    DL_FOREACH_SAFE2(b->gap_head, ch, next, gap_next)
    {
        ctx.ch = ch;
        if (order_tick(&ch->order, &b->olim, &sink, now_ms))
            fetch_gap(b, ch);
        else
            unlist_gap(b, ch);
    }
    if (b->gap_head || order_waiting(&b->border))
        arm_gap_timer(b);
}

static void unlist_retry(bridge *b, channel *ch);

void streams_channel_gone(bridge *b, channel *ch)
{
    sink_ctx ctx = {b, ch};
    order_sink sink = SINK(ctx);
    if (ch) {
        unlist_gap(b, ch);
        unlist_retry(b, ch);
    }
    order_clear(stream_of(b, ch), &sink);
}

/* Offers the stored messages of a read to their stream; returns the last
 * offset read (since when none). */
static int64_t offer_read(bridge *b, channel *ch, const history_read *rd, uint64_t *counter)
{
    sink_ctx ctx = {b, ch};
    order_sink sink = SINK(ctx);
    order_stream *st = stream_of(b, ch);
    int64_t now = cp_mono_ms(), last = rd->since;
    /* What the history holds is its current epoch: no need to ask. */
    order_adopt_epoch(st, &b->olim, &sink, rd->state.epoch, now);
    int64_t was_last = st->last;
    for (history_entry *e = rd->entries; e; e = e->next) {
        int64_t offset = e->offset;
        if (order_read_has(st, was_last, offset)) { /* held here: not a repeat */
            last = offset;
            continue;
        }
        char epoch[ORDER_EPOCH_MAX + 1];
        out_frame *f = delivery_build_frame(b, e->data, e->len, rd->stream, strlen(rd->stream),
                                            ch == NULL, rd->state.epoch, &offset, epoch);
        last = e->offset;
        if (!f)
            continue;
        int r = order_offer(st, &b->olim, &sink, offset, epoch, f, now);
        if (r == ORDER_DELIVERED || r == ORDER_RESET)
            (*counter)++;
    }
    return last;
}

/* The channel a fill or catch-up was for, if it is still here. */
static channel *request_channel(bridge *b, const history_req *req)
{
    const char *name = req->reads[0].stream;
    channel *ch = channel_find(b, name, strlen(name));
    return ch && ch->generation == req->generation ? ch : NULL;
}

static void catch_up_from(bridge *b, channel *ch, int64_t since);

/* A greeting's read of a stream's state tells a stream not known yet
 * where it stands (what it held meanwhile goes out from there, what the
 * greeting covered is dropped). A stream only learns it this way: a read
 * made after live messages arrived would count them as covered. */
static void learn_base(bridge *b, channel *ch, const history_read *rd)
{
    order_stream *st = stream_of(b, ch);
    if (st->known)
        return;
    if (rd->rc != CP_REDIS_OK) {
        st->fetching = 0; /* the window decides */
        return;
    }
    sink_ctx ctx = {b, ch};
    order_sink sink = SINK(ctx);
    order_set_base(st, &sink, rd->state.last, rd->state.epoch, cp_mono_ms());
    if (st->held_n > 0)
        holding(b, ch);
}

static void fill_done(bridge *b, history_req *req)
{
    channel *ch = req->broadcast ? NULL : request_channel(b, req);
    if (!req->broadcast && !ch)
        return;
    order_stream *st = stream_of(b, ch);
    const history_read *rd = &req->reads[0];
    int ok = rd->rc == CP_REDIS_OK;
    if (req->what == HISTORY_VERIFY) {
        sink_ctx ctx = {b, ch};
        order_sink sink = SINK(ctx);
        order_epoch_verified(st, &b->olim, &sink, ok && rd->state.epoch[0], rd->state.epoch,
                             cp_mono_ms());
    } else if (req->what == HISTORY_FILL) {
        int64_t to = rd->since + (int64_t)rd->max;
        if (ok && st->fetch_next_held && rd->state.last <= to && rd->state.epoch[0] &&
            strcmp(rd->state.epoch, st->epoch) == 0) {
            /* The message after the gap came before this read, and entries
             * store before they publish: the history not reaching it means
             * no entry made it (a bogus offset on a d/ topic). */
            out_frame *bogus = order_take(st, to + 1);
            if (bogus) {
                b->n.beyond_rejected++;
                log_warn("bus: dropped offset %lld of %s%s: its history ends at %lld",
                         (long long)(to + 1), ch ? "channel " : "the broadcast stream",
                         ch ? ch->name : "", (long long)rd->state.last);
                frame_unref(bogus);
            }
        }
        if (ok)
            offer_read(b, ch, rd, &b->n.gap_filled);
        sink_ctx ctx = {b, ch};
        order_sink sink = SINK(ctx);
        order_fetch_done(st, &sink, ok, rd->since + (int64_t)rd->max, cp_mono_ms());
    } else if (!ok) {
        retry_catch_up(b, ch); /* Redis down during the bus reconnect: later */
    } else {
        cp_backoff_reset(&b->retry_backoff);
        int stale = st->known && rd->since > 0 && rd->state.epoch[0] &&
                    strcmp(rd->state.epoch, st->epoch) != 0;
        int64_t last = offer_read(b, ch, rd, &b->n.catch_up_messages);
        if (stale)
            catch_up_from(b, ch, 0); /* the history was lost meanwhile: its new epoch whole */
        else if (rd->n == rd->max && rd->max > 0)
            catch_up_from(b, ch, last); /* more than one read's worth was missed */
    }
    if (order_waiting(st))
        holding(b, ch);
}

/* ----------------------------------------------------------------- catch-up */

static void catch_up_from(bridge *b, channel *ch, int64_t since)
{
    history_req *req = history_req_new(HISTORY_CATCH_UP);
    if (!req)
        return;
    req->broadcast = ch == NULL;
    req->generation = ch ? ch->generation : 0;
    history_req_add(req, ch ? ch->name : CP_REDIS_BROADCAST_STREAM, since,
                    (size_t)b->cfg.recovery_max_messages);
    if (history_submit(b->history, req) != 0) {
        b->n.history_busy++;
        history_req_free(req);
        retry_catch_up(b, ch); /* the queue is full: later */
        return;
    }
    b->n.catch_ups++;
}

/* A catch-up that could not be made is made again, with the common
 * backoff, until one reads the history or the stream's live traffic
 * proved it continuous (its position moved and nothing is held: what was
 * before was delivered, or reported). */
static void retry_catch_up(bridge *b, channel *ch)
{
    const order_stream *st = stream_of(b, ch);
    if (ch && !ch->retry_listed) {
        ch->retry_listed = 1;
        ch->retry_last = st->last;
        DL_APPEND2(b->retry_head, ch, retry_prev, retry_next);
    } else if (!ch && !b->bretry_listed) {
        b->bretry_listed = 1;
        b->bretry_last = st->last;
    }
    int64_t now = cp_mono_ms();
    if (b->retry_due_ms <= now)
        b->retry_due_ms = now + cp_backoff_next(&b->retry_backoff);
}

static void unlist_retry(bridge *b, channel *ch)
{
    if (ch->retry_listed) {
        ch->retry_listed = 0;
        DL_DELETE2(b->retry_head, ch, retry_prev, retry_next);
    }
}

/* Retries the catch-ups that are due (the service tick). */
static void retry_due(bridge *b, int64_t now_ms)
{
    if ((!b->retry_head && !b->bretry_listed) || now_ms < b->retry_due_ms)
        return;
    b->retry_due_ms = 0;
    if (b->bretry_listed) {
        b->bretry_listed = 0;
        if (b->border.last == b->bretry_last || b->border.held_n > 0) {
            b->n.catch_up_retries++;
            catch_up_from(b, NULL, b->border.last);
        }
    }
    /* Taken off as a whole: a catch-up refused again (queue full) lists
     * its channel anew for the next round, not for this one. */
    channel *list = b->retry_head, *ch, *next;
    b->retry_head = NULL;
    for (ch = list; ch; ch = next) {
        next = ch->retry_next;
        ch->retry_listed = 0;
        ch->retry_prev = ch->retry_next = NULL;
        if (ch->order.last == ch->retry_last || ch->order.held_n > 0) {
            b->n.catch_up_retries++;
            catch_up_from(b, ch, ch->order.last);
        }
    }
}

void streams_catch_up(bridge *b, channel *ch)
{
    const order_stream *st = stream_of(b, ch);
    /* A stream that never had a position has nothing to catch up from:
     * its sessions were greeted without one (Redis down) or none came. */
    if (b->history && st->known)
        catch_up_from(b, ch, st->last);
}

void streams_resync(bridge *b)
{
    streams_catch_up(b, NULL);
    channel *ch, *tmp;
    HASH_ITER(hh, b->channels, ch, tmp)
    {
        if (ch->state == CHANNEL_SUBSCRIBED)
            streams_catch_up(b, ch);
    }
}

/* ----------------------------------------------------------------- greeting */

static recovery *recovery_new(session *s)
{
    recovery *rec = calloc(1, sizeof *rec);
    if (rec) {
        rec->s = s;
        rec->p.since = rec->p.bsince = -1;
    }
    return rec;
}

int streams_set_recovery(session *s, const recovery_params *p)
{
    if (s->state != SESSION_PENDING && !s->rec)
        return 0; /* greeted already (no history to wait for) */
    if (!s->rec && !(s->rec = recovery_new(s)))
        return -1;
    s->rec->p = *p;
    return 0;
}

static void free_recovery(recovery *rec)
{
    for (uint32_t i = 0; i < rec->n; i++)
        frame_unref(rec->held[i].f);
    free(rec->held);
    free(rec);
}

void streams_session_gone(bridge *b, session *s)
{
    recovery *rec = s->rec;
    if (!rec)
        return;
    if (rec->listed)
        DL_DELETE(b->greet_head, rec);
    free_recovery(rec);
    s->rec = NULL;
}

/* Where one stream stands for the session: the CONNECTION fields, the
 * session's floor, and whether `since` can be recovered (1 also when not
 * asked). Nothing is sent. */
static int stream_position(session *s, const history_read *rd, int64_t since,
                           const char *want_epoch, int broadcast, cp_envelope *env)
{
    int64_t *floor = broadcast ? &s->bfloor : &s->floor;
    uint64_t *floor_h = broadcast ? &s->bfloor_epoch_h : &s->floor_epoch_h;
    *floor = 0;
    *floor_h = 0;
    if (rd->rc != CP_REDIS_OK)
        return since < 0; /* Redis down: no position, nothing recovered */
    const cp_redis_stream_state *state = &rd->state;
    if (broadcast) {
        env->boffset = state->last;
        env->bepoch = state->epoch;
        env->fields |= CP_F_BOFFSET | CP_F_BEPOCH;
    } else {
        env->offset = state->last;
        env->epoch = state->epoch;
        env->fields |= CP_F_OFFSET | CP_F_EPOCH;
    }
    /* Live messages are compared with the floor only under the epoch it
     * was read in (whatever epoch the bridge's stream is in now). */
    *floor = state->last;
    *floor_h = order_epoch_hash(state->epoch);
    if (since < 0)
        return 1;
    if (*want_epoch && strcmp(want_epoch, state->epoch) != 0)
        return 0; /* another history: `since` means nothing in it */
    if (rd->n == rd->max && rd->tail && rd->tail->offset < state->last)
        return 0; /* more than --recovery-max-messages were missed */
    if (since > state->last)
        return 0; /* a position this history never reached: another one's (no epoch given) */
    return since == state->last || (state->first > 0 && state->first <= since + 1);
}

/* Sends the retained messages after `since` (same epoch only) and moves
 * the session's floor to the last one sent. */
static void send_recovered(bridge *b, session *s, const history_read *rd, int64_t since,
                           const char *want_epoch, int broadcast)
{
    if (since < 0 || rd->rc != CP_REDIS_OK ||
        (*want_epoch && strcmp(want_epoch, rd->state.epoch) != 0))
        return;
    int64_t last_sent = since;
    for (history_entry *e = rd->entries; e && s->state == SESSION_OPEN; e = e->next) {
        int64_t offset = e->offset;
        char epoch[ORDER_EPOCH_MAX + 1];
        out_frame *f = delivery_build_frame(b, e->data, e->len, rd->stream, strlen(rd->stream),
                                            broadcast, rd->state.epoch, &offset, epoch);
        if (!f)
            continue;
        session_send(b, s, f);
        frame_unref(f);
        b->n.recovered_messages++;
        last_sent = e->offset;
    }
    int64_t *floor = broadcast ? &s->bfloor : &s->floor;
    /* The floor was the stream's last offset: with a recovery it is what
     * the session actually has (what was read may end earlier). */
    if (*floor > 0)
        *floor = last_sent < *floor ? last_sent : *floor;
}

/* Sends the CONNECTION, the recovered messages and the live ones that
 * arrived meanwhile (those the recovery did not already bring); req NULL:
 * without the history. */
static void greet(bridge *b, session *s, const history_req *req)
{
    recovery *rec = s->rec;
    s->rec = NULL; /* from here on, live messages go straight out */
    static const recovery_params none = {.since = -1, .bsince = -1};
    const recovery_params *p = rec ? &rec->p : &none;
    int asked = p->since >= 0 || p->bsince >= 0;

    cp_envelope env;
    memset(&env, 0, sizeof env);
    env.fields = CP_F_MSG_TYPE | CP_F_FROM | CP_F_RESULT_MSG;
    env.msg_type = CP_MSG_CONNECTION;
    env.from = "system";
    char text[64 + CP_CHANNEL_ID_MAX];
    snprintf(text, sizeof text, "connected, channelId=%s", s->channel->name);
    env.result_msg = text;
    cp_envelope_fill_defaults(&env, CP_TRIGGER_WEBSOCKET, NULL);

    int recovered = 0;
    s->floor = s->bfloor = 0;
    if (req) {
        recovered = stream_position(s, &req->reads[0], p->since, p->epoch, 0, &env);
        recovered &= stream_position(s, &req->reads[1], p->bsince, p->bepoch, 1, &env);
    }
    if (asked) {
        env.recovered = recovered;
        env.fields |= CP_F_RECOVERED;
        int failed = !req || (p->since >= 0 && req->reads[0].rc != CP_REDIS_OK) ||
                     (p->bsince >= 0 && req->reads[1].rc != CP_REDIS_OK);
        b->n.recoveries[failed ? RECOVERY_FAILED
                        : recovered ? RECOVERY_OK
                                    : RECOVERY_NOT_RECOVERED]++;
    }
    /* Everything below is queued at once: the queue limits (slow
     * consumers) make room for it until it is written. */
    s->burst_open = 1;
    s->burst_msgs = 1;
    s->burst_bytes = 0;
    for (int i = 0; req && i < req->nreads; i++) {
        s->burst_msgs += (uint32_t)req->reads[i].n;
        for (const history_entry *e = req->reads[i].entries; e; e = e->next)
            s->burst_bytes += e->len + s->recipient_len + 64;
    }
    for (uint32_t i = 0; rec && i < rec->n; i++) {
        s->burst_msgs++;
        s->burst_bytes += rec->held[i].f->len + s->recipient_len;
    }
    session_send_built(b, s, &env, 0);
    if (req) {
        send_recovered(b, s, &req->reads[0], p->since, p->epoch, 0);
        send_recovered(b, s, &req->reads[1], p->bsince, p->bepoch, 1);
    }
    if (rec) {
        for (uint32_t i = 0; i < rec->n && s->state == SESSION_OPEN; i++)
            session_deliver(b, s, rec->held[i].f, rec->held[i].offset, rec->held[i].epoch_h,
                            rec->held[i].broadcast);
        free_recovery(rec);
    }
    s->burst_open = 0;
    if (s->state == SESSION_OPEN)
        session_greeted(b, s);
}

void streams_greet(bridge *b, session *s)
{
    if (!s->rec && !(s->rec = recovery_new(s))) {
        greet(b, s, NULL);
        return;
    }
    /* The read goes out with the others of this loop pass (the session's
     * recovery arguments are set by then, ws.c, sse.c: also without a
     * history, where they make recovered:false). Nothing the client sends
     * is read before its CONNECTION went out. */
    lws_rx_flow_control(s->wsi, 0);
    s->rec->listed = 1;
    DL_APPEND(b->greet_head, s->rec);
}

void streams_flush_greetings(bridge *b)
{
    recovery *rec, *next;
    DL_FOREACH_SAFE(b->greet_head, rec, next)
    {
        DL_DELETE(b->greet_head, rec);
        rec->listed = 0;
        session *s = rec->s;
        if (!b->history) {
            greet(b, s, NULL); /* no positions; a recovery asked for: recovered:false */
            continue;
        }
        history_req *req = history_req_new(HISTORY_GREET);
        if (req) {
            req->session_id = s->id;
            size_t max = (size_t)b->cfg.recovery_max_messages;
            if (s->acks) {
                /* Recovered messages wait for their acks like live ones:
                 * half the window for them, the rest for live messages
                 * (more missed: recovered:false, the client asks again). */
                size_t room = (size_t)b->cfg.ack_window / 2;
                if (rec->p.since >= 0 && rec->p.bsince >= 0)
                    room /= 2;
                if (room < 1)
                    room = 1;
                if (max > room)
                    max = room;
            }
            history_req_add(req, s->channel->name, rec->p.since, rec->p.since >= 0 ? max : 0);
            history_req_add(req, CP_REDIS_BROADCAST_STREAM, rec->p.bsince,
                            rec->p.bsince >= 0 ? max : 0);
            if (history_submit(b->history, req) == 0) {
                rec->waiting = 1;
                /* A stream not known yet holds its live messages until
                 * this read tells where it stands (past the window). */
                if (!s->channel->order.known)
                    s->channel->order.fetching = 1;
                if (!b->border.known)
                    b->border.fetching = 1;
                continue;
            }
            b->n.history_busy++;
            history_req_free(req);
        }
        greet(b, s, NULL); /* no position, recovered:false: never a silent wait */
    }
}

void streams_history_done(bridge *b, history_req *req)
{
    if (req->what == HISTORY_GREET) {
        if (b->ctx) {
            /* Its streams' positions count even if the session left. */
            const char *name = req->reads[0].stream;
            channel *ch = channel_find(b, name, strlen(name));
            if (ch)
                learn_base(b, ch, &req->reads[0]);
            learn_base(b, NULL, &req->reads[1]);
        }
        session *s = NULL;
        HASH_FIND(hh, b->by_id, &req->session_id, sizeof req->session_id, s);
        if (s && s->rec && s->rec->waiting && s->state == SESSION_OPEN)
            greet(b, s, req);
    } else if (b->ctx) {
        fill_done(b, req);
    }
    history_req_free(req);
}

void streams_render_metrics(bridge *b, cp_buf *out)
{
    cp_metric_family(out, "cloudpush_bridge_recovery_total", "counter",
                     "Sessions that asked to recover (since/bsince), by outcome: recovered, "
                     "not_recovered (epoch changed or no longer retained), failed (Redis).");
    static const char *const outcome[] = {"result=\"recovered\"", "result=\"not_recovered\"",
                                          "result=\"failed\""};
    for (int i = 0; i < 3; i++)
        cp_metric_sample(out, "cloudpush_bridge_recovery_total", outcome[i],
                         (double)b->n.recoveries[i]);
    cp_metric_simple(out, "cloudpush_bridge_recovery_messages_total", "counter",
                     "Messages sent to sessions from the history by recoveries.",
                     (double)b->n.recovered_messages);
    cp_metric_simple(out, "cloudpush_bridge_gap_total", "counter",
                     "Gaps reported to sessions (ERROR \"gap: ...\"): offsets neither the bus "
                     "nor the history could deliver.",
                     (double)b->n.gaps);
    cp_metric_simple(out, "cloudpush_bridge_gap_messages_total", "counter",
                     "Offsets the reported gaps spanned.", (double)b->n.gap_messages);
    cp_metric_simple(out, "cloudpush_bridge_gap_fetches_total", "counter",
                     "History reads for a gap in a stream.", (double)b->n.gap_fetches);
    cp_metric_simple(out, "cloudpush_bridge_gap_filled_total", "counter",
                     "Messages of a gap delivered from the history.", (double)b->n.gap_filled);
    cp_metric_simple(out, "cloudpush_bridge_reorder_spilled_total", "counter",
                     "Stream messages let go because their stream's reorder buffer was full "
                     "(--reorder-max-messages) behind a gap; the gap's history read delivers "
                     "them.",
                     (double)b->n.spilled);
    cp_metric_simple(out, "cloudpush_bridge_duplicates_dropped_total", "counter",
                     "Stream messages dropped because their offset was delivered already.",
                     (double)b->n.duplicates);
    cp_metric_simple(out, "cloudpush_bridge_recovery_duplicates_dropped_total", "counter",
                     "Live messages not sent to a session because its recovery or greeting "
                     "covered them.",
                     (double)b->n.session_duplicates);
    cp_metric_simple(out, "cloudpush_bridge_catch_up_total", "counter",
                     "History reads after a broker reconnect (one per stream and round).",
                     (double)b->n.catch_ups);
    cp_metric_simple(out, "cloudpush_bridge_catch_up_messages_total", "counter",
                     "Messages the broker lost that catch-ups delivered from the history.",
                     (double)b->n.catch_up_messages);
    cp_metric_simple(out, "cloudpush_bridge_catch_up_retries_total", "counter",
                     "Catch-ups read again after one could not read the history (Redis down, "
                     "queue full), with the reconnect backoff.",
                     (double)b->n.catch_up_retries);
    cp_metric_family(out, "cloudpush_bridge_unconfirmed_offsets_total", "counter",
                     "Messages whose offset was beyond --history-size past their stream "
                     "(bogus, e.g. a d/ topic without the broker ACL): rejected because the "
                     "history does not have them, or delivered without moving the stream when "
                     "it could not be asked.");
    cp_metric_sample(out, "cloudpush_bridge_unconfirmed_offsets_total", "result=\"rejected\"",
                     (double)b->n.beyond_rejected);
    cp_metric_sample(out, "cloudpush_bridge_unconfirmed_offsets_total", "result=\"delivered\"",
                     (double)b->n.beyond_delivered);
    cp_metric_simple(out, "cloudpush_bridge_history_busy_total", "counter",
                     "History reads not made because the history queue was full.",
                     (double)b->n.history_busy);
    if (b->history)
        cp_metric_simple(out, "cloudpush_bridge_history_healthy", "gauge",
                         "1 while the last history read reached Redis.",
                         history_healthy(b->history));
}
