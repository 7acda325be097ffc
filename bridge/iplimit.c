#include "iplimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "bridge.h"
#include "ids.h"

struct ip_entry {
    UT_hash_handle hh;
    unsigned sessions;
    double tokens;
    int64_t at_ms;
    char ip[64];
};

static int trusted(const char *list, const char *ip)
{
    size_t n = strlen(ip);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && *p == ' ') {
            p++;
            len--;
        }
        if (len == n && strncmp(p, ip, n) == 0)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

void iplimit_client_address(bridge *b, struct lws *wsi, char *out, size_t cap)
{
    out[0] = '\0';
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

static void refill(bridge *b, ip_entry *e, int64_t now)
{
    e->tokens += (double)(now - e->at_ms) * (double)b->cfg.connect_rate_per_ip / 1000.0;
    if (e->tokens > (double)b->cfg.connect_burst_per_ip)
        e->tokens = (double)b->cfg.connect_burst_per_ip;
    e->at_ms = now;
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
    e->tokens = (double)b->cfg.connect_burst_per_ip;
    e->at_ms = cp_mono_ms();
    HASH_ADD_STR(b->ips, ip, e);
    return e;
}

int iplimit_admit(bridge *b, const char *ip, const char **code, const char **msg)
{
    if (!b->cfg.max_connections_per_ip && !b->cfg.connect_rate_per_ip)
        return 0;
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
        refill(b, e, cp_mono_ms());
        if (e->tokens < 1.0) {
            *code = "connection_rate_exceeded";
            *msg = "this address opens connections too fast; retry in a second";
            b->n.ip_limited++;
            return 429;
        }
        e->tokens -= 1.0;
    }
    return 0;
}

ip_entry *iplimit_attach(bridge *b, const char *ip)
{
    if (!b->cfg.max_connections_per_ip && !b->cfg.connect_rate_per_ip)
        return NULL;
    ip_entry *e = get(b, ip);
    if (e)
        e->sessions++;
    return e;
}

void iplimit_detach(bridge *b, ip_entry *e)
{
    (void)b;
    if (e && e->sessions)
        e->sessions--;
}

void iplimit_prune(bridge *b)
{
    int64_t now = cp_mono_ms();
    ip_entry *e, *tmp;
    HASH_ITER(hh, b->ips, e, tmp)
    {
        if (e->sessions)
            continue;
        refill(b, e, now);
        if (e->tokens >= (double)b->cfg.connect_burst_per_ip) {
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
