/* common/redis.c against a real redis-server, which this test starts on a
 * free loopback port (no persistence) and stops: the handshake (ACL user,
 * wrong password, SELECT), the schema functions of docs/redis.md checked
 * key by key with a separate plain hiredis connection, the live-bridge
 * rule, dead-bridge cleanup, and reconnect with backoff across a restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "ids.h"
#include "redis.h"

#define TTL_MS 3000
#define DB 3

static int port;
static pid_t server = -1;
static char url[128];
static redisContext *check; /* the test's own view of the data, in DB */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    close(fd);
    return ntohs(sa.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int start_server(void)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    server = fork();
    if (server < 0)
        return -1;
    if (server == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        /* The default user needs a password; pushapp is an ACL user. */
        execlp("redis-server", "redis-server", "--port", port_s, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--daemonize", "no", "--requirepass",
               "defaultpw", "--user", "pushapp", "on", ">apppw", "~*", "+@all", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* up to 5 s */
        redisContext *c = redisConnect("127.0.0.1", port);
        int ok = c && !c->err;
        redisFree(c);
        if (ok)
            return 0;
        int status;
        if (waitpid(server, &status, WNOHANG) == server)
            return -1;
        sleep_ms(50);
    }
    return -1;
}

static void stop_server(void)
{
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        server = -1;
    }
}

static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(check, fmt, ap);
    va_end(ap);
    if (!r)
        fail_msg("check connection: %s", check->errstr);
    return r;
}

static long long cmd_int(const char *fmt, const char *a, const char *b)
{
    redisReply *r = cmd(fmt, a, b);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    return v;
}

/* HGET key field as a string ("" when absent). */
static void hget(const char *key, const char *field, char *out, size_t cap)
{
    redisReply *r = cmd("HGET %s %s", key, field);
    snprintf(out, cap, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

static int connect_check(void)
{
    check = redisConnect("127.0.0.1", port);
    if (!check || check->err)
        return -1;
    redisReply *r = redisCommand(check, "AUTH defaultpw");
    freeReplyObject(r);
    r = redisCommand(check, "SELECT %d", DB);
    freeReplyObject(r);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    port = free_port();
    if (port <= 0 || start_server() != 0 || connect_check() != 0) {
        fprintf(stderr, "cannot start redis-server on 127.0.0.1:%d\n", port);
        stop_server();
        return -1;
    }
    snprintf(url, sizeof url, "redis://pushapp:apppw@127.0.0.1:%d/%d", port, DB);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    redisFree(check);
    stop_server();
    return 0;
}

static cp_redis *open_handle(const char *u, int backoff)
{
    cp_redis_addr a;
    int rc = cp_redis_parse_url(u, &a);
    if (rc != CP_REDIS_URL_OK && rc != CP_REDIS_URL_TLS)
        fail_msg("bad test URL %s", u);
    cp_redis_options opt = {.prefix = "t", .who = "test", .timeout_ms = 1000, .backoff = backoff};
    cp_redis *r = cp_redis_open(&a, &opt);
    assert_non_null(r);
    return r;
}

static void flushdb(void) { freeReplyObject(cmd("FLUSHDB")); }

static void bridge_record(cp_redis_bridge *b, const char *id)
{
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "%s", id);
    snprintf(b->url, sizeof b->url, "ws://127.0.0.1:9/%s", id);
    b->connections = 7;
    b->capacity = 100;
    b->started_ms = 1234;
}

static void test_handshake(void **state)
{
    (void)state;
    char bad[128];
    snprintf(bad, sizeof bad, "redis://pushapp:nope@127.0.0.1:%d", port);
    cp_redis *r = open_handle(bad, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_DOWN);
    assert_non_null(strstr(cp_redis_last_error(r), "AUTH"));
    cp_redis_close(r);

    snprintf(bad, sizeof bad, "redis://127.0.0.1:%d", port); /* no AUTH at all */
    r = open_handle(bad, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW); /* connecting needs no AUTH */
    assert_int_equal(cp_redis_ping(r), CP_REDIS_REFUSED); /* NOAUTH */
    cp_redis_close(r);

    snprintf(bad, sizeof bad, "redis://:defaultpw@127.0.0.1:%d", port); /* password only */
    r = open_handle(bad, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    assert_int_equal(cp_redis_ping(r), CP_REDIS_OK);
    cp_redis_close(r);

    r = open_handle(url, 0); /* ACL user and SELECT */
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_UP);
    assert_int_equal(cp_redis_ping(r), CP_REDIS_OK);
    cp_redis_close(r);

    /* rediss:// never reaches the network, and says why */
    r = open_handle("rediss://127.0.0.1:1", 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_DOWN);
    assert_non_null(strstr(cp_redis_last_error(r), "TLS"));
    cp_redis_close(r);
}

static void test_bridge_sessions_presence(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);

    cp_redis_bridge b;
    bridge_record(&b, "b1");
    cp_redis_queue_session_up(r, "b1", "c1", "s1", 111);
    cp_redis_queue_session_up(r, "b1", "c1", "s2", 222);
    cp_redis_queue_bridge_record(r, &b, TTL_MS);
    int64_t before = cp_now_ms();
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);

    /* the keys of docs/redis.md, in the URL's database */
    char v[128];
    hget("t:bridge:b1", "url", v, sizeof v);
    assert_string_equal(v, "ws://127.0.0.1:9/b1");
    hget("t:bridge:b1", "connections", v, sizeof v);
    assert_string_equal(v, "7");
    hget("t:bridge:b1", "capacity", v, sizeof v);
    assert_string_equal(v, "100");
    hget("t:bridge:b1", "started", v, sizeof v);
    assert_string_equal(v, "1234");
    hget("t:bridge:b1", "draining", v, sizeof v);
    assert_string_equal(v, "0");
    long long pttl = cmd_int("PTTL %s", "t:bridge:b1", NULL);
    assert_true(pttl > 0 && pttl <= TTL_MS);
    redisReply *score = cmd("ZSCORE t:bridges b1");
    assert_int_equal(score->type, REDIS_REPLY_STRING);
    assert_true(strtoll(score->str, NULL, 10) >= before - 1000);
    freeReplyObject(score);
    hget("t:client:c1", "s1", v, sizeof v);
    assert_string_equal(v, "b1 111");
    hget("t:bridge:b1:sessions", "s2", v, sizeof v);
    assert_string_equal(v, "c1");

    /* a session on a bridge whose index entry is stale: not live */
    freeReplyObject(cmd("ZADD t:bridges 1000 b9"));
    freeReplyObject(cmd("HSET t:client:c2 s9 %s", "b9 999"));

    cp_redis_bridge *live = NULL;
    size_t n = 0;
    assert_int_equal(cp_redis_live_bridges(r, TTL_MS, 16, &live, &n), CP_REDIS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(live[0].id, "b1");
    assert_string_equal(live[0].url, "ws://127.0.0.1:9/b1");
    assert_int_equal(live[0].connections, 7);
    assert_int_equal(live[0].capacity, 100);
    assert_int_equal(live[0].draining, 0);
    assert_int_equal(live[0].started_ms, 1234);
    assert_true(live[0].updated_ms >= before - 1000);
    free(live);

    const char *ids[] = {"c1", "c2", "nobody"};
    unsigned char online[3] = {9, 9, 9};
    assert_int_equal(cp_redis_presence(r, TTL_MS, ids, 3, online), CP_REDIS_OK);
    assert_int_equal(online[0], 1);
    assert_int_equal(online[1], 0); /* only on the stale bridge */
    assert_int_equal(online[2], 0);

    /* draining is written, a live bridge with a stale-looking record is read as is */
    b.draining = 1;
    cp_redis_queue_bridge_record(r, &b, TTL_MS);
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);
    hget("t:bridge:b1", "draining", v, sizeof v);
    assert_string_equal(v, "1");

    /* session down: both hashes */
    cp_redis_queue_session_down(r, "b1", "c1", "s1");
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c1", "s1"), 0);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:bridge:b1:sessions", "s1"), 0);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c1", "s2"), 1);

    /* bridge removal: record, session list, index entry */
    cp_redis_queue_session_down(r, "b1", "c1", "s2");
    cp_redis_queue_bridge_removal(r, "b1");
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);
    assert_int_equal(cmd_int("EXISTS %s %s", "t:bridge:b1", "t:bridge:b1:sessions"), 0);
    assert_int_equal(cmd_int("EXISTS %s", "t:client:c1", NULL), 0);
    redisReply *gone = cmd("ZSCORE t:bridges b1");
    assert_int_equal(gone->type, REDIS_REPLY_NIL);
    freeReplyObject(gone);
    cp_redis_close(r);
}

typedef struct {
    int count;
    char sid[32], bridge[32];
    int64_t since;
} seen_sessions;

static void collect(void *ud, const char *sid, const char *bridge, int64_t since)
{
    seen_sessions *s = ud;
    s->count++;
    snprintf(s->sid, sizeof s->sid, "%s", sid);
    snprintf(s->bridge, sizeof s->bridge, "%s", bridge);
    s->since = since;
}

static void test_client_sessions(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    cp_redis_bridge b;
    bridge_record(&b, "b1");
    cp_redis_queue_bridge_record(r, &b, TTL_MS);
    cp_redis_queue_session_up(r, "b1", "c1", "live-s", 555);
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);
    freeReplyObject(cmd("HSET t:client:c1 dead-s %s", "gone 1"));   /* unknown bridge */
    freeReplyObject(cmd("HSET t:client:c1 junk-s %s", "no-space")); /* unparsable */

    seen_sessions s = {0};
    assert_int_equal(cp_redis_client_sessions(r, TTL_MS, "c1", collect, &s), CP_REDIS_OK);
    assert_int_equal(s.count, 1);
    assert_string_equal(s.sid, "live-s");
    assert_string_equal(s.bridge, "b1");
    assert_int_equal(s.since, 555);

    memset(&s, 0, sizeof s);
    assert_int_equal(cp_redis_client_sessions(r, TTL_MS, "nobody", collect, &s), CP_REDIS_OK);
    assert_int_equal(s.count, 0);
    cp_redis_close(r);
}

static int holds_only_keep(void *ud, const char *sid)
{
    (void)ud;
    return strcmp(sid, "keep") == 0;
}

static void test_full_sync_removes_stale(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    /* what an earlier run of b1 left */
    cp_redis_queue_session_up(r, "b1", "c1", "keep", 1);
    cp_redis_queue_session_up(r, "b1", "c2", "stale", 2);
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);

    unsigned removed = 99;
    assert_int_equal(cp_redis_queue_stale_sessions(r, "b1", holds_only_keep, NULL, &removed),
                     CP_REDIS_OK);
    assert_int_equal(removed, 1);
    cp_redis_queue_session_up(r, "b1", "c1", "keep", 1);
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c2", "stale"), 0);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:bridge:b1:sessions", "stale"), 0);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c1", "keep"), 1);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:bridge:b1:sessions", "keep"), 1);
    cp_redis_close(r);
}

static void test_dead_bridge_cleanup(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    /* dead: old index entry, record expired; late: old entry, record still there */
    cp_redis_queue_session_up(r, "dead", "c1", "sd", 1);
    cp_redis_queue_session_up(r, "late", "c1", "sl", 2);
    cp_redis_queue_session_up(r, "other", "c1", "so", 3); /* a session elsewhere stays */
    assert_int_equal(cp_redis_flush(r), CP_REDIS_OK);
    freeReplyObject(cmd("ZADD t:bridges 1000 dead 1000 late"));
    freeReplyObject(cmd("HSET t:bridge:late id late"));

    assert_int_equal(cp_redis_remove_dead_bridges(r, TTL_MS), 1);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c1", "sd"), 0);
    assert_int_equal(cmd_int("EXISTS %s", "t:bridge:dead:sessions", NULL), 0);
    redisReply *z = cmd("ZSCORE t:bridges dead");
    assert_int_equal(z->type, REDIS_REPLY_NIL);
    freeReplyObject(z);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c1", "sl"), 1);
    assert_int_equal(cmd_int("HEXISTS %s %s", "t:client:c1", "so"), 1);
    z = cmd("ZSCORE t:bridges late");
    assert_int_equal(z->type, REDIS_REPLY_STRING);
    freeReplyObject(z);
    assert_int_equal(cp_redis_remove_dead_bridges(r, TTL_MS), 0);
    cp_redis_close(r);
}

static void test_reconnect_with_backoff(void **state)
{
    (void)state;
    cp_redis *r = open_handle(url, 1);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    redisFree(check);
    check = NULL;
    stop_server();

    int64_t t0 = cp_mono_ms();
    assert_int_equal(cp_redis_ping(r), CP_REDIS_LOST);
    assert_int_equal(cp_redis_connected(r), 0);
    /* Redis is back at once, but the handle waits out its backoff (200 ms
     * after a loss; it would double after each failed attempt). */
    assert_int_equal(start_server(), 0);
    assert_int_equal(connect_check(), 0);
    int rc;
    while ((rc = cp_redis_connect(r)) == CP_REDIS_DOWN && cp_mono_ms() - t0 < 5000)
        sleep_ms(5);
    int64_t waited = cp_mono_ms() - t0;
    assert_int_equal(rc, CP_REDIS_NEW); /* a writer resynchronises now */
    assert_true(waited >= 195);
    assert_true(waited < 2000);
    assert_int_equal(cp_redis_ping(r), CP_REDIS_OK);
    cp_redis_close(r);
}


/* ---- history streams ---------------------------------------------------- */

#define HIST 1000
#define HIST_TTL 60

typedef struct {
    int64_t offsets[2048];
    char data[2048][64];
    size_t n;
} collected;

static void collect_entry(void *ud, int64_t offset, const char *envelope, size_t len)
{
    collected *c = ud;
    if (c->n < 2048) {
        c->offsets[c->n] = offset;
        snprintf(c->data[c->n], sizeof c->data[c->n], "%.*s", (int)len, envelope);
        c->n++;
    }
}

static void append_one(cp_redis *r, const char *stream, const char *mid, const char *env,
                       long size, cp_redis_appended *out)
{
    cp_redis_queue_history_append(r, stream, mid, NULL, env, strlen(env), size, HIST_TTL);
    assert_int_equal(cp_redis_flush_appends(r, out, 1), CP_REDIS_OK);
}

static void test_history_offsets_idempotence_and_read(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    /* A pipeline of five appends: offsets 1..5 under one epoch. */
    char env[5][32], mid[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(env[i], sizeof env[i], "{\"msg\":{\"i\":%d}}", i);
        snprintf(mid[i], sizeof mid[i], "m%d", i);
        cp_redis_queue_history_append(r, "alice", mid[i], NULL, env[i], strlen(env[i]), HIST,
                                      HIST_TTL);
    }
    cp_redis_appended out[5];
    assert_int_equal(cp_redis_flush_appends(r, out, 5), CP_REDIS_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(out[i].offset, i + 1);
        assert_string_equal(out[i].epoch, out[0].epoch);
        assert_false(out[i].duplicate);
    }
    assert_int_equal(strlen(out[0].epoch), 16);
    /* A retry with the same messageId is not appended again. */
    cp_redis_appended again;
    append_one(r, "alice", "m3", env[3], HIST, &again);
    assert_int_equal(again.offset, 4);
    assert_true(again.duplicate);
    /* Another stream numbers on its own; the broadcast stream too. */
    cp_redis_appended other;
    append_one(r, "bob", "m0", env[0], HIST, &other);
    assert_int_equal(other.offset, 1);
    assert_string_not_equal(other.epoch, out[0].epoch);
    append_one(r, CP_REDIS_BROADCAST_STREAM, NULL, env[0], HIST, &other);
    assert_int_equal(other.offset, 1);
    /* Read what follows offset 2, in order, with the state. */
    collected *c = calloc(1, sizeof *c);
    cp_redis_stream_state st;
    assert_int_equal(cp_redis_history_read(r, "alice", 2, 100, &st, collect_entry, c), CP_REDIS_OK);
    assert_string_equal(st.epoch, out[0].epoch);
    assert_int_equal(st.last, 5);
    assert_int_equal(st.first, 1);
    assert_int_equal(c->n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c->offsets[i], i + 3);
        assert_string_equal(c->data[i], env[i + 2]);
    }
    /* Nothing after the last; an unknown stream has no state. */
    c->n = 0;
    assert_int_equal(cp_redis_history_read(r, "alice", 5, 100, &st, collect_entry, c), CP_REDIS_OK);
    assert_int_equal(c->n, 0);
    assert_int_equal(cp_redis_history_read(r, "nobody", 0, 100, &st, collect_entry, c), CP_REDIS_OK);
    assert_string_equal(st.epoch, "");
    assert_int_equal(st.last, 0);
    /* Every key of the stream expires, one hash tag per stream. */
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:hist", "") > 0);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:seq", "") > 0);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:ids", "") > 0);
    /* TTLs are renewed when the renewed marker (the slack: 6 s of 60) is
     * gone, not at every append. */
    long marker = cmd_int("TTL %s%s", "t:h:{alice}:renewed", "");
    assert_true(marker > 0 && marker <= 6);
    cmd_int("EXPIRE %s %s", "t:h:{alice}:hist", "57");
    cp_redis_appended later;
    append_one(r, "alice", "m9", "{\"msg\":{}}", HIST, &later);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:hist", "") <= 57); /* marker present: left */
    cmd_int("DEL %s%s", "t:h:{alice}:renewed", "");
    cmd_int("EXPIRE %s %s", "t:h:{alice}:seq", "30");
    cmd_int("EXPIRE %s %s", "t:h:{alice}:hist", "30");
    cmd_int("EXPIRE %s %s", "t:h:{alice}:epoch", "30");
    append_one(r, "alice", "m10", "{\"msg\":{}}", HIST, &later);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:seq", "") > 50);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:hist", "") > 50);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:epoch", "") > 50);
    /* A stream made anew under a live marker still gets its TTLs. */
    cmd_int("DEL %s%s", "t:h:{alice}:epoch", "");
    append_one(r, "alice", "m11", "{\"msg\":{}}", HIST, &later);
    assert_int_equal(later.offset, 1);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:seq", "") > 50);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:hist", "") > 50);
    assert_true(cmd_int("TTL %s%s", "t:h:{alice}:epoch", "") > 50);
    free(c);
    cp_redis_close(r);
}

/* A user that may not SCRIPT LOAD gets the script sent whole, and every
 * append of a pipeline still reads its own reply (the load is never tried
 * while appends are queued: its reply would be read in their place). */
static void test_history_without_script_load(void **state)
{
    (void)state;
    flushdb();
    freeReplyObject(cmd("ACL SETUSER noscript on >nspw ~* +@all -script|load"));
    char u[128];
    snprintf(u, sizeof u, "redis://noscript:nspw@127.0.0.1:%d/%d", port, DB);
    cp_redis *r = open_handle(u, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++)
            cp_redis_queue_history_append(r, "dave", NULL, NULL, "{}", 2, HIST, HIST_TTL);
        cp_redis_appended out[3];
        assert_int_equal(cp_redis_flush_appends(r, out, 3), CP_REDIS_OK);
        for (int i = 0; i < 3; i++)
            assert_int_equal(out[i].offset, round * 3 + i + 1);
    }
    cp_redis_close(r);
    freeReplyObject(cmd("ACL DELUSER noscript"));
}

static void test_history_trim_and_lost_epoch(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    cp_redis_appended out;
    for (int i = 0; i < 300; i++)
        append_one(r, "carol", NULL, "{\"msg\":{}}", 10, &out);
    assert_int_equal(out.offset, 300);
    collected *c = calloc(1, sizeof *c);
    cp_redis_stream_state st;
    assert_int_equal(cp_redis_history_read(r, "carol", 0, 1000, &st, collect_entry, c), CP_REDIS_OK);
    /* MAXLEN ~ 10 keeps at least 10, far fewer than 300, contiguous up to the last. */
    assert_true(c->n >= 10 && c->n < 300);
    assert_int_equal(st.first, c->offsets[0]);
    assert_int_equal(c->offsets[c->n - 1], 300);
    for (size_t i = 1; i < c->n; i++)
        assert_int_equal(c->offsets[i], c->offsets[i - 1] + 1);
    /* Redis emptied: the stream starts again at 1 under a new epoch. */
    char old_epoch[CP_REDIS_EPOCH_MAX + 1];
    snprintf(old_epoch, sizeof old_epoch, "%s", out.epoch);
    flushdb();
    append_one(r, "carol", NULL, "{\"msg\":{}}", 10, &out);
    assert_int_equal(out.offset, 1);
    assert_string_not_equal(out.epoch, old_epoch);
    /* The script flushed by an admin: the append is refused, the handle
     * reconnects and loads it again. */
    freeReplyObject(cmd("SCRIPT FLUSH"));
    cp_redis_queue_history_append(r, "carol", NULL, NULL, "{}", 2, 10, HIST_TTL);
    assert_int_equal(cp_redis_flush_appends(r, &out, 1), CP_REDIS_REFUSED);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    append_one(r, "carol", NULL, "{}", 10, &out);
    assert_int_equal(out.offset, 2);
    free(c);
    cp_redis_close(r);
}

/* Appenders on their own connections (HTTP API workers, bridges): every
 * offset is handed out once, none is skipped. */
#define APPENDERS 4
#define EACH 250

static void *appender(void *arg)
{
    int64_t *got = arg;
    cp_redis *r = open_handle(url, 0);
    if (cp_redis_connect(r) != CP_REDIS_NEW)
        return NULL;
    for (int i = 0; i < EACH; i += 10) {
        for (int k = 0; k < 10; k++)
            cp_redis_queue_history_append(r, "shared", NULL, NULL, "{}", 2, HIST, HIST_TTL);
        cp_redis_appended out[10];
        if (cp_redis_flush_appends(r, out, 10) != CP_REDIS_OK)
            break;
        for (int k = 0; k < 10; k++)
            got[i + k] = out[k].offset;
    }
    cp_redis_close(r);
    return NULL;
}

static void test_history_concurrent_appenders(void **state)
{
    (void)state;
    flushdb();
    static int64_t got[APPENDERS][EACH];
    memset(got, 0, sizeof got);
    pthread_t t[APPENDERS];
    for (int i = 0; i < APPENDERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, appender, got[i]), 0);
    for (int i = 0; i < APPENDERS; i++)
        pthread_join(t[i], NULL);
    static unsigned char seen[APPENDERS * EACH + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < APPENDERS; i++)
        for (int k = 0; k < EACH; k++) {
            int64_t o = got[i][k];
            assert_true(o >= 1 && o <= APPENDERS * EACH);
            assert_false(seen[o]);
            seen[o] = 1;
            if (k)
                assert_true(o > got[i][k - 1]); /* one connection's appends stay in order */
        }
}

/* The idempotency key matches a retry only with the same fingerprint;
 * another message under the same id is a conflict (nothing appended). */
static void test_history_fingerprint_conflict(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    cp_redis_appended a, b;
    cp_redis_queue_history_append(r, "erin", "order-1", "fpA", "{\"a\":1}", 7, HIST, HIST_TTL);
    assert_int_equal(cp_redis_flush_appends(r, &a, 1), CP_REDIS_OK);
    assert_int_equal(a.offset, 1);
    assert_false(a.duplicate || a.conflict);
    cp_redis_queue_history_append(r, "erin", "order-1", "fpA", "{\"a\":1}", 7, HIST, HIST_TTL);
    assert_int_equal(cp_redis_flush_appends(r, &b, 1), CP_REDIS_OK);
    assert_true(b.duplicate);
    assert_false(b.conflict);
    assert_int_equal(b.offset, 1);
    cp_redis_queue_history_append(r, "erin", "order-1", "fpB", "{\"b\":2}", 7, HIST, HIST_TTL);
    assert_int_equal(cp_redis_flush_appends(r, &b, 1), CP_REDIS_OK);
    assert_true(b.conflict);
    assert_false(b.duplicate);
    /* Nothing was appended for it. */
    cp_redis_stream_state st;
    collected *c = calloc(1, sizeof *c);
    assert_int_equal(cp_redis_history_read(r, "erin", 0, 10, &st, collect_entry, c), CP_REDIS_OK);
    assert_int_equal(st.last, 1);
    assert_int_equal(c->n, 1);
    free(c);
    cp_redis_close(r);
}

/* A stream last written under another server run (a restart, a failover,
 * possibly from an older state) gets a new epoch at its next append. */
static void test_history_epoch_follows_the_server_run(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    cp_redis_appended a, b;
    append_one(r, "frank", NULL, "{}", HIST, &a);
    append_one(r, "frank", NULL, "{}", HIST, &b);
    assert_string_equal(a.epoch, b.epoch); /* same run: same epoch */
    redisReply *rep = cmd("GET t:h:{frank}:inst");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_int_equal(rep->len, 40); /* the run_id */
    freeReplyObject(rep);
    freeReplyObject(cmd("SET t:h:{frank}:inst %s", "another-run"));
    append_one(r, "frank", NULL, "{}", HIST, &b);
    assert_string_not_equal(a.epoch, b.epoch);
    assert_int_equal(b.offset, 3); /* what was kept stays readable */
    cp_redis_close(r);
}

/* The records of messageIds and packet ids are bounded by the history,
 * not by the message rate: two hashes per stream, the current one turned
 * into the previous generation at twice the history size in fields. A
 * retry of any of the last history-size messages is still a duplicate;
 * no key is made per message. */
static void test_history_id_records_are_bounded(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    enum { SIZE = 10, MESSAGES = 95 };
    cp_redis_appended out[MESSAGES];
    for (int i = 0; i < MESSAGES; i++) {
        char mid[16];
        snprintf(mid, sizeof mid, "d%d", i);
        cp_redis_queue_history_append_packet(r, "dave", mid, "f", "{}", 2, SIZE, HIST_TTL, "s",
                                             i % 7 + 1);
    }
    assert_int_equal(cp_redis_flush_appends(r, out, MESSAGES), CP_REDIS_OK);
    for (int i = 0; i < MESSAGES; i++) {
        assert_int_equal(out[i].offset, i + 1);
        assert_false(out[i].duplicate);
    }
    /* seq, hist, epoch, inst, renewed and the two hashes: nothing per message. */
    assert_int_equal(cmd_int("DBSIZE", "", ""), 7);
    long long cur = cmd_int("HLEN %s%s", "t:h:{dave}:ids", "");
    long long prev = cmd_int("HLEN %s%s", "t:h:{dave}:ids0", "");
    assert_true(cur > 0 && cur < 2 * SIZE);
    assert_int_equal(prev, 2 * SIZE);
    assert_true(cmd_int("TTL %s%s", "t:h:{dave}:ids", "") > 0);
    assert_true(cmd_int("TTL %s%s", "t:h:{dave}:ids0", "") > 0);
    /* The last SIZE messages (and more) are known: their retries are
     * duplicates with their own offsets, the packet ids name their latest use. */
    for (int i = MESSAGES - SIZE; i < MESSAGES; i++) {
        char mid[16];
        snprintf(mid, sizeof mid, "d%d", i);
        cp_redis_queue_history_append(r, "dave", mid, "f", "{}", 2, SIZE, HIST_TTL);
    }
    assert_int_equal(cp_redis_flush_appends(r, out, SIZE), CP_REDIS_OK);
    for (int i = 0; i < SIZE; i++) {
        assert_true(out[i].duplicate);
        assert_int_equal(out[i].offset, MESSAGES - SIZE + i + 1);
    }
    const char *streams[7];
    int pids[7];
    char found[7][CP_REDIS_PACKET_MID_MAX + 1];
    for (int p = 0; p < 7; p++) {
        streams[p] = "dave";
        pids[p] = p + 1;
    }
    assert_int_equal(cp_redis_packet_lookup(r, streams, "s", pids, 7, found), CP_REDIS_OK);
    for (int p = 0; p < 7; p++) {
        int last = MESSAGES - 1;
        while (last % 7 + 1 != p + 1)
            last--;
        char want[16];
        snprintf(want, sizeof want, "d%d", last);
        assert_string_equal(found[p], want);
    }
    /* The oldest are forgotten: a retry of the first is a new message. */
    append_one(r, "dave", "d0", "{}", SIZE, &out[0]);
    assert_false(out[0].duplicate);
    assert_int_equal(out[0].offset, MESSAGES + 1);
    cp_redis_close(r);
}

/* The longest prefix, channel id and messageId: two ids that differ only
 * at their end are two records (no truncation). */
static void test_history_longest_keys(void **state)
{
    (void)state;
    flushdb();
    cp_redis_addr a;
    assert_int_equal(cp_redis_parse_url(url, &a), CP_REDIS_URL_OK);
    char prefix[65], stream[129], mid1[129], mid2[129];
    memset(prefix, 'p', 64);
    prefix[64] = '\0';
    memset(stream, 's', 128);
    stream[128] = '\0';
    memset(mid1, 'm', 128);
    mid1[128] = '\0';
    memcpy(mid2, mid1, sizeof mid2);
    mid1[127] = '1';
    mid2[127] = '2';
    cp_redis_options opt = {.prefix = prefix, .who = "test", .timeout_ms = 1000};
    cp_redis *r = cp_redis_open(&a, &opt);
    assert_non_null(r);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    cp_redis_appended out[2];
    cp_redis_queue_history_append(r, stream, mid1, "x", "{}", 2, HIST, HIST_TTL);
    cp_redis_queue_history_append(r, stream, mid2, "x", "{}", 2, HIST, HIST_TTL);
    assert_int_equal(cp_redis_flush_appends(r, out, 2), CP_REDIS_OK);
    assert_int_equal(out[0].offset, 1);
    assert_int_equal(out[1].offset, 2);
    assert_false(out[1].duplicate);
    char key[512], field[160];
    snprintf(key, sizeof key, "%s:h:{%s}:ids", prefix, stream);
    snprintf(field, sizeof field, "m:%s", mid2);
    assert_int_equal(cmd_int("HEXISTS %s %s", key, field), 1);
    cp_redis_close(r);
}

/* One holder at a time; renewed by its holder; given up by it only. */
static void test_lease(void **state)
{
    (void)state;
    flushdb();
    cp_redis *r = open_handle(url, 0);
    assert_int_equal(cp_redis_connect(r), CP_REDIS_NEW);
    int held = -1;
    assert_int_equal(cp_redis_lease(r, "seq", "one", 5000, &held), CP_REDIS_OK);
    assert_int_equal(held, 1);
    assert_int_equal(cp_redis_lease(r, "seq", "two", 5000, &held), CP_REDIS_OK);
    assert_int_equal(held, 0);
    assert_int_equal(cp_redis_lease(r, "seq", "one", 5000, &held), CP_REDIS_OK);
    assert_int_equal(held, 1);
    assert_int_equal(cp_redis_lease_release(r, "seq", "two"), CP_REDIS_OK); /* not its own */
    assert_int_equal(cp_redis_lease(r, "seq", "two", 5000, &held), CP_REDIS_OK);
    assert_int_equal(held, 0);
    assert_int_equal(cp_redis_lease_release(r, "seq", "one"), CP_REDIS_OK);
    assert_int_equal(cp_redis_lease(r, "seq", "two", 100, &held), CP_REDIS_OK);
    assert_int_equal(held, 1);
    usleep(300 * 1000); /* expired */
    assert_int_equal(cp_redis_lease(r, "seq", "one", 5000, &held), CP_REDIS_OK);
    assert_int_equal(held, 1);
    cp_redis_close(r);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_bridge_sessions_presence),
        cmocka_unit_test(test_client_sessions),
        cmocka_unit_test(test_full_sync_removes_stale),
        cmocka_unit_test(test_dead_bridge_cleanup),
        cmocka_unit_test(test_history_offsets_idempotence_and_read),
        cmocka_unit_test(test_history_without_script_load),
        cmocka_unit_test(test_history_trim_and_lost_epoch),
        cmocka_unit_test(test_history_concurrent_appenders),
        cmocka_unit_test(test_history_fingerprint_conflict),
        cmocka_unit_test(test_history_longest_keys),
        cmocka_unit_test(test_history_id_records_are_bounded),
        cmocka_unit_test(test_history_epoch_follows_the_server_run),
        cmocka_unit_test(test_lease),
        cmocka_unit_test(test_reconnect_with_backoff),
    };
    return cmocka_run_group_tests_name("redis_server", tests, setup, teardown);
}
