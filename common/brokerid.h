/* The broker's identity, which names the sequencer lease (one leader per
 * broker, docs/design-delivery.md).
 *
 * Two URLs may name one broker, so the URL cannot. The sequencers agree on a
 * random id the broker keeps as the retained message of
 * <prefix>/sequencer/broker: each subscribes to it on every connect; the
 * retained id follows the SUBACK; when none came within a grace period it
 * claims one (the id it knew, so a broker restarted without its store keeps
 * its identity, or a new random one). Two claims at once converge: every
 * subscriber sees them in the broker's order and the last one wins
 * everywhere. A broker that refuses the topic (an older ACL) or the retained
 * publish leaves the URL's hash as the name.
 *
 * Threads: cp_broker_id_connected and cp_broker_id_offer run on Paho's
 * threads and call wake; cp_broker_id_due_ms and cp_broker_id_step run on
 * the owner's thread. */
#ifndef CP_BROKERID_H
#define CP_BROKERID_H

#include <stddef.h>
#include <stdint.h>

#include <MQTTAsync.h>

#include "bus.h"

/* The lease name: "sequencer:" and 32 hex digits, or 16 for the URL hash. */
#define CP_BROKER_LEASE_MAX 64

typedef struct cp_broker_id cp_broker_id;

typedef struct {
    const char *prefix;     /* the topic is <prefix>/sequencer/broker */
    const char *url;        /* the fallback: the lease is named after its hash */
    void (*wake)(void *ud); /* news for the owner's thread (on Paho's threads) */
    void *ud;
} cp_broker_id_config;

cp_broker_id *cp_broker_id_new(const cp_broker_id_config *cfg);
void cp_broker_id_free(cp_broker_id *id);

/* Paho: the owner's connection is up (again): subscribe anew. */
void cp_broker_id_connected(cp_broker_id *id);

/* Paho: 1 when the message is the identity's (taken: topic and message are
 * freed), 0 when it is not (left to the caller). */
int cp_broker_id_offer(cp_broker_id *id, char *topic, size_t topic_len, MQTTAsync_message *msg);

/* Owner: when cp_broker_id_step is due, on cp_mono_ms()'s clock: <= now
 * (something to do now), a later time (a claim), or -1 (nothing until
 * wake). */
int64_t cp_broker_id_due_ms(cp_broker_id *id);

/* Owner: does what is due, on bus (subscribe, claim). Returns 1 and writes
 * the lease name into lease (CP_BROKER_LEASE_MAX) when it changed; shown
 * (the id, or a note that the URL names it) goes to the log. */
int cp_broker_id_step(cp_broker_id *id, cp_bus *bus, char lease[CP_BROKER_LEASE_MAX],
                      char *shown, size_t shown_cap);

#endif
