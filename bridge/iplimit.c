#include "iplimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "bridge.h"
#include "commalist.h"
#include "ratelimit.h"
#include "ids.h"
#include "workers.h"

struct ip_entry {
    UT_hash_handle hh;
    unsigned sessions;
    cp_bucket bucket; /* new connections */
    char ip[64];
};

static int trusted(const char *list, const char *ip)
{
    size_t n = strlen(ip);
    const char *item;
    size_t len;
    for (const char *p = list; cp_comma_next(&p, &item, &len);) {
        while (len && *item == ' ') { /* "a, b" */
            item++;
            len--;
        }
        if (len == n && strncmp(item, ip, n) == 0)
            return 1;
    }
    return 0;
}

static int limits_on(const bridge *b)
{
    return b->cfg.max_connections_per_ip || b->cfg.connect_rate_per_ip;
}

void iplimit_client_address(bridge *b, struct lws *wsi, char *out, size_t cap)
{
    out[0] = '\0';
    /* Only the limits read it: a getpeername() per connect saved. */
    if (!limits_on(b))
        return;
    lws_get_peer_simple(wsi, out, cap);
    /* lws reports IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d */
    if (strncmp(out, "::ffff:", 7) == 0)
        memmove(out, out + 7, strlen(out + 7) + 1);
    if (!*b->cfg.trusted_proxies || !trusted(b->cfg.trusted_proxies, out))
        return;
    char xff[256];
    if (lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) <= 0)
        return;
    /* The rightmost entry is the one our trusted proxy added. */
    char *last = strrchr(xff, ',');
    char *v = last ? last + 1 : xff;
    while (*v == ' ')
        v++;
    if (*v && strlen(v) < cap)
        snprintf(out, cap, "%s", v);
}

static ip_entry *find(bridge *b, const char *ip)
{
    ip_entry *e = NULL;
    HASH_FIND_STR(b->ips, ip, e);
    return e;
}

static ip_entry *get(bridge *b, const char *ip)
{
    ip_entry *e = find(b, ip);
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->ip, sizeof e->ip, "%s", ip);
    cp_bucket_init(&e->bucket, (double)b->cfg.connect_burst_per_ip, cp_mono_ms());
    HASH_ADD_STR(b->ips, ip, e);
    return e;
}

int iplimit_admit(bridge *b, const char *ip, const char **code, const char **msg)
{
    if (!limits_on(b))
        return 0;
    if (b->shared) {
        /* With workers the limits are the bridge's: the shared table. */
        int over_sessions;
        if (workers_ip_admit(b, ip, b->cfg.max_connections_per_ip,
                             (double)b->cfg.connect_rate_per_ip,
                             (double)b->cfg.connect_burst_per_ip, &over_sessions))
            return 0;
        *code = over_sessions ? "too_many_connections_from_address" : "connection_rate_exceeded";
        *msg = over_sessions ? "this address holds as many connections as it may"
                             : "this address opens connections too fast; retry in a second";
        b->n.ip_limited++;
        return 429;
    }
    ip_entry *e = get(b, ip);
    if (!e)
        return 0;
    if (b->cfg.max_connections_per_ip && e->sessions >= (unsigned)b->cfg.max_connections_per_ip) {
        *code = "too_many_connections_from_address";
        *msg = "this address holds as many connections as it may";
        b->n.ip_limited++;
        return 429;
    }
    if (b->cfg.connect_rate_per_ip) {
        if (!cp_bucket_take(&e->bucket, (double)b->cfg.connect_rate_per_ip,
                            (double)b->cfg.connect_burst_per_ip, cp_mono_ms())) {
            *code = "connection_rate_exceeded";
            *msg = "this address opens connections too fast; retry in a second";
            b->n.ip_limited++;
            return 429;
        }
    }
    return 0;
}

ip_entry *iplimit_attach(bridge *b, const char *ip)
{
    if (!limits_on(b))
        return NULL;
    ip_entry *e = get(b, ip);
    if (e)
        e->sessions++;
    if (e && b->shared)
        workers_ip_attach(b, ip);
    return e;
}

void iplimit_detach(bridge *b, ip_entry *e)
{
    if (e && e->sessions) {
        e->sessions--;
        if (b->shared)
            workers_ip_detach(b, e->ip);
    }
}

void iplimit_prune(bridge *b)
{
    int64_t now = cp_mono_ms();
    if (b->shared && limits_on(b))
        workers_ip_prune(b, (double)b->cfg.connect_rate_per_ip,
                         (double)b->cfg.connect_burst_per_ip);
    ip_entry *e, *tmp;
    HASH_ITER(hh, b->ips, e, tmp)
    {
        if (e->sessions)
            continue;
        double burst = (double)b->cfg.connect_burst_per_ip;
        cp_bucket_refill(&e->bucket, (double)b->cfg.connect_rate_per_ip, burst, now);
        if (e->bucket.tokens >= burst) {
            HASH_DEL(b->ips, e);
            free(e);
        }
    }
}

void iplimit_clear(bridge *b)
{
    ip_entry *e, *tmp;
    HASH_ITER(hh, b->ips, e, tmp)
    {
        HASH_DEL(b->ips, e);
        free(e);
    }
}
