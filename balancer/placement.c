#include "placement.h"

#include <string.h>

void placement_parse_url(const char *url, placement_url *out)
{
    memset(out, 0, sizeof *out);
    const char *sep = strstr(url, "://");
    const char *auth = sep ? sep + 3 : url;
    out->authority_at = (size_t)(auth - url);
    out->authority_len = strcspn(auth, "/");
    if (!sep)
        return;
    size_t scheme_len = (size_t)(sep - url);
    if (scheme_len == 2 && strncmp(url, "ws", 2) == 0)
        out->tls = 0;
    else if (scheme_len == 3 && strncmp(url, "wss", 3) == 0)
        out->tls = 1;
    else
        return;
    const char *p = auth, *host = auth;
    size_t host_len;
    if (*p == '[') { /* [IPv6] */
        host = ++p;
        p += strcspn(p, "]");
        if (*p != ']')
            return;
        host_len = (size_t)(p - host);
        p++;
    } else {
        p += strcspn(p, ":/");
        host_len = (size_t)(p - host);
    }
    if (host_len == 0 || host_len >= sizeof out->host)
        return;
    out->port = out->tls ? 443 : 80;
    if (*p == ':') {
        long port = 0;
        size_t digits = 0;
        for (p++; *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
            port = port * 10 + (*p - '0');
        if (!digits || port < 1 || port > 65535)
            return;
        out->port = (int)port;
    }
    if (*p && *p != '/')
        return;
    if (*p == '/' && p[1])
        out->path_at = (size_t)(p + 1 - url);
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->ok = 1;
}

void placement_load(placement *p, const bridge_info *snapshot, size_t count)
{
    if (count > PLACEMENT_MAX_BRIDGES)
        count = PLACEMENT_MAX_BRIDGES;
    for (size_t i = 0; i < count; i++) {
        placement_bridge *b = &p->bridges[i];
        b->info = snapshot[i];
        b->handed = 0;
        placement_parse_url(b->info.url, &b->url);
    }
    p->count = count;
}

int placement_can_take(const placement_bridge *b)
{
    return !b->info.draining && !b->info.not_ready &&
           (uint64_t)b->info.connections + b->handed < b->info.capacity;
}

size_t placement_usable(const placement *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->count; i++)
        n += placement_can_take(&p->bridges[i]);
    return n;
}

double placement_load_of(const placement_bridge *b)
{
    return b->info.capacity ? (double)(b->info.connections + b->handed) / b->info.capacity
                            : 1.0;
}

const placement_bridge *placement_pick(placement *p, uint64_t rnd)
{
    placement_bridge *best = NULL;
    unsigned ties = 0;
    /* Compare a/b < c/d as a*d < c*b in 64 bits: exact, no float ties. */
    uint64_t best_num = 0, best_den = 1;
    for (size_t i = 0; i < p->count; i++) {
        placement_bridge *b = &p->bridges[i];
        if (!placement_can_take(b))
            continue;
        uint64_t num = (uint64_t)b->info.connections + b->handed, den = b->info.capacity;
        if (!best || num * best_den < best_num * den) {
            best = b;
            best_num = num;
            best_den = den;
            ties = 1;
        } else if (num * best_den == best_num * den) {
            /* Reservoir sampling: each tied bridge is kept with equal odds. */
            ties++;
            rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((rnd >> 33) % ties == 0)
                best = b;
        }
    }
    if (best)
        best->handed++;
    return best;
}

void placement_unpick(placement *p, const placement_bridge *b)
{
    size_t i = (size_t)(b - p->bridges);
    if (i < p->count && p->bridges[i].handed)
        p->bridges[i].handed--;
}
