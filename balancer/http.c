/* The balancer's HTTP side: route answers, the live view, health, metrics,
 * and the checks before a WebSocket upgrade is relayed. */
#include <stdio.h>
#include <string.h>

#include "balancer.h"
#include "buf.h"
#include "config.h"
#include "ids.h"
#include "log.h"
#include "lwshttp.h"
#include "metrics.h"
#include "procmetrics.h"

static int no_bridge(balancer *b, struct lws *wsi)
{
    b->n.no_bridge++;
    return cp_lws_reply_error(wsi, 503, "no_bridge",
                              "no live bridge can take a connection now; retry shortly");
}

/* Reads channelId; answers 400 itself when it is missing or invalid. */
static int channel_or_400(balancer *b, struct lws *wsi, char *id, size_t cap, int *answered)
{
    *answered = 0;
    int n = cp_lws_channel_id(wsi, id, cap);
    if (n > 0)
        return 0;
    b->n.rejected_channel++;
    *answered = 1;
    if (n == 0)
        return cp_lws_reply_error(wsi, 400, "missing_channel_id",
                                  "the channelId query parameter is required");
    return cp_lws_reply_error(wsi, 400, "invalid_channel_id",
                              "channelId must be 1-128 characters of [A-Za-z0-9._:@-]");
}

static int route(balancer *b, struct lws *wsi, int original_shape)
{
    char id[CP_CHANNEL_ID_MAX + 1];
    int answered;
    int rc = channel_or_400(b, wsi, id, sizeof id, &answered);
    if (answered)
        return rc;
    const placement_bridge *t = placement_pick(snapshot_placement(b), cp_random_u64());
    if (!t) {
        if (!original_shape)
            return no_bridge(b, wsi);
        b->n.no_bridge++;
        /* The original answered this with success:false and HTTP 200. */
        return cp_lws_reply_json(wsi, 503,
                                 "{\"success\":false,\"code\":\"-1\",\"msg\":\"no bridge "
                                 "available, try again later\",\"data\":null}");
    }
    b->n.routes++;
    cp_buf out;
    cp_buf_init(&out);
    if (original_shape) {
        /* data.address = host:port, as the original's /server/get. */
        cp_buf_puts(&out, "{\"success\":true,\"code\":\"0\",\"msg\":\"success\",\"data\":{"
                          "\"address\":");
        cp_buf_json_string(&out, t->info.url + t->url.authority_at, t->url.authority_len);
        cp_buf_puts(&out, "}}");
    } else {
        char url[VIEW_URL_MAX + CP_CHANNEL_ID_MAX + 16];
        snprintf(url, sizeof url, "%s%schannelId=%s", t->info.url,
                 strchr(t->info.url, '?') ? "&" : "?", id);
        cp_buf_puts(&out, "{\"url\":");
        cp_buf_json_string(&out, url, strlen(url));
        cp_buf_puts(&out, ",\"bridge\":");
        cp_buf_json_string(&out, t->info.id, strlen(t->info.id));
        cp_buf_putc(&out, '}');
    }
    rc = out.failed ? -1 : cp_lws_reply(wsi, 200, "application/json", out.data, out.len);
    cp_buf_free(&out);
    return rc;
}

/* GET /sse: the bridges serve Server-Sent Events themselves; the client
 * is sent (307, which EventSource follows) to the bridge a WebSocket would
 * be relayed to, with its query. The bridge checks it. */
static int sse_redirect(balancer *b, struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > CP_LWS_MAX_QUERY)
        return cp_lws_reply_error(wsi, 431, "query_too_large",
                                  "the query string is over 4608 bytes");
    if (!cp_lws_origin_allowed(wsi, b->cfg.allowed_origins)) {
        b->n.forbidden_origin++;
        return cp_lws_reply_error(wsi, 403, "forbidden_origin",
                                  "this page's Origin may not connect here (--allowed-origins)");
    }
    const placement_bridge *t = placement_pick(snapshot_placement(b), cp_random_u64());
    if (!t)
        return no_bridge(b, wsi);
    static char location[3 * CP_LWS_MAX_QUERY + 512]; /* the service thread's */
    int n = snprintf(location, sizeof location, "%s://%.*s/sse?", t->url.tls ? "https" : "http",
                     (int)t->url.authority_len, t->info.url + t->url.authority_at);
    if (n < 0 || (size_t)n >= sizeof location ||
        cp_lws_query_encoded(wsi, location + n, sizeof location - (size_t)n) < 0)
        return cp_lws_reply_error(wsi, 431, "query_too_large", "the query string is too long");
    b->n.routes++;
    return cp_lws_redirect(wsi, location, 1);
}

static int bridges(balancer *b, struct lws *wsi)
{
    const placement *p = snapshot_placement(b);
    cp_buf out;
    cp_buf_init(&out);
    cp_buf_printf(&out, "{\"redis\":%s,\"bridges\":[", b->redis_ok ? "true" : "false");
    for (size_t i = 0; i < p->count; i++) {
        const placement_bridge *pb = &p->bridges[i];
        const bridge_info *x = &pb->info;
        if (i)
            cp_buf_putc(&out, ',');
        cp_buf_puts(&out, "{\"id\":");
        cp_buf_json_string(&out, x->id, strlen(x->id));
        cp_buf_puts(&out, ",\"url\":");
        cp_buf_json_string(&out, x->url, strlen(x->url));
        cp_buf_printf(&out,
                      ",\"connections\":%u,\"capacity\":%u,\"handedOut\":%u,\"load\":%.6f,"
                      "\"draining\":%s,\"ready\":%s,\"started\":%lld,\"updated\":%lld}",
                      x->connections, x->capacity, pb->handed, placement_load_of(pb),
                      x->draining ? "true" : "false", x->not_ready ? "false" : "true",
                      (long long)x->started_ms,
                      (long long)x->updated_ms);
    }
    cp_buf_puts(&out, "]}");
    int rc = out.failed ? -1 : cp_lws_reply(wsi, 200, "application/json", out.data, out.len);
    cp_buf_free(&out);
    return rc;
}

static int metrics(balancer *b, struct lws *wsi)
{
    const placement *p = snapshot_placement(b);
    cp_buf out;
    cp_buf_init(&out);
    size_t accepting = 0, draining = 0, not_ready = 0;
    for (size_t i = 0; i < p->count; i++) {
        const bridge_info *x = &p->bridges[i].info;
        if (x->draining)
            draining++;
        else if (x->not_ready)
            not_ready++;
        else
            accepting++;
    }
    cp_metric_simple(&out, "cloudpush_balancer_bridges", "gauge",
                     "Live bridges that accept connections.", (double)accepting);
    cp_metric_simple(&out, "cloudpush_balancer_bridges_draining", "gauge",
                     "Live bridges that are draining.", (double)draining);
    cp_metric_simple(&out, "cloudpush_balancer_bridges_not_ready", "gauge",
                     "Live bridges that cannot take sessions now (starting, or their broker "
                     "is away): not offered.",
                     (double)not_ready);
    cp_metric_simple(&out, "cloudpush_balancer_redis_connected", "gauge",
                     "1 while the last view refresh from Redis succeeded.", b->redis_ok);
    cp_metric_simple(&out, "cloudpush_balancer_routes_total", "counter",
                     "Route answers (/api/v1/route, /server/get, /sse redirects).",
                     (double)b->n.routes);
    cp_metric_simple(&out, "cloudpush_balancer_no_bridge_total", "counter",
                     "Requests refused because no bridge could take a connection.",
                     (double)b->n.no_bridge);
    cp_metric_simple(&out, "cloudpush_balancer_invalid_channel_total", "counter",
                     "Requests refused for a missing or invalid channelId.",
                     (double)b->n.rejected_channel);
    /* The workers' figures join the service thread's own relays. */
    worker_slot sum;
    memset(&sum, 0, sizeof sum);
    unsigned long long backlog = 0;
    for (int i = 0; b->workers && i < b->workers->count; i++) {
        worker_slot *s = &b->workers->slot[i];
        sum.opened += atomic_load(&s->opened);
        sum.closed += atomic_load(&s->closed);
        sum.upstream_failed += atomic_load(&s->upstream_failed);
        sum.bridge_gone += atomic_load(&s->bridge_gone);
        sum.drained += atomic_load(&s->drained);
        sum.bytes_up += atomic_load(&s->bytes_up);
        sum.bytes_down += atomic_load(&s->bytes_down);
        backlog += atomic_load(&s->handed) - atomic_load(&s->taken);
    }
    cp_metric_simple(&out, "cloudpush_balancer_relays", "gauge",
                     "WebSocket connections being relayed.", (double)balancer_relays(b));
    cp_metric_simple(&out, "cloudpush_balancer_relay_workers", "gauge",
                     "Byte-relay worker processes (0: relays run in the service thread).",
                     b->workers ? b->workers->count : 0);
    cp_metric_simple(&out, "cloudpush_balancer_relay_handover_backlog", "gauge",
                     "Clients handed to a worker and not yet taken by it.", (double)backlog);
    cp_metric_simple(&out, "cloudpush_balancer_relay_bridge_gone_total", "counter",
                     "Byte relays whose bridge went away; the client got 1001 when the stream "
                     "allowed it.",
                     (double)sum.bridge_gone);
    cp_metric_simple(&out, "cloudpush_balancer_relay_drained_total", "counter",
                     "Byte relays closed with 1012 by the balancer's drain.", (double)sum.drained);
    cp_metric_simple(&out, "cloudpush_balancer_relay_capacity", "gauge",
                     "Relays this balancer takes: --max-connections, or fewer when the "
                     "descriptor limit (two per relay) bounds it.",
                     b->relay_capacity);
    cp_metric_simple(&out, "cloudpush_balancer_relay_capacity_descriptor_bound", "gauge",
                     "1 when the descriptor limit, not --max-connections, sets the relay "
                     "capacity (raise the hard limit to relay more).",
                     b->descriptor_bound);
    cp_metric_simple(&out, "cloudpush_balancer_descriptor_limited_total", "counter",
                     "Upgrades refused (503) because no descriptors were left for a relay.",
                     (double)b->n.descriptor_limited);
    cp_metric_simple(&out, "cloudpush_balancer_handed_to_bridge_total", "counter",
                     "Clients whose socket was handed to a bridge on this host (not relayed).",
                     (double)b->n.handed_to_bridge);
    cp_metric_simple(&out, "cloudpush_balancer_handed_at_accept_total", "counter",
                     "Of those, clients handed over right after accept, their request unread "
                     "by the balancer (it was whole in the socket).",
                     (double)b->n.handed_at_accept);
    cp_metric_simple(&out, "cloudpush_balancer_handover_failed_total", "counter",
                     "Hand-overs a local bridge's socket refused (the client was relayed or, "
                     "without relay workers, closed).",
                     (double)b->n.handover_failed);
    cp_metric_simple(&out, "cloudpush_balancer_forbidden_origin_total", "counter",
                     "Upgrades refused (403) for an Origin not in --allowed-origins.",
                     (double)b->n.forbidden_origin);
    cp_metric_simple(&out, "cloudpush_balancer_relays_opened_total", "counter",
                     "Relayed connections opened.", (double)(b->n.relays_opened + sum.opened));
    cp_metric_simple(&out, "cloudpush_balancer_relays_closed_total", "counter",
                     "Relayed connections closed.", (double)(b->n.relays_closed + sum.closed));
    cp_metric_simple(&out, "cloudpush_balancer_relay_upstream_failures_total", "counter",
                     "Relays whose bridge connection failed.",
                     (double)(b->n.relay_upstream_failed + sum.upstream_failed));
    cp_metric_family(&out, "cloudpush_balancer_relay_messages_total", "counter",
                     "Messages relayed message by message (wss:// and TLS only; the byte relay "
                     "does not count messages), by direction.");
    cp_metric_sample(&out, "cloudpush_balancer_relay_messages_total", "direction=\"up\"",
                     (double)b->n.messages_up);
    cp_metric_sample(&out, "cloudpush_balancer_relay_messages_total", "direction=\"down\"",
                     (double)b->n.messages_down);
    cp_metric_family(&out, "cloudpush_balancer_relay_bytes_total", "counter",
                     "Bytes relayed (payloads in the service thread's relay, everything in the "
                     "byte relay), by direction.");
    cp_metric_sample(&out, "cloudpush_balancer_relay_bytes_total", "direction=\"up\"",
                     (double)(b->n.bytes_up + sum.bytes_up));
    cp_metric_sample(&out, "cloudpush_balancer_relay_bytes_total", "direction=\"down\"",
                     (double)(b->n.bytes_down + sum.bytes_down));
    cp_metric_simple(&out, "cloudpush_balancer_dead_bridges_cleaned_total", "counter",
                     "Dead bridges whose sessions were removed from Redis.",
                     (double)view_cleaned_bridges(b->view));
    cp_metric_simple(&out, "cloudpush_balancer_uptime_seconds", "gauge", "Seconds since start.",
                     (double)(cp_mono_ms() - b->started_ms) / 1000.0);
    cp_metrics_process(&out, "balancer");
    int rc = out.failed ? -1
                        : cp_lws_reply(wsi, 200, "text/plain; version=0.0.4; charset=utf-8",
                                       out.data, out.len);
    cp_buf_free(&out);
    return rc;
}

int http_serve(balancer *b, struct lws *wsi, const char *path)
{
    if (!cp_lws_is_get(wsi))
        return cp_lws_reply_error(wsi, 405, "method_not_allowed", "only GET is served here");
    if (strcmp(path, "/api/v1/route") == 0)
        return route(b, wsi, 0);
    if (strcmp(path, "/server/get") == 0)
        return route(b, wsi, 1);
    if (strcmp(path, "/api/v1/bridges") == 0)
        return bridges(b, wsi);
    if (strcmp(path, "/sse") == 0)
        return sse_redirect(b, wsi);
    if (strcmp(path, "/metrics") == 0)
        return metrics(b, wsi);
    if (strcmp(path, "/livez") == 0)
        /* Answered by the service thread itself: a stuck loop fails it.
         * Never depends on Redis or the bridges. */
        return cp_lws_reply_json(wsi, 200, "{\"status\":\"alive\"}");
    if (strcmp(path, "/readyz") == 0) {
        /* Ready: the registry answers and some bridge can take a connection. */
        size_t usable = placement_usable(snapshot_placement(b));
        char body[160];
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"redis\":%s,\"bridges\":%zu}",
                 b->redis_ok && usable ? "ready" : "unavailable",
                 b->redis_ok ? "true" : "false", usable);
        return cp_lws_reply_json(wsi, b->redis_ok && usable ? 200 : 503, body);
    }
    if (strcmp(path, "/healthz") == 0) {
        size_t count = snapshot_placement(b)->count;
        char body[160];
        snprintf(body, sizeof body, "{\"status\":\"ok\",\"redis\":%s,\"bridges\":%zu}",
                 b->redis_ok ? "true" : "false", count);
        return cp_lws_reply_json(wsi, 200, body);
    }
    return cp_lws_reply_error(wsi, 404, "not_found",
                              "GET /api/v1/route?channelId=ID, /server/get?channelId=ID, "
                              "/api/v1/bridges, /healthz, /livez, /readyz, /metrics, /sse?channelId=ID "
                              "(a redirect to a bridge), or a WebSocket upgrade on "
                              "/ws?channelId=ID");
}

int http_confirm_upgrade(balancer *b, struct lws *wsi)
{
    char id[CP_CHANNEL_ID_MAX + 1];
    const char *code = NULL, *msg = NULL;
    int status = cp_lws_check_upgrade(wsi, &code, &msg);
    if (status) {
        cp_lws_refuse_upgrade(wsi, (unsigned)status, code, msg);
        return 1;
    }
    if (!cp_lws_origin_allowed(wsi, b->cfg.allowed_origins)) {
        b->n.forbidden_origin++;
        cp_lws_refuse_upgrade(wsi, 403, "forbidden_origin",
                              "this page's Origin may not connect here (--allowed-origins)");
        return 1;
    }
    static cp_jwt_claims claims; /* the service thread's; 1 KB off the stack */
    status = cp_lws_identify(wsi, b->server.jwt, id, sizeof id, &claims, &code, &msg);
    if (status) {
        b->n.rejected_channel++;
        cp_lws_refuse_upgrade(wsi, (unsigned)status, code, msg);
        return 1;
    }
    unsigned long long relays = balancer_relays(b);
    if ((long long)relays >= b->cfg.max_connections) {
        cp_lws_refuse_upgrade(wsi, 503, "too_many_connections",
                           "this balancer is at its connection limit");
        return 1;
    }
    /* Refused here, before the upgrade: past it the client would get a 101
     * and then a close when the bridge side cannot be opened. */
    if (relays >= b->relay_capacity) {
        b->n.descriptor_limited++;
        if (!b->capacity_logged)
            log_warn("refusing new clients: %llu relays use the descriptors the limit leaves "
                     "(%ld per process); raise the hard limit or add balancers",
                     relays, cp_fd_limit());
        b->capacity_logged = 1;
        cp_lws_refuse_upgrade(wsi, 503, "descriptor_limit",
                           "this balancer has no descriptors left for another client; retry "
                           "shortly or use another balancer");
        return 1;
    }
    b->capacity_logged = 0;
    if (placement_usable(snapshot_placement(b)))
        return 0;
    b->n.no_bridge++;
    cp_lws_refuse_upgrade(wsi, 503, "no_bridge",
                          "no live bridge can take a connection now; retry shortly");
    return 1;
}
