#include "redisconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cp_redis_parse_url(const char *url, cp_redis_addr *out)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    else
        return -1;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t len = (size_t)(at - pw);
        if (len >= sizeof out->password)
            return -1;
        memcpy(out->password, pw, len);
        out->password[len] = '\0';
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    const char *host_end = colon ? colon : end;
    size_t hlen = (size_t)(host_end - p);
    if (hlen == 0 || hlen >= sizeof out->host)
        return -1;
    memcpy(out->host, p, hlen);
    out->host[hlen] = '\0';
    if (colon) {
        char *e = NULL;
        errno = 0;
        long port = strtol(colon + 1, &e, 10);
        if (errno || e != end || port < 1 || port > 65535)
            return -1;
        out->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e = NULL;
        errno = 0;
        long db = strtol(slash + 1, &e, 10);
        if (errno || *e || db < 0 || db > 1000000)
            return -1;
        out->db = (int)db;
    }
    return 0;
}

static int simple_command(redisContext *c, char *err, size_t cap, const char *what, int argc,
                          const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r) {
        snprintf(err, cap, "%s: %s", what, c->errstr);
        return -1;
    }
    int bad = r->type == REDIS_REPLY_ERROR;
    if (bad)
        snprintf(err, cap, "%s: %s", what, r->str);
    freeReplyObject(r);
    return bad ? -1 : 0;
}

redisContext *cp_redis_connect(const cp_redis_addr *a, int timeout_ms, char *err, size_t cap)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    if (!c) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, cap, "%s:%d: %s", a->host, a->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (a->password[0]) {
        const char *argv[] = {"AUTH", a->password};
        if (simple_command(c, err, cap, "AUTH", 2, argv) != 0) {
            redisFree(c);
            return NULL;
        }
    }
    if (a->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", a->db);
        const char *argv[] = {"SELECT", db};
        if (simple_command(c, err, cap, "SELECT", 2, argv) != 0) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

int cp_redis_read_replies(redisContext *c, size_t n, redisReply **out, char *err, size_t cap)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply) {
            snprintf(err, cap, "%s", c->errstr[0] ? c->errstr : "connection lost");
            for (size_t j = i; out && j < n; j++)
                out[j] = NULL;
            return -1; /* the connection is unusable now */
        }
        redisReply *r = reply;
        if (r->type == REDIS_REPLY_ERROR && rc == 0) {
            snprintf(err, cap, "%s", r->str);
            rc = -1;
        }
        if (out)
            out[i] = r;
        else
            freeReplyObject(r);
    }
    return rc;
}

void cp_key_bridges(char *out, size_t cap, const char *prefix)
{
    snprintf(out, cap, "%s:bridges", prefix);
}

void cp_key_bridge(char *out, size_t cap, const char *prefix, const char *bridge_id)
{
    snprintf(out, cap, "%s:bridge:%s", prefix, bridge_id);
}

void cp_key_bridge_sessions(char *out, size_t cap, const char *prefix, const char *bridge_id)
{
    snprintf(out, cap, "%s:bridge:%s:sessions", prefix, bridge_id);
}

void cp_key_client(char *out, size_t cap, const char *prefix, const char *channel_id)
{
    snprintf(out, cap, "%s:client:%s", prefix, channel_id);
}

int cp_presence_value(char *out, size_t cap, const char *bridge_id, int64_t since_ms)
{
    int n = snprintf(out, cap, "%s %lld", bridge_id, (long long)since_ms);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int cp_presence_parse(const char *value, char *bridge_id, size_t cap, int64_t *since_ms)
{
    const char *sp = strchr(value, ' ');
    if (!sp || (size_t)(sp - value) >= cap || sp == value)
        return -1;
    memcpy(bridge_id, value, (size_t)(sp - value));
    bridge_id[sp - value] = '\0';
    char *e = NULL;
    long long v = strtoll(sp + 1, &e, 10);
    if (*e || e == sp + 1)
        return -1;
    *since_ms = v;
    return 0;
}
