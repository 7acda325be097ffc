#include "topics.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[] = {NULL,       "client",          "broadcast",
                                         "upstream", "ack",             "presence",
                                         "control/session", "d/client", "d/broadcast",
                                         "sequencer/broker", "d/batch", "d/resync"};

static int has_channel(cp_topic_kind kind)
{
    return kind != CP_TOPIC_BROADCAST && kind != CP_TOPIC_DELIVER_BROADCAST &&
           kind != CP_TOPIC_BROKER_ID && kind != CP_TOPIC_DELIVER_BATCH &&
           kind != CP_TOPIC_DELIVER_RESYNC;
}

int cp_topic_build(char *out, size_t cap, const char *prefix, cp_topic_kind kind,
                   const char *channel_id)
{
    if (kind <= CP_TOPIC_UNKNOWN || kind > CP_TOPIC__LAST)
        return -1;
    int n;
    if (!has_channel(kind))
        n = snprintf(out, cap, "%s/%s", prefix, kind_names[kind]);
    else
        n = snprintf(out, cap, "%s/%s/%s", prefix, kind_names[kind], channel_id);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

cp_topic_kind cp_topic_parse(const char *prefix, const char *topic, size_t len,
                             const char **channel, size_t *channel_len)
{
    size_t plen = strlen(prefix);
    *channel = NULL;
    *channel_len = 0;
    if (len <= plen + 1 || memcmp(topic, prefix, plen) != 0 || topic[plen] != '/')
        return CP_TOPIC_UNKNOWN;
    const char *rest = topic + plen + 1;
    size_t rlen = len - plen - 1;
    for (int k = CP_TOPIC_CLIENT; k <= CP_TOPIC__LAST; k++) {
        size_t klen = strlen(kind_names[k]);
        if (rlen < klen || memcmp(rest, kind_names[k], klen) != 0)
            continue;
        if (!has_channel((cp_topic_kind)k)) {
            if (rlen == klen)
                return (cp_topic_kind)k;
            continue;
        }
        if (rlen <= klen + 1 || rest[klen] != '/')
            continue;
        *channel = rest + klen + 1;
        *channel_len = rlen - klen - 1;
        return (cp_topic_kind)k;
    }
    return CP_TOPIC_UNKNOWN;
}

int cp_topic_prefix_valid(const char *prefix)
{
    size_t len = strlen(prefix);
    if (len == 0 || len > CP_PREFIX_MAX || prefix[0] == '/' || prefix[len - 1] == '/')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = prefix[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-' || (c == '/' && prefix[i + 1] != '/');
        if (!ok)
            return 0;
    }
    return 1;
}
