/* Plain HTTP on the WebSocket port: health, metrics and JSON errors. */
#include <stdio.h>
#include <string.h>

#include "bridge.h"
#include "ids.h"
#include "lwshttp.h"
#include "metrics.h"
#include "procmetrics.h"
#include "workers.h"

#define NAME_OF(e, name) name,
static const char *const end_names[END__COUNT] = {END_REASONS(NAME_OF)};
static const char *const reject_names[REJECT__COUNT] = {REJECT_REASONS(NAME_OF)};
static const char *const in_names[IN__COUNT] = {IN_KINDS(NAME_OF)};
#undef NAME_OF

const char *end_reason_name(end_reason r) { return r < END__COUNT ? end_names[r] : "error"; }
const char *reject_reason_name(reject_reason r)
{
    return r < REJECT__COUNT ? reject_names[r] : "error";
}

/* What every worker renders of its own; the bridge-wide figures (the open
 * sessions, Redis) are added by whoever answers (render_bridge). */
void http_render_local_metrics(bridge *b, cp_buf *out, int with_process)
{
    char labels[96];
    cp_metric_simple(out, "cloudpush_bridge_sse_connections", "gauge",
                     "Open sessions over Server-Sent Events (GET /sse; also counted in "
                     "cloudpush_bridge_connections).",
                     b->sse_sessions);
    cp_metric_simple(out, "cloudpush_bridge_channels", "gauge",
                     "Channel ids with at least one session here (one MQTT subscription each).",
                     b->channel_count);
    cp_metric_simple(out, "cloudpush_bridge_connections_accepted_total", "counter",
                     "WebSocket upgrades accepted.", (double)b->n.accepted);
    cp_metric_simple(out, "cloudpush_bridge_handovers_total", "counter",
                     "Clients a balancer on this host handed over (adopt.c).",
                     (double)b->adopt.adopted);
    cp_metric_simple(out, "cloudpush_bridge_handovers_dropped_total", "counter",
                     "Hand-overs that brought no usable client (closed).",
                     (double)b->adopt.dropped);
    cp_metric_simple(out, "cloudpush_bridge_io_uring", "gauge",
                     "1 while sessions' writes go out through io_uring (--io-uring); with "
                     "--workers, summed: the workers that do.",
                     b->ring != NULL);
    cp_metric_simple(out, "cloudpush_bridge_ring_submissions_total", "counter",
                     "io_uring submissions of session writes (one system call each).",
                     (double)b->n.ring_submissions);
    cp_metric_simple(out, "cloudpush_bridge_ring_sends_total", "counter",
                     "Session writes those submissions carried.", (double)b->n.ring_sends);
    cp_metric_simple(out, "cloudpush_bridge_ring_short_total", "counter",
                     "Of those, writes the socket took only in part (a full socket: lws "
                     "writes the rest when it drains).",
                     (double)b->n.ring_short);
    cp_metric_simple(out, "cloudpush_bridge_ring_failures_total", "counter",
                     "Submissions io_uring itself failed (their writes went through lws).",
                     (double)b->n.ring_failures);
    cp_metric_simple(out, "cloudpush_bridge_mqtt_connected", "gauge",
                     "1 while the MQTT broker connection is up.", cp_bus_is_connected(b->bus));
    cp_metric_family(out, "cloudpush_bridge_messages_in_total", "counter",
                     "Messages received from clients, by type.");
    for (int i = 0; i < IN__COUNT; i++) {
        snprintf(labels, sizeof labels, "type=\"%s\"", in_names[i]);
        cp_metric_sample(out, "cloudpush_bridge_messages_in_total", labels, (double)b->n.in[i]);
    }
    cp_metric_family(out, "cloudpush_bridge_messages_out_total", "counter",
                     "Messages written to clients, by msgType.");
    for (int i = 0; i < CP_MSG__COUNT; i++) {
        snprintf(labels, sizeof labels, "type=\"%s\"", cp_msg_type_name(i + CP_MSG_ERROR));
        cp_metric_sample(out, "cloudpush_bridge_messages_out_total", labels, (double)b->n.out[i]);
    }
    cp_metric_family(out, "cloudpush_bridge_closes_total", "counter",
                     "Sessions ended, by reason.");
    for (int i = 0; i < END__COUNT; i++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", end_names[i]);
        cp_metric_sample(out, "cloudpush_bridge_closes_total", labels, (double)b->n.ends[i]);
    }
    cp_metric_family(out, "cloudpush_bridge_handshakes_rejected_total", "counter",
                     "WebSocket upgrades refused, by reason.");
    for (int i = 0; i < REJECT__COUNT; i++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", reject_names[i]);
        cp_metric_sample(out, "cloudpush_bridge_handshakes_rejected_total", labels,
                         (double)b->n.rejects[i]);
    }
    cp_metric_family(out, "cloudpush_bridge_bus_messages_total", "counter",
                     "Messages received from the bus, by topic kind.");
    cp_metric_sample(out, "cloudpush_bridge_bus_messages_total", "kind=\"client\"",
                     (double)b->n.bus_in_client);
    cp_metric_sample(out, "cloudpush_bridge_bus_messages_total", "kind=\"broadcast\"",
                     (double)b->n.bus_in_broadcast);
    cp_metric_sample(out, "cloudpush_bridge_bus_messages_total", "kind=\"batch\"",
                     (double)b->n.bus_in_batch);
    cp_metric_sample(out, "cloudpush_bridge_bus_messages_total", "kind=\"resync\"",
                     (double)b->n.bus_in_resync);
    cp_metric_family(out, "cloudpush_bridge_batch_items_total", "counter",
                     "Envelopes read from delivery batches (d/batch): for a channel with a session "
                     "here, or for channels held elsewhere (skipped).");
    cp_metric_sample(out, "cloudpush_bridge_batch_items_total", "where=\"here\"",
                     (double)(b->n.batch_items - b->n.batch_items_elsewhere));
    cp_metric_sample(out, "cloudpush_bridge_batch_items_total", "where=\"elsewhere\"",
                     (double)b->n.batch_items_elsewhere);
    cp_metric_simple(out, "cloudpush_bridge_bus_invalid_total", "counter",
                     "Bus messages dropped because they were not valid envelopes.",
                     (double)b->n.bus_invalid);
    cp_metric_simple(out, "cloudpush_bridge_bus_too_big_total", "counter",
                     "Bus messages dropped because they are over --max-message-bytes.",
                     (double)b->n.bus_too_big);
    cp_metric_simple(out, "cloudpush_bridge_bus_no_session_total", "counter",
                     "Client-topic messages that arrived after the channel's last session left.",
                     (double)b->n.bus_no_session);
    cp_metric_simple(out, "cloudpush_bridge_deliveries_total", "counter",
                     "Bus messages queued to sessions (one per recipient session).",
                     (double)b->n.deliveries);
    cp_metric_simple(out, "cloudpush_bridge_rate_limited_total", "counter",
                     "Client messages refused by the per-session rate limit.",
                     (double)b->n.rate_limited);
    cp_metric_simple(out, "cloudpush_bridge_address_limited_total", "counter",
                     "Upgrades refused by the per-address limits (429).",
                     (double)b->n.ip_limited);
    cp_metric_simple(out, "cloudpush_bridge_replaced_by_other_bridge_total", "counter",
                     "Sessions closed (4003) because a newer session of their channelId opened "
                     "on another bridge (--single-session).",
                     (double)b->n.replaced_remote);
    cp_metric_simple(out, "cloudpush_bridge_token_refreshes_total", "counter",
                     "Session tokens refreshed over the connection.",
                     (double)b->n.token_refreshes);
    cp_metric_simple(out, "cloudpush_bridge_push_forbidden_total", "counter",
                     "Client pushes refused: a recipient the token's pub claim does not name.",
                     (double)b->n.push_forbidden);
    cp_metric_simple(out, "cloudpush_bridge_subscribe_failures_total", "counter",
                     "Channel subscriptions the broker refused or that failed.",
                     (double)b->n.subscribe_failed);
    cp_metric_simple(out, "cloudpush_bridge_subscribe_requests_total", "counter",
                     "SUBSCRIBE packets sent (each carries the channels of one loop pass).",
                     (double)b->n.subscribe_batches);
    cp_metric_simple(out, "cloudpush_bridge_unsubscribe_requests_total", "counter",
                     "UNSUBSCRIBE packets sent (each carries the channels that lost their last "
                     "session in one loop pass).",
                     (double)b->n.unsubscribe_batches);
    cp_metric_simple(out, "cloudpush_bridge_inbox_depth", "gauge",
                     "Bus messages waiting for the service thread.",
                     (double)inbox_depth(&b->inbox));
    cp_bus_stats st;
    cp_bus_get_stats(b->bus, &st);
    cp_metric_family(out, "cloudpush_bridge_bus_publish_total", "counter",
                     "Publishes to the bus, by outcome.");
    cp_metric_sample(out, "cloudpush_bridge_bus_publish_total", "result=\"ok\"",
                     (double)st.publish_ok);
    cp_metric_sample(out, "cloudpush_bridge_bus_publish_total", "result=\"failed\"",
                     (double)st.publish_failed);
    cp_metric_sample(out, "cloudpush_bridge_bus_publish_total", "result=\"rejected\"",
                     (double)st.publish_rejected);
    cp_metric_simple(out, "cloudpush_bridge_mqtt_connects_total", "counter",
                     "Successful MQTT (re)connections.", (double)st.connects);
    cp_histogram_render(out, "cloudpush_bridge_delivery_seconds",
                        "Time from a message's arrival from the bus to its write to a client "
                        "socket, per recipient.",
                        &b->delivery_latency);
    cp_metric_simple(out, "cloudpush_bridge_uptime_seconds", "gauge",
                     "Seconds since the bridge started.",
                     (double)(cp_mono_ms() - b->started_ms) / 1000.0);
    /* Acks and drain (issue 13). */
    acks_render_metrics(b, out);
    streams_render_metrics(b, out);
    if (b->sequencer)
        cp_sequencer_render_metrics(b->sequencer, out);
    cp_metric_simple(out, "cloudpush_bridge_draining", "gauge",
                     "1 while the bridge drains (SIGTERM), 2 while it stops at once.",
                     b->draining);
    cp_metric_simple(out, "cloudpush_bridge_drain_reconnects_total", "counter",
                     "RECONNECT messages sent to sessions by a drain.",
                     (double)b->n.drain_reconnects);
    if (with_process)
        cp_metrics_process(out, "bridge");
}

/* 1 / 0 while the bridge's registry writes to Redis succeed, -1: no --redis. */
static int redis_health(bridge *b)
{
    if (b->shared)
        return atomic_load(&b->shared->redis_healthy);
    return b->registry ? registry_healthy(b->registry) : -1;
}

static void render_bridge(bridge *b, cp_buf *out)
{
    cp_buf local;
    cp_buf_init(&local);
    http_render_local_metrics(b, &local, 1);
    if (b->shared) {
        workers_refresh_others(b);
        workers_render_metrics(b, &local, out);
        if (local.failed)
            out->failed = 1;
    } else {
        cp_buf_append(out, local.data, local.len);
    }
    cp_buf_free(&local);
    cp_metric_simple(out, "cloudpush_bridge_connections", "gauge",
                     "Open sessions (WebSocket and Server-Sent Events).",
                     workers_sessions_total(b));
    int redis = redis_health(b);
    if (redis >= 0)
        cp_metric_simple(out, "cloudpush_bridge_redis_healthy", "gauge",
                         "1 while the last registry write to Redis succeeded.", redis);
}

int http_serve(bridge *b, struct lws *wsi, const char *path)
{
    if (strcmp(path, "/healthz") == 0) {
        char body[512];
        int bus = cp_bus_is_connected(b->bus);
        /* With --sequencer, service messages reach this bridge's clients
         * only through a sequencer: its subscription counts. */
        int seq = !b->sequencer || cp_sequencer_ready(b->sequencer);
        int up = bus && seq;
        unsigned channels = b->channel_count;
        char workers[64] = "";
        if (b->shared) {
            /* Whichever worker answers speaks for the bridge: every worker
             * must be running and connected. */
            int wup, running;
            workers_health(b, &wup, &running, &channels);
            up = up && wup == b->shared->count;
            snprintf(workers, sizeof workers, ",\"workers\":%d,\"workers_up\":%d,\"worker\":%d",
                     b->shared->count, wup, b->worker);
        }
        const char *status = b->shutting_down ? "shutting_down" : up ? "ok" : "unavailable";
        int rh = redis_health(b);
        const char *redis = rh < 0 ? "null" : rh ? "true" : "false";
        snprintf(body, sizeof body,
                 "{\"status\":\"%s\",\"id\":\"%s\",\"mqtt\":%s,\"sequencer\":%s,"
                 "\"redis\":%s,\"connections\":%u,\"channels\":%u%s}",
                 status, b->cfg.bridge_id, bus ? "true" : "false",
                 !b->sequencer ? "null" : seq ? "true" : "false", redis,
                 workers_sessions_total(b), channels, workers);
        return cp_lws_reply_json(wsi, up && !b->shutting_down ? 200 : 503, body);
    }
    if (strcmp(path, "/livez") == 0)
        /* Answered by the service thread itself, so a stuck loop fails it;
         * never depends on the broker or Redis (a broker outage must not
         * get every bridge restarted). */
        return cp_lws_reply_json(wsi, 200, "{\"status\":\"alive\"}");
    if (strcmp(path, "/readyz") == 0) {
        /* Can serve a new client now: bus connected (and the sequencer's
         * subscription made) and not draining. */
        int up = cp_bus_is_connected(b->bus) &&
                 (!b->sequencer || cp_sequencer_ready(b->sequencer));
        int ready = up && !b->shutting_down;
        char body[160];
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"mqtt\":%s,\"draining\":%s}",
                 ready ? "ready" : "unavailable", up ? "true" : "false",
                 b->shutting_down ? "true" : "false");
        return cp_lws_reply_json(wsi, ready ? 200 : 503, body);
    }
    if (strcmp(path, "/metrics") == 0) {
        cp_buf out;
        cp_buf_init(&out);
        render_bridge(b, &out);
        int rc = out.failed ? -1
                            : cp_lws_reply(wsi, 200, "text/plain; version=0.0.4; charset=utf-8",
                                    out.data, out.len);
        cp_buf_free(&out);
        return rc;
    }
    return cp_lws_reply_error(wsi, 426, "upgrade_required",
                            "this is a WebSocket endpoint: connect with ws://HOST:PORT/"
                            "?channelId=ID, or GET /sse?channelId=ID for Server-Sent Events "
                            "(GET /healthz, /livez, /readyz and /metrics are plain HTTP)");
}
