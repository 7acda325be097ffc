/* MQTT topic names of the bus (see docs/topics.md). */
#ifndef CP_TOPICS_H
#define CP_TOPICS_H

#include <stddef.h>

typedef enum {
    CP_TOPIC_UNKNOWN = 0,
    CP_TOPIC_CLIENT,    /* <prefix>/client/<channelId> */
    CP_TOPIC_BROADCAST, /* <prefix>/broadcast */
    CP_TOPIC_UPSTREAM,  /* <prefix>/upstream/<channelId> */
    CP_TOPIC_ACK,       /* <prefix>/ack/<channelId> */
    CP_TOPIC_PRESENCE,  /* <prefix>/presence/<channelId> */
    CP_TOPIC_SESSION_CONTROL, /* <prefix>/control/session/<channelId>: bridges only */
    /* Delivery topics: only sequenced envelopes (offset and epoch filled by
     * the entry that stored them, docs/design-delivery.md); bridges
     * subscribe here, services publish on client/ and broadcast. */
    CP_TOPIC_DELIVER_CLIENT,    /* <prefix>/d/client/<channelId> */
    CP_TOPIC_DELIVER_BROADCAST, /* <prefix>/d/broadcast */
    /* The broker's identity, a retained message the sequencers agree on
     * (one leader per broker, however its URL is spelt): bridges only;
     * links between brokers must not carry it. */
    CP_TOPIC_BROKER_ID, /* <prefix>/sequencer/broker */
    /* Many sequenced envelopes in one message (common/dbatch.h): every
     * bridge worker subscribes and keeps the items of its channels. */
    CP_TOPIC_DELIVER_BATCH, /* <prefix>/d/batch */
    /* A new sequencer leader says it took over: what its predecessor
     * stored but may not have published is in the history, and every
     * bridge reads its streams from where it stands (common/sequencer.h). */
    CP_TOPIC_DELIVER_RESYNC, /* <prefix>/d/resync */
} cp_topic_kind;
#define CP_TOPIC__LAST CP_TOPIC_DELIVER_RESYNC

/* Longest topic we build: prefix (<=64) + "/control/session/" + channel id
 * (<=128). */
#define CP_TOPIC_MAX 256
#define CP_PREFIX_MAX 64

/* Writes <prefix>/<kind>[/<channel>] into out; returns length or -1. */
int cp_topic_build(char *out, size_t cap, const char *prefix, cp_topic_kind kind,
                   const char *channel_id);

/* Classifies a topic; for per-channel kinds, channel and channel_len point into
 * topic. Returns CP_TOPIC_UNKNOWN for anything else. */
cp_topic_kind cp_topic_parse(const char *prefix, const char *topic, size_t len,
                             const char **channel, size_t *channel_len);

/* A prefix is 1..64 characters of [A-Za-z0-9._-] and '/' separated levels,
 * with no wildcard, no leading/trailing or double '/'. */
int cp_topic_prefix_valid(const char *prefix);

#endif
