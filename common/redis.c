/* The only file with Redis commands and key names (docs/redis.md). */
#include "redis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "backoff.h"
#include "ids.h"
#include "log.h"

/* ------------------------------------------------------------ the URL */

static int copy_part(char *out, size_t cap, const char *from, size_t len)
{
    if (len >= cap)
        return -1;
    memcpy(out, from, len);
    out[len] = '\0';
    return 0;
}

int cp_redis_parse_url(const char *url, cp_redis_addr *out)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0) {
        p += 8;
    } else if (strncmp(p, "rediss://", 9) == 0) {
        p += 9;
        out->tls = 1;
    } else {
        return CP_REDIS_URL_INVALID;
    }
    /* The last '@' ends the userinfo: a password may contain '@'. */
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon && copy_part(out->username, sizeof out->username, p, (size_t)(colon - p)) != 0)
            return CP_REDIS_URL_INVALID;
        const char *pw = colon ? colon + 1 : p;
        if (copy_part(out->password, sizeof out->password, pw, (size_t)(at - pw)) != 0)
            return CP_REDIS_URL_INVALID;
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *host = p, *host_end, *after;
    if (*p == '[') { /* [v6]:port */
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close)
            return CP_REDIS_URL_INVALID;
        host = p + 1;
        host_end = close;
        after = close + 1;
        if (after != end && *after != ':')
            return CP_REDIS_URL_INVALID;
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (!host_end)
            host_end = end;
        after = host_end;
    }
    const char *colon = after < end && *after == ':' ? after : NULL;
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || copy_part(out->host, sizeof out->host, host, hlen) != 0)
        return CP_REDIS_URL_INVALID;
    if (colon) {
        char *e = NULL;
        errno = 0;
        long port = strtol(colon + 1, &e, 10);
        if (errno || e != end || e == colon + 1 || port < 1 || port > 65535)
            return CP_REDIS_URL_INVALID;
        out->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e = NULL;
        errno = 0;
        long db = strtol(slash + 1, &e, 10);
        if (errno || *e || db < 0 || db > 1000000)
            return CP_REDIS_URL_INVALID;
        out->db = (int)db;
    }
    return out->tls ? CP_REDIS_URL_TLS : CP_REDIS_URL_OK;
}

const char *cp_redis_url_strerror(int rc)
{
    switch (rc) {
    case CP_REDIS_URL_OK:
        return "valid";
    case CP_REDIS_URL_TLS:
        return "rediss:// (TLS) is not supported: this build's hiredis 0.14 has no TLS; "
               "use redis:// through a TLS tunnel (e.g. stunnel) instead";
    default:
        return "not a redis://[[username]:password@]host[:port][/db] URL";
    }
}

/* ------------------------------------------------------- the connection */

/* Room for the longest key: prefix, stream (a channel id) and messageId at
 * their bounds (64 + 128 + 128) with the separators. */
#define KEY_MAX 400

struct cp_redis {
    cp_redis_addr addr;
    cp_redis_options opt;
    char *prefix;
    char who[32];
    redisContext *ctx;
    cp_backoff backoff;
    int64_t next_attempt_ms;
    size_t queued; /* commands appended, replies not read yet */
    char append_sha[41]; /* the history append script, loaded at connect */
    char instance[48];   /* the server's run_id, read at the first append */
    int instance_tried;
    char err[256];
    char k_bridges[KEY_MAX];
};

cp_redis *cp_redis_open(const cp_redis_addr *addr, const cp_redis_options *opt)
{
    cp_redis *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->addr = *addr;
    r->opt = *opt;
    r->prefix = strdup(opt->prefix ? opt->prefix : "");
    if (!r->prefix) {
        free(r);
        return NULL;
    }
    r->opt.prefix = r->prefix;
    snprintf(r->who, sizeof r->who, "%s", opt->who ? opt->who : "redis");
    r->opt.who = r->who;
    cp_backoff_reset(&r->backoff);
    snprintf(r->k_bridges, sizeof r->k_bridges, "%s:bridges", r->prefix);
    return r;
}

void cp_redis_disconnect(cp_redis *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
    r->queued = 0;
    r->append_sha[0] = '\0'; /* the next connection loads it again */
    r->instance[0] = '\0';   /* and asks which server it is */
    r->instance_tried = 0;
}

void cp_redis_close(cp_redis *r)
{
    if (!r)
        return;
    cp_redis_disconnect(r);
    free(r->prefix);
    free(r);
}

int cp_redis_connected(const cp_redis *r) { return r->ctx != NULL; }

const char *cp_redis_last_error(const cp_redis *r) { return r->err; }

static void wait_before_next_attempt(cp_redis *r)
{
    if (r->opt.backoff)
        r->next_attempt_ms = cp_mono_ms() + cp_backoff_next(&r->backoff);
}

/* The connection broke (or a reply was unreadable): it is unusable now. */
static int lost(cp_redis *r, const char *why)
{
    snprintf(r->err, sizeof r->err, "%s", why && *why ? why : "connection lost");
    log_warn("%s: Redis %s:%d: %s; reconnecting", r->who, r->addr.host, r->addr.port, r->err);
    cp_redis_disconnect(r);
    wait_before_next_attempt(r);
    return CP_REDIS_LOST;
}

/* One command during the handshake; 0 or -1 with r->err set. */
static int handshake_command(cp_redis *r, const char *what, int argc, const char **argv)
{
    redisReply *reply = redisCommandArgv(r->ctx, argc, argv, NULL);
    if (!reply) {
        snprintf(r->err, sizeof r->err, "%s: %s", what, r->ctx->errstr);
        return -1;
    }
    int bad = reply->type == REDIS_REPLY_ERROR;
    if (bad)
        snprintf(r->err, sizeof r->err, "%s: %s", what, reply->str);
    freeReplyObject(reply);
    return bad ? -1 : 0;
}

/* Appends one message to a stream, atomically (docs/design-delivery.md).
 * KEYS: seq, hist, epoch, ids, ids0, inst, renewed. ARGV: envelope,
 * history size, ttl seconds, an epoch to use when the stream needs a new
 * one, the message's fingerprint ("" when unknown), the Redis server's
 * run_id ("" when unknown), the field of the message's packet id record
 * ("" when none; used only with a messageId), its messageId ("" when
 * none). Returns {offset, epoch,
 * kind}: kind 0 appended, 1 a retry (the messageId is known with this
 * fingerprint: its stored offset), 2 a conflict (known with another
 * fingerprint: nothing stored, the offset is the other message's).
 *
 * The messageIds (field m:<id> = "<offset>:<fingerprint>") and packet id
 * records (field p:<session>:<packet id> = the messageId, written whatever
 * the outcome: the latest use of a packet id wins) live in two hashes per
 * stream, ids and the generation before it, ids0: when ids reaches twice
 * the history size in fields (a message writes one or two), it becomes
 * ids0 and the one before is dropped. So the two hold the records of at
 * least the last history-size messages, the stream's retention, and their
 * memory is bounded by it; a key per message (with its own TTL) grew with
 * the message rate times the TTL instead: 2 keys per message for a day.
 *
 * The epoch is new when the stream has none (its history was lost) and
 * when the stream was last written under another server run (inst): a
 * restart or a failover may have brought back an older state (an older
 * RDB, an asynchronous replica), whose offsets would otherwise be handed
 * out again. A stream without an epoch also loses its id records (they
 * name offsets of the history that is gone).
 *
 * The stream's TTLs are renewed when its renewed marker (set NX with a
 * slack of ttl/10, 1 to 60 s) is absent, not at every append: on a busy
 * stream that spares four or five writes per message (EXPIRE is a write,
 * passed on to replicas and the AOF; SET NX on a present key is not), and
 * a stream still lives --history-ttl (within the slack) after its last
 * append. A stream made anew (new epoch) is always renewed: its keys were
 * just created without a TTL; so is an ids hash the script creates. */
static const char append_script[] =
    "local got = redis.call('MGET', KEYS[3], KEYS[6])\n"
    "local epoch, was = got[1], got[2]\n"
    "local ttl = tonumber(ARGV[3])\n"
    "local slack = math.max(1, math.min(60, math.floor(ttl / 10)))\n"
    "local renew = redis.call('SET', KEYS[7], '1', 'NX', 'EX', slack)\n"
    "if not epoch then\n"
    "  renew = true\n"
    "  epoch = ARGV[4]\n"
    "  redis.call('SET', KEYS[3], epoch)\n"
    "  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])\n"
    "  if ARGV[6] ~= '' then redis.call('SET', KEYS[6], ARGV[6], 'EX', ttl) end\n"
    "elseif ARGV[6] ~= '' and was ~= ARGV[6] then\n"
    "  if was then\n"
    "    epoch = ARGV[4]\n"
    "    redis.call('SET', KEYS[3], epoch, 'KEEPTTL')\n"
    "  end\n"
    "  redis.call('SET', KEYS[6], ARGV[6], 'EX', ttl)\n"
    "end\n"
    "local mid = ARGV[8]\n"
    "local fresh = false\n"
    "if mid ~= '' then\n"
    "  local fields = redis.call('HLEN', KEYS[4])\n"
    "  if fields >= 2 * math.max(1, tonumber(ARGV[2])) then\n"
    "    redis.call('RENAME', KEYS[4], KEYS[5])\n"
    "    fields = 0\n"
    "  end\n"
    "  fresh = fields == 0\n"
    "  local f = 'm:' .. mid\n"
    "  local seen = redis.call('HGET', KEYS[4], f)\n"
    "  if not seen then seen = redis.call('HGET', KEYS[5], f) end\n"
    "  if seen then\n"
    "    if ARGV[7] ~= '' then\n"
    "      redis.call('HSET', KEYS[4], ARGV[7], mid)\n"
    "      if fresh then redis.call('EXPIRE', KEYS[4], ttl) end\n"
    "    end\n"
    "    local at = string.find(seen, ':', 1, true)\n"
    "    if not at then return {tonumber(seen), epoch, 1} end\n"
    "    local off = tonumber(string.sub(seen, 1, at - 1))\n"
    "    local fp = string.sub(seen, at + 1)\n"
    "    if fp == ARGV[5] or fp == '' or ARGV[5] == '' then return {off, epoch, 1} end\n"
    "    return {off, epoch, 2}\n"
    "  end\n"
    "end\n"
    "local offset = redis.call('INCR', KEYS[1])\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], offset .. '-0', 'e', ARGV[1])\n"
    "if mid ~= '' then\n"
    "  if ARGV[7] ~= '' then\n"
    "    redis.call('HSET', KEYS[4], 'm:' .. mid, offset .. ':' .. ARGV[5], ARGV[7], mid)\n"
    "  else\n"
    "    redis.call('HSET', KEYS[4], 'm:' .. mid, offset .. ':' .. ARGV[5])\n"
    "  end\n"
    "  if fresh then redis.call('EXPIRE', KEYS[4], ttl) end\n"
    "end\n"
    "if renew then\n"
    "  redis.call('EXPIRE', KEYS[1], ttl)\n"
    "  redis.call('EXPIRE', KEYS[2], ttl)\n"
    "  redis.call('EXPIRE', KEYS[3], ttl)\n"
    "  redis.call('EXPIRE', KEYS[4], ttl)\n"
    "  redis.call('EXPIRE', KEYS[5], ttl)\n"
    "  if ARGV[6] ~= '' then redis.call('EXPIRE', KEYS[6], ttl) end\n"
    "end\n"
    "return {offset, epoch, 0}\n";

/* Loaded at the first append of a connection (a restarted Redis has no
 * scripts, and a handle that never appends needs no scripting rights). */
static int load_scripts(cp_redis *r)
{
    redisReply *reply = redisCommand(r->ctx, "SCRIPT LOAD %s", append_script);
    if (!reply) {
        snprintf(r->err, sizeof r->err, "SCRIPT LOAD: %s", r->ctx->errstr);
        return -1;
    }
    int ok = reply->type == REDIS_REPLY_STRING && reply->len == 40;
    if (ok)
        memcpy(r->append_sha, reply->str, 41);
    else
        snprintf(r->err, sizeof r->err, "SCRIPT LOAD: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    freeReplyObject(reply);
    return ok ? 0 : -1;
}

/* The server's run_id (INFO server), which changes at every start of
 * redis-server: the epoch's tie to the data set's life (see
 * append_script). Read at the first append of a connection; without it
 * (INFO not allowed) epochs change only when a stream's keys are gone. */
static void load_instance(cp_redis *r)
{
    r->instance_tried = 1;
    redisReply *reply = redisCommand(r->ctx, "INFO server");
    const char *at = reply && reply->type == REDIS_REPLY_STRING ? strstr(reply->str, "run_id:")
                                                                 : NULL;
    size_t n = 0;
    if (at) {
        at += 7;
        while (n < sizeof r->instance - 1 && at[n] && at[n] != '\r' && at[n] != '\n')
            n++;
        memcpy(r->instance, at, n);
    }
    r->instance[n] = '\0';
    if (!n)
        log_warn("%s: INFO server: %s; a Redis restart from an older state will not change "
                 "the epochs (allow +info, docs/redis.md)",
                 r->who, !reply ? r->ctx->errstr
                         : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                           : "no run_id");
    if (reply)
        freeReplyObject(reply);
}

static int handshake(cp_redis *r)
{
    const cp_redis_addr *a = &r->addr;
    if (a->username[0]) { /* an ACL user (Redis 6+) */
        const char *argv[] = {"AUTH", a->username, a->password};
        if (handshake_command(r, "AUTH", 3, argv) != 0)
            return -1;
    } else if (a->password[0]) {
        const char *argv[] = {"AUTH", a->password};
        if (handshake_command(r, "AUTH", 2, argv) != 0)
            return -1;
    }
    if (a->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", a->db);
        const char *argv[] = {"SELECT", db};
        if (handshake_command(r, "SELECT", 2, argv) != 0)
            return -1;
    }
    return 0;
}

int cp_redis_connect(cp_redis *r)
{
    if (r->ctx)
        return CP_REDIS_UP;
    if (r->opt.backoff && cp_mono_ms() < r->next_attempt_ms)
        return CP_REDIS_DOWN;
    const cp_redis_addr *a = &r->addr;
    if (a->tls) {
        snprintf(r->err, sizeof r->err, "%s", cp_redis_url_strerror(CP_REDIS_URL_TLS));
    } else {
        int ms = r->opt.timeout_ms > 0 ? r->opt.timeout_ms : 2000;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        r->ctx = redisConnectWithTimeout(a->host, a->port, tv);
        if (!r->ctx) {
            snprintf(r->err, sizeof r->err, "out of memory");
        } else if (r->ctx->err) {
            snprintf(r->err, sizeof r->err, "%s", r->ctx->errstr);
            cp_redis_disconnect(r);
        } else {
            redisSetTimeout(r->ctx, tv);
            if (handshake(r) != 0)
                cp_redis_disconnect(r);
        }
    }
    if (!r->ctx) {
        log_warn("%s: Redis %s:%d: %s", r->who, a->host, a->port, r->err);
        wait_before_next_attempt(r);
        return CP_REDIS_DOWN;
    }
    cp_backoff_reset(&r->backoff);
    if (r->opt.log_connects)
        log_info("%s: connected to Redis %s:%d", r->who, a->host, a->port);
    return CP_REDIS_NEW;
}

int cp_redis_connect_now(cp_redis *r)
{
    r->next_attempt_ms = 0;
    return cp_redis_connect(r);
}

/* Reads n pipelined replies into out (when not NULL; the caller frees them
 * with freeReplyObject; NULL where none arrived) or frees them. */
static int read_replies(cp_redis *r, size_t n, redisReply **out)
{
    int rc = CP_REDIS_OK;
    for (size_t i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(r->ctx, &reply) != REDIS_OK || !reply) {
            for (size_t j = i; out && j < n; j++)
                out[j] = NULL;
            return lost(r, r->ctx->errstr);
        }
        redisReply *rep = reply;
        if (rep->type == REDIS_REPLY_ERROR && rc == CP_REDIS_OK) {
            snprintf(r->err, sizeof r->err, "%s", rep->str);
            rc = CP_REDIS_REFUSED;
        }
        if (out)
            out[i] = rep;
        else
            freeReplyObject(rep);
    }
    return rc;
}

static void free_replies(redisReply **replies, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
}

/* Appends one command to the pipeline (nothing without a connection: the
 * flush then reports the loss). */
static void append(cp_redis *r, const char *fmt, ...)
{
    if (!r->ctx)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (redisvAppendCommand(r->ctx, fmt, ap) == REDIS_OK)
        r->queued++;
    else
        log_warn("%s: cannot queue '%s': %s", r->who, fmt, r->ctx->errstr);
    va_end(ap);
}

/* The same for a command whose arguments are at hand: no format string to
 * parse (the append of every stored message goes this way). */
static void append_argv(cp_redis *r, int argc, const char **argv, const size_t *lens)
{
    if (!r->ctx)
        return;
    if (redisAppendCommandArgv(r->ctx, argc, argv, lens) == REDIS_OK)
        r->queued++;
    else
        log_warn("%s: cannot queue '%s': %s", r->who, argv[0], r->ctx->errstr);
}

/* One command, its reply now; NULL when the connection broke. */
static redisReply *command(cp_redis *r, const char *fmt, ...)
{
    if (!r->ctx) {
        lost(r, "not connected");
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(r->ctx, fmt, ap);
    va_end(ap);
    if (!reply)
        lost(r, r->ctx->errstr);
    return reply;
}

int cp_redis_flush(cp_redis *r)
{
    if (!r->ctx)
        return lost(r, "not connected");
    size_t n = r->queued;
    r->queued = 0;
    return read_replies(r, n, NULL);
}

int cp_redis_ping(cp_redis *r)
{
    redisReply *reply = command(r, "PING");
    if (!reply)
        return CP_REDIS_LOST;
    int rc = reply->type == REDIS_REPLY_STATUS ? CP_REDIS_OK : CP_REDIS_REFUSED;
    if (reply->type == REDIS_REPLY_ERROR)
        snprintf(r->err, sizeof r->err, "%s", reply->str);
    freeReplyObject(reply);
    return rc;
}

/* ---------------------------------------------------- keys and values */

static void key_bridge(char *out, const cp_redis *r, const char *bridge_id)
{
    snprintf(out, KEY_MAX, "%s:bridge:%s", r->prefix, bridge_id);
}

static void key_bridge_sessions(char *out, const cp_redis *r, const char *bridge_id)
{
    snprintf(out, KEY_MAX, "%s:bridge:%s:sessions", r->prefix, bridge_id);
}

static void key_client(char *out, const cp_redis *r, const char *channel_id)
{
    snprintf(out, KEY_MAX, "%s:client:%s", r->prefix, channel_id);
}

/* A client hash's value: "<bridgeId> <sinceMs>". */
static int presence_parse(const char *value, char *bridge_id, size_t cap, int64_t *since_ms)
{
    const char *sp = value ? strchr(value, ' ') : NULL;
    if (!sp || sp == value || (size_t)(sp - value) >= cap)
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

/* --------------------------------------------------------- live bridges */

/* THE live-bridge rule: a bridge is live while its index entry was
 * refreshed within the TTL. Readers append this, then filter by it. */
static void append_live_ids(cp_redis *r, long ttl_ms, size_t limit)
{
    char cutoff[32], count[24];
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)(cp_now_ms() - ttl_ms));
    snprintf(count, sizeof count, "%zu", limit); /* hiredis formats know no %zu */
    if (limit)
        append(r, "ZRANGEBYSCORE %s %s +inf LIMIT 0 %s", r->k_bridges, cutoff, count);
    else
        append(r, "ZRANGEBYSCORE %s %s +inf", r->k_bridges, cutoff);
}

static int in_live(const redisReply *live, const char *bridge_id)
{
    for (size_t i = 0; live && live->type == REDIS_REPLY_ARRAY && i < live->elements; i++)
        if (live->element[i]->str && strcmp(live->element[i]->str, bridge_id) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- bridges */

void cp_redis_queue_bridge_record(cp_redis *r, const cp_redis_bridge *b, long ttl_ms)
{
    if (!r->ctx)
        return;
    int64_t now = cp_now_ms();
    char key[KEY_MAX], conns[24], cap[24], started[24], updated[24];
    key_bridge(key, r, b->id);
    snprintf(conns, sizeof conns, "%u", b->connections);
    snprintf(cap, sizeof cap, "%u", b->capacity);
    snprintf(started, sizeof started, "%lld", (long long)b->started_ms);
    snprintf(updated, sizeof updated, "%lld", (long long)now);
    const char *argv[] = {"HSET",    key,     "id",          b->id, "url",      b->url,
                          "connections", conns, "capacity", cap,   "started",  started,
                          "updated", updated, "draining",    b->draining ? "1" : "0",
                          "ready",   b->not_ready ? "0" : "1"};
    if (redisAppendCommandArgv(r->ctx, (int)(sizeof argv / sizeof argv[0]), argv, NULL) ==
        REDIS_OK)
        r->queued++;
    append(r, "PEXPIRE %s %ld", key, ttl_ms);
    append(r, "ZADD %s %lld %s", r->k_bridges, (long long)now, b->id);
}

void cp_redis_queue_bridge_removal(cp_redis *r, const char *bridge_id)
{
    char k_bridge[KEY_MAX], k_sessions[KEY_MAX];
    key_bridge(k_bridge, r, bridge_id);
    key_bridge_sessions(k_sessions, r, bridge_id);
    append(r, "DEL %s %s", k_sessions, k_bridge);
    append(r, "ZREM %s %s", r->k_bridges, bridge_id);
}

static void field(const redisReply *h, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    if (!h || h->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (h->element[i]->str && strcmp(h->element[i]->str, name) == 0 &&
            h->element[i + 1]->str) {
            snprintf(out, cap, "%s", h->element[i + 1]->str);
            return;
        }
}

/* Returns 0 when the reply is a usable record. */
static int parse_bridge(const redisReply *h, cp_redis_bridge *b)
{
    char buf[CP_REDIS_BRIDGE_URL_MAX];
    memset(b, 0, sizeof *b);
    field(h, "id", b->id, sizeof b->id);
    field(h, "url", b->url, sizeof b->url);
    if (!b->id[0] || !b->url[0])
        return -1; /* the record expired between the two reads */
    field(h, "connections", buf, sizeof buf);
    b->connections = (unsigned)strtoul(buf, NULL, 10);
    field(h, "capacity", buf, sizeof buf);
    b->capacity = (unsigned)strtoul(buf, NULL, 10);
    field(h, "draining", buf, sizeof buf);
    b->draining = buf[0] == '1';
    field(h, "ready", buf, sizeof buf);
    b->not_ready = buf[0] == '0';
    field(h, "started", buf, sizeof buf);
    b->started_ms = strtoll(buf, NULL, 10);
    field(h, "updated", buf, sizeof buf);
    b->updated_ms = strtoll(buf, NULL, 10);
    return 0;
}

int cp_redis_live_bridges(cp_redis *r, long ttl_ms, size_t max, cp_redis_bridge **out,
                          size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!r->ctx)
        return lost(r, "not connected");
    append_live_ids(r, ttl_ms, max);
    r->queued = 0;
    redisReply *ids = NULL;
    int rc = read_replies(r, 1, &ids);
    if (rc == CP_REDIS_LOST)
        return rc;
    size_t count = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
    if (count == 0) {
        freeReplyObject(ids);
        return rc;
    }
    redisReply **recs = calloc(count, sizeof *recs);
    cp_redis_bridge *items = calloc(count, sizeof *items);
    if (!recs || !items) {
        free(recs);
        free(items);
        freeReplyObject(ids);
        snprintf(r->err, sizeof r->err, "out of memory");
        return CP_REDIS_REFUSED;
    }
    for (size_t i = 0; i < count; i++) {
        char key[KEY_MAX];
        key_bridge(key, r, ids->element[i]->str ? ids->element[i]->str : "");
        append(r, "HGETALL %s", key);
    }
    freeReplyObject(ids);
    r->queued = 0;
    rc = read_replies(r, count, recs);
    size_t kept = 0;
    for (size_t i = 0; rc != CP_REDIS_LOST && i < count; i++)
        if (parse_bridge(recs[i], &items[kept]) == 0)
            kept++;
    free_replies(recs, count);
    free(recs);
    if (rc == CP_REDIS_LOST) {
        free(items);
        return rc;
    }
    *out = items;
    *n = kept;
    return CP_REDIS_OK;
}

int cp_redis_remove_dead_bridges(cp_redis *r, long ttl_ms)
{
    char cutoff[32]; /* exclusive: the complement of the live rule */
    snprintf(cutoff, sizeof cutoff, "(%lld", (long long)(cp_now_ms() - ttl_ms));
    redisReply *old = command(r, "ZRANGEBYSCORE %s -inf %s LIMIT 0 16", r->k_bridges, cutoff);
    if (!old)
        return CP_REDIS_LOST;
    int removed = 0;
    for (size_t i = 0; old->type == REDIS_REPLY_ARRAY && i < old->elements; i++) {
        const char *id = old->element[i]->str;
        if (!id)
            continue;
        char k_bridge[KEY_MAX], k_sessions[KEY_MAX];
        key_bridge(k_bridge, r, id);
        key_bridge_sessions(k_sessions, r, id);
        redisReply *exists = command(r, "EXISTS %s", k_bridge);
        if (!exists)
            goto lost;
        int alive = exists->type == REDIS_REPLY_INTEGER && exists->integer > 0;
        freeReplyObject(exists);
        if (alive)
            continue;
        redisReply *sessions = command(r, "HGETALL %s", k_sessions);
        if (!sessions)
            goto lost;
        size_t n = 0;
        for (size_t j = 0; sessions->type == REDIS_REPLY_ARRAY && j + 1 < sessions->elements;
             j += 2) {
            char k_client[KEY_MAX];
            key_client(k_client, r, sessions->element[j + 1]->str);
            append(r, "HDEL %s %s", k_client, sessions->element[j]->str);
            n++;
        }
        freeReplyObject(sessions);
        append(r, "DEL %s", k_sessions);
        /* Should the bridge come back right now, its next refresh (one
         * interval later) adds it again. */
        append(r, "ZREM %s %s", r->k_bridges, id);
        if (cp_redis_flush(r) == CP_REDIS_LOST)
            goto lost;
        removed++;
        log_warn("bridge %s is gone (no refresh for %ld ms): removed its %zu sessions", id, ttl_ms,
                 n);
    }
    freeReplyObject(old);
    return removed;
lost:
    freeReplyObject(old);
    return CP_REDIS_LOST;
}

/* --------------------------------------------------------------- sessions */

void cp_redis_queue_session_up(cp_redis *r, const char *bridge_id, const char *channel_id,
                               const char *session_id, int64_t since_ms)
{
    char k_client[KEY_MAX], k_sessions[KEY_MAX], value[CP_REDIS_BRIDGE_ID_MAX + 32];
    key_client(k_client, r, channel_id);
    key_bridge_sessions(k_sessions, r, bridge_id);
    snprintf(value, sizeof value, "%s %lld", bridge_id, (long long)since_ms);
    append(r, "HSET %s %s %s", k_client, session_id, value);
    append(r, "HSET %s %s %s", k_sessions, session_id, channel_id);
}

void cp_redis_queue_session_down(cp_redis *r, const char *bridge_id, const char *channel_id,
                                 const char *session_id)
{
    char k_client[KEY_MAX], k_sessions[KEY_MAX];
    key_client(k_client, r, channel_id);
    key_bridge_sessions(k_sessions, r, bridge_id);
    append(r, "HDEL %s %s", k_client, session_id);
    append(r, "HDEL %s %s", k_sessions, session_id);
}

int cp_redis_queue_stale_sessions(cp_redis *r, const char *bridge_id,
                                  int (*holds)(void *ud, const char *session_id), void *ud,
                                  unsigned *removed)
{
    char k_sessions[KEY_MAX];
    key_bridge_sessions(k_sessions, r, bridge_id);
    *removed = 0;
    redisReply *all = command(r, "HGETALL %s", k_sessions);
    if (!all)
        return CP_REDIS_LOST;
    for (size_t i = 0; all->type == REDIS_REPLY_ARRAY && i + 1 < all->elements; i += 2) {
        const char *sid = all->element[i]->str, *channel = all->element[i + 1]->str;
        if (sid && channel && !holds(ud, sid)) {
            cp_redis_queue_session_down(r, bridge_id, channel, sid);
            (*removed)++;
        }
    }
    freeReplyObject(all);
    return CP_REDIS_OK;
}

void cp_redis_queue_presence(cp_redis *r, long ttl_ms, const char *const *ids, size_t n)
{
    append_live_ids(r, ttl_ms, 0);
    for (size_t i = 0; i < n; i++) {
        char key[KEY_MAX];
        key_client(key, r, ids[i]);
        append(r, "HVALS %s", key);
    }
}

int cp_redis_collect_presence(cp_redis *r, size_t n, unsigned char *online)
{
    if (!r->ctx)
        return lost(r, "not connected");
    redisReply **rep = calloc(n + 1, sizeof *rep);
    r->queued = 0;
    if (!rep) { /* replies once requested must be read */
        int rc = read_replies(r, n + 1, NULL);
        snprintf(r->err, sizeof r->err, "out of memory");
        return rc == CP_REDIS_LOST ? rc : CP_REDIS_REFUSED;
    }
    int rc = read_replies(r, n + 1, rep);
    for (size_t i = 0; rc == CP_REDIS_OK && i < n; i++) {
        const redisReply *values = rep[i + 1];
        online[i] = 0;
        for (size_t j = 0; values->type == REDIS_REPLY_ARRAY && j < values->elements; j++) {
            char bridge[CP_REDIS_BRIDGE_ID_MAX + 16];
            int64_t since;
            if (presence_parse(values->element[j]->str, bridge, sizeof bridge, &since) == 0 &&
                in_live(rep[0], bridge)) {
                online[i] = 1;
                break;
            }
        }
    }
    free_replies(rep, n + 1);
    free(rep);
    return rc;
}

int cp_redis_presence(cp_redis *r, long ttl_ms, const char *const *ids, size_t n,
                      unsigned char *online)
{
    if (!r->ctx)
        return lost(r, "not connected");
    cp_redis_queue_presence(r, ttl_ms, ids, n);
    return cp_redis_collect_presence(r, n, online);
}

int cp_redis_client_sessions(cp_redis *r, long ttl_ms, const char *channel_id,
                             void (*each)(void *ud, const char *session_id,
                                          const char *bridge_id, int64_t since_ms),
                             void *ud)
{
    if (!r->ctx)
        return lost(r, "not connected");
    char key[KEY_MAX];
    append_live_ids(r, ttl_ms, 0);
    key_client(key, r, channel_id);
    append(r, "HGETALL %s", key);
    r->queued = 0;
    redisReply *rep[2] = {NULL, NULL};
    int rc = read_replies(r, 2, rep);
    for (size_t j = 0;
         rc == CP_REDIS_OK && rep[1]->type == REDIS_REPLY_ARRAY && j + 1 < rep[1]->elements;
         j += 2) {
        char bridge[CP_REDIS_BRIDGE_ID_MAX + 16];
        int64_t since;
        const char *sid = rep[1]->element[j]->str;
        if (!sid ||
            presence_parse(rep[1]->element[j + 1]->str, bridge, sizeof bridge, &since) != 0 ||
            !in_live(rep[0], bridge))
            continue; /* left by a bridge that died; the balancer removes it */
        each(ud, sid, bridge, since);
    }
    free_replies(rep, 2);
    return rc;
}

/* ------------------------------------------------------------- leases */

/* KEYS: the lease. ARGV: token, ttl ms. 1: held by token now; 0: by another. */
static const char lease_script[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and v ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return 1\n";

static const char lease_release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

static int lease_call(cp_redis *r, const char *script, const char *name, const char *token,
                      long ttl_ms, long long *result)
{
    if (!r->ctx)
        return lost(r, "not connected");
    char key[KEY_MAX];
    snprintf(key, sizeof key, "%s:lease:%s", r->prefix, name);
    append(r, "EVAL %s 1 %s %s %ld", script, key, token, ttl_ms);
    r->queued = 0;
    redisReply *rep = NULL;
    int rc = read_replies(r, 1, &rep);
    if (rc == CP_REDIS_OK && rep->type != REDIS_REPLY_INTEGER) {
        snprintf(r->err, sizeof r->err, "lease: unexpected reply");
        rc = CP_REDIS_REFUSED;
    }
    if (rc == CP_REDIS_OK)
        *result = rep->integer;
    if (rep)
        freeReplyObject(rep);
    return rc;
}

int cp_redis_lease(cp_redis *r, const char *name, const char *token, long ttl_ms, int *held)
{
    long long v = 0;
    int rc = lease_call(r, lease_script, name, token, ttl_ms, &v);
    *held = rc == CP_REDIS_OK && v == 1;
    return rc;
}

int cp_redis_lease_release(cp_redis *r, const char *name, const char *token)
{
    long long ignored;
    return lease_call(r, lease_release_script, name, token, 0, &ignored);
}

/* ------------------------------------------------------------ history */

static void key_stream(char *out, const cp_redis *r, const char *stream, const char *part)
{
    snprintf(out, KEY_MAX, "%s:h:{%s}:%s", r->prefix, stream, part);
}

/* The field of a leader session's MQTT packet id in a stream's ids hash:
 * its value is the messageId given to the message that last came with it. */
static void field_packet(char *out, size_t cap, const char *session, int packet_id)
{
    snprintf(out, cap, "p:%s:%d", session, packet_id);
}

void cp_redis_queue_history_append(cp_redis *r, const char *stream, const char *message_id,
                                   const char *fingerprint, const char *envelope, size_t len,
                                   long history_size, long ttl_s)
{
    cp_redis_queue_history_append_packet(r, stream, message_id, fingerprint, envelope, len,
                                         history_size, ttl_s, NULL, 0);
}

void cp_redis_queue_history_append_packet(cp_redis *r, const char *stream,
                                          const char *message_id, const char *fingerprint,
                                          const char *envelope, size_t len, long history_size,
                                          long ttl_s, const char *session, int packet_id)
{
    char k_seq[KEY_MAX], k_hist[KEY_MAX], k_epoch[KEY_MAX], k_ids[KEY_MAX], k_ids0[KEY_MAX],
        k_inst[KEY_MAX], k_renewed[KEY_MAX], f_pid[KEY_MAX] = "";
    const char *mid = message_id ? message_id : "";
    if (session && *session && packet_id > 0 && *mid)
        field_packet(f_pid, sizeof f_pid, session, packet_id);
    key_stream(k_seq, r, stream, "seq");
    key_stream(k_hist, r, stream, "hist");
    key_stream(k_epoch, r, stream, "epoch");
    key_stream(k_ids, r, stream, "ids");
    key_stream(k_ids0, r, stream, "ids0");
    key_stream(k_inst, r, stream, "inst");
    key_stream(k_renewed, r, stream, "renewed");
    const char *fp = fingerprint ? fingerprint : "";
    char epoch[CP_REDIS_EPOCH_MAX + 1];
    snprintf(epoch, sizeof epoch, "%016llx", (unsigned long long)cp_random_u64());
    /* SCRIPT LOAD and INFO are blocking round trips: only before anything
     * is queued, or their replies would be read in place of a queued one's. */
    if (r->ctx && r->queued == 0 && !r->instance_tried)
        load_instance(r);
    if (r->ctx && !r->append_sha[0] && r->queued == 0 && load_scripts(r) != 0)
        log_warn("%s: %s: sending the script whole", r->who, r->err);
    char n_size[24], n_ttl[24];
    snprintf(n_size, sizeof n_size, "%ld", history_size);
    snprintf(n_ttl, sizeof n_ttl, "%ld", ttl_s);
    const char *argv[] = {r->append_sha[0] ? "EVALSHA" : "EVAL",
                          r->append_sha[0] ? r->append_sha : append_script,
                          "7", k_seq, k_hist, k_epoch, k_ids, k_ids0, k_inst, k_renewed,
                          envelope, n_size, n_ttl, epoch, fp, r->instance, f_pid, mid};
    enum { ARGC = sizeof argv / sizeof argv[0] };
    size_t lens[ARGC];
    for (size_t i = 0; i < ARGC; i++)
        lens[i] = i == 10 ? len : strlen(argv[i]);
    append_argv(r, ARGC, argv, lens);
}

int cp_redis_packet_lookup(cp_redis *r, const char *const *streams, const char *session,
                           const int *packet_ids, size_t n, char (*out)[CP_REDIS_PACKET_MID_MAX + 1])
{
    for (size_t i = 0; i < n; i++)
        out[i][0] = '\0';
    if (n == 0)
        return CP_REDIS_OK;
    if (!r->ctx)
        return lost(r, "not connected");
    redisReply **rep = calloc(2 * n, sizeof *rep);
    if (!rep) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return CP_REDIS_REFUSED;
    }
    /* The record in the stream's ids hash, else in the generation before. */
    for (size_t i = 0; i < n; i++) {
        char k_ids[KEY_MAX], k_ids0[KEY_MAX], f_pid[KEY_MAX];
        key_stream(k_ids, r, streams[i], "ids");
        key_stream(k_ids0, r, streams[i], "ids0");
        field_packet(f_pid, sizeof f_pid, session, packet_ids[i]);
        append(r, "HGET %s %s", k_ids, f_pid);
        append(r, "HGET %s %s", k_ids0, f_pid);
    }
    size_t sent = r->queued, want = 2 * n;
    r->queued = 0;
    int rc = sent == want ? read_replies(r, want, rep) : CP_REDIS_REFUSED;
    if (sent != want) /* an HGET could not be queued: read what was, answer none */
        read_replies(r, sent, NULL);
    for (size_t i = 0; rc != CP_REDIS_LOST && sent == want && i < n; i++) {
        const redisReply *x = rep[2 * i];
        if (!x || x->type != REDIS_REPLY_STRING)
            x = rep[2 * i + 1];
        if (x && x->type == REDIS_REPLY_STRING && x->len > 0 &&
            x->len <= CP_REDIS_PACKET_MID_MAX)
            snprintf(out[i], CP_REDIS_PACKET_MID_MAX + 1, "%s", x->str);
    }
    if (sent == want)
        free_replies(rep, want);
    free(rep);
    return rc;
}

int cp_redis_flush_appends(cp_redis *r, cp_redis_appended *out, size_t n)
{
    if (!r->ctx)
        return lost(r, "not connected");
    redisReply **rep = calloc(n ? n : 1, sizeof *rep);
    if (!rep) {
        /* Replies once requested must be read: drain them. */
        r->queued = 0;
        int rc = read_replies(r, n, NULL);
        snprintf(r->err, sizeof r->err, "out of memory");
        return rc == CP_REDIS_LOST ? rc : CP_REDIS_REFUSED;
    }
    r->queued = 0;
    int rc = read_replies(r, n, rep);
    int noscript = 0;
    for (size_t i = 0; rc != CP_REDIS_LOST && i < n; i++) {
        const redisReply *x = rep[i];
        memset(&out[i], 0, sizeof out[i]);
        if (x->type == REDIS_REPLY_ARRAY && x->elements == 3 &&
            x->element[0]->type == REDIS_REPLY_INTEGER &&
            x->element[1]->type == REDIS_REPLY_STRING &&
            x->element[2]->type == REDIS_REPLY_INTEGER) {
            out[i].offset = x->element[0]->integer;
            snprintf(out[i].epoch, sizeof out[i].epoch, "%s", x->element[1]->str);
            out[i].duplicate = x->element[2]->integer == 1;
            out[i].conflict = x->element[2]->integer == 2;
        } else {
            rc = CP_REDIS_REFUSED;
            if (x->type == REDIS_REPLY_ERROR && strncmp(x->str, "NOSCRIPT", 8) == 0)
                noscript = 1;
        }
    }
    free_replies(rep, n);
    free(rep);
    if (noscript) /* flushed by an admin: reconnecting loads it again */
        cp_redis_disconnect(r);
    return rc;
}

void cp_redis_queue_history_read(cp_redis *r, const char *stream, int64_t since, size_t max)
{
    char k_seq[KEY_MAX], k_hist[KEY_MAX], k_epoch[KEY_MAX], from[32], count[24];
    key_stream(k_seq, r, stream, "seq");
    key_stream(k_hist, r, stream, "hist");
    key_stream(k_epoch, r, stream, "epoch");
    snprintf(from, sizeof from, "%lld-0", (long long)(since + 1));
    snprintf(count, sizeof count, "%zu", max); /* COUNT 0: no entries, the state only */
    append(r, "GET %s", k_epoch);
    append(r, "GET %s", k_seq);
    append(r, "XRANGE %s - + COUNT 1", k_hist);
    append(r, "XRANGE %s %s + COUNT %s", k_hist, from, count);
}

int cp_redis_collect_history_read(cp_redis *r, cp_redis_stream_state *state,
                                  void (*each)(void *ud, int64_t offset, const char *envelope,
                                               size_t len),
                                  void *ud)
{
    memset(state, 0, sizeof *state);
    if (!r->ctx)
        return lost(r, "not connected");
    redisReply *rep[4] = {0};
    r->queued = 0;
    int rc = read_replies(r, 4, rep);
    if (rc == CP_REDIS_OK) {
        if (rep[0]->type == REDIS_REPLY_STRING)
            snprintf(state->epoch, sizeof state->epoch, "%s", rep[0]->str);
        if (rep[1]->type == REDIS_REPLY_STRING)
            state->last = strtoll(rep[1]->str, NULL, 10);
        if (rep[2]->type == REDIS_REPLY_ARRAY && rep[2]->elements == 1)
            state->first = strtoll(rep[2]->element[0]->element[0]->str, NULL, 10);
        for (size_t i = 0; rep[3]->type == REDIS_REPLY_ARRAY && i < rep[3]->elements; i++) {
            const redisReply *entry = rep[3]->element[i];
            const redisReply *fields = entry->element[1];
            if (fields->type != REDIS_REPLY_ARRAY || fields->elements < 2)
                continue;
            each(ud, strtoll(entry->element[0]->str, NULL, 10), fields->element[1]->str,
                 fields->element[1]->len);
        }
    }
    free_replies(rep, 4);
    return rc;
}

int cp_redis_history_read(cp_redis *r, const char *stream, int64_t since, size_t max,
                          cp_redis_stream_state *state,
                          void (*each)(void *ud, int64_t offset, const char *envelope,
                                       size_t len),
                          void *ud)
{
    memset(state, 0, sizeof *state);
    if (!r->ctx)
        return lost(r, "not connected");
    cp_redis_queue_history_read(r, stream, since, max);
    return cp_redis_collect_history_read(r, state, each, ud);
}
