/* Presence events: one message per session connect/disconnect on
 * <prefix>/presence/<channelId> (unless --presence-events=false), at
 * --presence-qos: 0 by default, because a QoS 1 event's acknowledgement
 * through Paho's receive thread and the broker costs as much again
 * (docs/benchmarks.md item 6). */

#include "bridge.h"
#include "ids.h"
#include "log.h"

void presence_publish(bridge *b, session *s, int connected, end_reason why)
{
    if (b->bus_stopped || !s->channel || !b->cfg.presence_events)
        return;
    char topic[CP_TOPIC_MAX];
    if (cp_topic_build(topic, sizeof topic, b->cfg.prefix, CP_TOPIC_PRESENCE, s->channel->name) <
        0)
        return;
    size_t sid_len;
    const char *sid = session_id_of(s, &sid_len);
    /* Sessions of this channel left in this process after the event. With
     * --workers each worker counts its own (a channel's sessions may be
     * spread over them), so the event names the worker too. */
    uint32_t left = s->channel->session_count - (connected ? 0 : 1);
    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    cp_buf_printf(sb,
                  "{\"event\":\"%s\",\"channelId\":\"%s\",\"sessionId\":\"%.*s\",\"bridge\":\"%s\","
                  "\"activeTime\":%lld,\"sessions\":%u",
                  connected ? "connect" : "disconnect", s->channel->name, (int)sid_len, sid,
                  b->cfg.bridge_id, (long long)cp_now_ms(), left);
    if (b->worker > 0)
        cp_buf_printf(sb, ",\"worker\":%d", b->worker);
    if (!connected)
        cp_buf_printf(sb, ",\"reason\":\"%s\"", end_reason_name(why));
    cp_buf_putc(sb, '}');
    if (sb->failed)
        return;
    int rc = cp_bus_publish(b->bus, topic, sb->data, sb->len, (int)b->cfg.presence_qos, NULL);
    if (rc != 0)
        log_warn("presence publish on %s refused: %s", topic, cp_bus_strerror(rc));
}
