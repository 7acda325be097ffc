#include "brokerid.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "log.h"
#include "topics.h"

#define ID_MAX 40          /* [0-9a-z-]: ours are 32 hex digits */
#define CLAIM_GRACE_MS 500 /* after the SUBACK, a retained id arrives first */

struct cp_broker_id {
    cp_broker_id_config cfg;
    char topic[CP_TOPIC_MAX];
    char url_hash[17];
    char known[ID_MAX + 1]; /* owner: the id in use ("" until known, or the URL names it) */
    cp_bus_op sub_op, claim_op;
    int granted[1];
    pthread_mutex_t lock;
    /* under lock: what Paho's threads tell the owner */
    char heard[ID_MAX + 1]; /* the id the broker last sent */
    int heard_new;          /* heard is news */
    int subscribe_due;      /* (re)connected */
    int refused;            /* the topic or the claim was refused: the URL names the lease */
    int64_t claim_at_ms;    /* claim then unless an id is heard first (0: none due) */
};

static void tell(cp_broker_id *id)
{
    if (id->cfg.wake)
        id->cfg.wake(id->cfg.ud);
}

cp_broker_id *cp_broker_id_new(const cp_broker_id_config *cfg)
{
    cp_broker_id *id = calloc(1, sizeof *id);
    if (!id)
        return NULL;
    id->cfg = *cfg;
    id->cfg.prefix = id->cfg.url = NULL; /* not kept: copied below */
    if (cp_topic_build(id->topic, sizeof id->topic, cfg->prefix, CP_TOPIC_BROKER_ID, NULL) < 0) {
        free(id);
        return NULL;
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *c = cfg->url ? cfg->url : ""; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    snprintf(id->url_hash, sizeof id->url_hash, "%016llx", (unsigned long long)h);
    pthread_mutex_init(&id->lock, NULL);
    return id;
}

void cp_broker_id_free(cp_broker_id *id)
{
    if (!id)
        return;
    pthread_mutex_destroy(&id->lock);
    free(id);
}

void cp_broker_id_connected(cp_broker_id *id)
{
    pthread_mutex_lock(&id->lock);
    id->subscribe_due = 1;
    pthread_mutex_unlock(&id->lock);
    tell(id);
}

/* The retained id (at subscribing) or a new claim. An empty or malformed
 * payload counts as none: the id is claimed again. */
int cp_broker_id_offer(cp_broker_id *id, char *topic, size_t topic_len, MQTTAsync_message *msg)
{
    if (topic_len != strlen(id->topic) || memcmp(topic, id->topic, topic_len) != 0)
        return 0;
    char got[ID_MAX + 1];
    size_t n = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    int valid = n > 0 && n <= ID_MAX;
    for (size_t i = 0; valid && i < n; i++) {
        char c = ((const char *)msg->payload)[i];
        valid = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-';
    }
    if (valid) {
        memcpy(got, msg->payload, n);
        got[n] = '\0';
    }
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    pthread_mutex_lock(&id->lock);
    if (valid) {
        memcpy(id->heard, got, n + 1);
        id->heard_new = 1;
        id->claim_at_ms = 0;
    } else {
        id->claim_at_ms = cp_mono_ms();
    }
    pthread_mutex_unlock(&id->lock);
    tell(id);
    return 1;
}

static void refused(cp_broker_id *id)
{
    pthread_mutex_lock(&id->lock);
    id->refused = 1;
    pthread_mutex_unlock(&id->lock);
    tell(id);
}

static void subscribed(cp_bus_op *op, int ok, int code)
{
    cp_broker_id *id = (cp_broker_id *)((char *)op - offsetof(cp_broker_id, sub_op));
    if (!ok || id->granted[0] >= 0x80) {
        log_error("sequencer: subscribe %s refused: %s; the lease is keyed by the broker URL "
                  "(give every bridge of this broker the same --mqtt, byte for byte)",
                  id->topic, cp_bus_strerror(ok ? id->granted[0] : code));
        refused(id);
        return;
    }
    pthread_mutex_lock(&id->lock);
    if (!id->heard_new && !*id->heard)
        id->claim_at_ms = cp_mono_ms() + CLAIM_GRACE_MS;
    pthread_mutex_unlock(&id->lock);
    tell(id);
}

static void claimed(cp_bus_op *op, int ok, int code)
{
    cp_broker_id *id = (cp_broker_id *)((char *)op - offsetof(cp_broker_id, claim_op));
    if (ok)
        return; /* it comes back through the subscription */
    log_error("sequencer: the broker did not keep the identity on %s (%s); the lease is keyed "
              "by the broker URL",
              id->topic, cp_bus_strerror(code));
    refused(id);
}

int64_t cp_broker_id_due_ms(cp_broker_id *id)
{
    pthread_mutex_lock(&id->lock);
    int64_t at = id->subscribe_due || id->heard_new || id->refused ? 0
                 : id->claim_at_ms                                  ? id->claim_at_ms
                                                                    : -1;
    pthread_mutex_unlock(&id->lock);
    return at;
}

/* The lease is now named after name; 1 when that is a change. */
static int name_lease(char lease[CP_BROKER_LEASE_MAX], const char *name)
{
    char next[CP_BROKER_LEASE_MAX];
    snprintf(next, sizeof next, "sequencer:%s", name);
    if (!strcmp(next, lease))
        return 0;
    memcpy(lease, next, sizeof next);
    return 1;
}

int cp_broker_id_step(cp_broker_id *id, cp_bus *bus, char lease[CP_BROKER_LEASE_MAX],
                      char *shown, size_t shown_cap)
{
    pthread_mutex_lock(&id->lock);
    if (id->subscribe_due) {
        id->subscribe_due = 0;
        id->heard[0] = '\0';
        pthread_mutex_unlock(&id->lock);
        char *tp[1] = {id->topic};
        id->sub_op.done = subscribed;
        int rc = cp_bus_subscribe_many(bus, tp, 1, 1, &id->sub_op, id->granted);
        if (rc != 0)
            log_warn("sequencer: subscribe %s: %s (again at the next connect)", id->topic,
                     cp_bus_strerror(rc));
        return 0;
    }
    if (id->heard_new) {
        id->heard_new = 0;
        memcpy(id->known, id->heard, sizeof id->known);
        pthread_mutex_unlock(&id->lock);
        snprintf(shown, shown_cap, "%s", id->known);
        return name_lease(lease, id->known);
    }
    if (id->refused) {
        id->refused = 0;
        pthread_mutex_unlock(&id->lock);
        id->known[0] = '\0';
        snprintf(shown, shown_cap, "unknown, keyed by the URL");
        return name_lease(lease, id->url_hash);
    }
    if (!id->claim_at_ms || cp_mono_ms() < id->claim_at_ms) {
        pthread_mutex_unlock(&id->lock);
        return 0;
    }
    /* None kept (a first start, or a broker restarted without its store):
     * claim the one known, so the lease stays where it is. */
    id->claim_at_ms = 0;
    pthread_mutex_unlock(&id->lock);
    char claim[ID_MAX + 1];
    if (*id->known)
        memcpy(claim, id->known, sizeof claim);
    else
        cp_message_id(claim);
    id->claim_op.done = claimed;
    int rc = cp_bus_publish_retained(bus, id->topic, claim, strlen(claim), 1, &id->claim_op);
    if (rc != 0)
        log_warn("sequencer: claiming the broker's identity: %s (again at the next connect)",
                 cp_bus_strerror(rc));
    else
        log_info("sequencer: the broker keeps no identity; claiming %s", claim);
    return 0;
}
