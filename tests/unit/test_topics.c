/* Unit tests for common/topics.c: building, classifying and validating MQTT
 * topic names of the bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "topics.h"

static const char *const prefixes[] = {"cloudpush", "a/b"};

static void test_build_every_kind(void **state)
{
    (void)state;
    static const struct {
        cp_topic_kind kind;
        const char *suffix;
    } cases[] = {
        {CP_TOPIC_CLIENT, "/client/dev-1"},
        {CP_TOPIC_BROADCAST, "/broadcast"},
        {CP_TOPIC_UPSTREAM, "/upstream/dev-1"},
        {CP_TOPIC_ACK, "/ack/dev-1"},
        {CP_TOPIC_PRESENCE, "/presence/dev-1"},
        {CP_TOPIC_DELIVER_CLIENT, "/d/client/dev-1"},
        {CP_TOPIC_DELIVER_BROADCAST, "/d/broadcast"},
    };
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char out[CP_TOPIC_MAX];
            char expect[CP_TOPIC_MAX];
            strcpy(expect, prefixes[p]);
            strcat(expect, cases[i].suffix);
            int n = cp_topic_build(out, sizeof out, prefixes[p], cases[i].kind, "dev-1");
            assert_string_equal(out, expect);
            assert_int_equal(n, (int)strlen(expect));
        }
    }
}

static void test_build_broadcast_ignores_channel(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(cp_topic_build(out, sizeof out, "cloudpush", CP_TOPIC_BROADCAST, NULL), 19);
    assert_string_equal(out, "cloudpush/broadcast");
}

static void test_build_errors(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(cp_topic_build(out, sizeof out, "cloudpush", CP_TOPIC_UNKNOWN, "x"), -1);
    assert_int_equal(cp_topic_build(out, sizeof out, "cloudpush", (cp_topic_kind)(CP_TOPIC__LAST + 1), "x"), -1);
    assert_int_equal(cp_topic_build(out, sizeof out, "cloudpush", (cp_topic_kind)-1, "x"), -1);
    /* "cloudpush/ack/x" is 15 characters: needs 16 bytes. */
    assert_int_equal(cp_topic_build(out, 16, "cloudpush", CP_TOPIC_ACK, "x"), 15);
    assert_int_equal(cp_topic_build(out, 15, "cloudpush", CP_TOPIC_ACK, "x"), -1);
    assert_int_equal(cp_topic_build(out, 1, "cloudpush", CP_TOPIC_BROADCAST, NULL), -1);

    /* The documented maximum fits in CP_TOPIC_MAX. */
    char prefix[CP_PREFIX_MAX + 1], chan[129], big[CP_TOPIC_MAX];
    memset(prefix, 'p', CP_PREFIX_MAX);
    prefix[CP_PREFIX_MAX] = '\0';
    memset(chan, 'c', 128);
    chan[128] = '\0';
    assert_int_equal(cp_topic_build(big, sizeof big, prefix, CP_TOPIC_PRESENCE, chan),
                     64 + 10 + 128);
    assert_int_equal(cp_topic_build(big, sizeof big, prefix, CP_TOPIC_SESSION_CONTROL, chan),
                     64 + 17 + 128);
}

static void parse_ok(const char *prefix, const char *topic, cp_topic_kind kind,
                     const char *channel)
{
    const char *ch = (const char *)1;
    size_t chlen = 999;
    cp_topic_kind k = cp_topic_parse(prefix, topic, strlen(topic), &ch, &chlen);
    assert_int_equal(k, kind);
    if (channel) {
        assert_non_null(ch);
        assert_int_equal(chlen, strlen(channel));
        assert_memory_equal(ch, channel, chlen);
        /* channel points into topic */
        assert_true(ch >= topic && ch + chlen == topic + strlen(topic));
    } else {
        assert_null(ch);
        assert_int_equal(chlen, 0);
    }
}

static void parse_unknown(const char *prefix, const char *topic)
{
    const char *ch = (const char *)1;
    size_t chlen = 999;
    assert_int_equal(cp_topic_parse(prefix, topic, strlen(topic), &ch, &chlen),
                     CP_TOPIC_UNKNOWN);
    assert_null(ch);
    assert_int_equal(chlen, 0);
}

static void test_parse_every_kind(void **state)
{
    (void)state;
    parse_ok("cloudpush", "cloudpush/client/dev-1", CP_TOPIC_CLIENT, "dev-1");
    parse_ok("cloudpush", "cloudpush/broadcast", CP_TOPIC_BROADCAST, NULL);
    parse_ok("cloudpush", "cloudpush/upstream/u@x.y", CP_TOPIC_UPSTREAM, "u@x.y");
    parse_ok("cloudpush", "cloudpush/ack/a", CP_TOPIC_ACK, "a");
    parse_ok("cloudpush", "cloudpush/presence/p:1", CP_TOPIC_PRESENCE, "p:1");
    parse_ok("cloudpush", "cloudpush/control/session/c-1", CP_TOPIC_SESSION_CONTROL, "c-1");
    parse_ok("cloudpush", "cloudpush/control/sessions/c-1", CP_TOPIC_UNKNOWN, NULL);
    parse_ok("cloudpush", "cloudpush/control/c-1", CP_TOPIC_UNKNOWN, NULL);
    parse_ok("cloudpush", "cloudpush/d/client/x", CP_TOPIC_DELIVER_CLIENT, "x");
    parse_ok("cloudpush", "cloudpush/d/broadcast", CP_TOPIC_DELIVER_BROADCAST, NULL);
    parse_ok("cloudpush", "cloudpush/d/broadcast/x", CP_TOPIC_UNKNOWN, NULL);
    parse_ok("cloudpush", "cloudpush/d/x", CP_TOPIC_UNKNOWN, NULL);
    parse_ok("cloudpush", "cloudpush/d/batch", CP_TOPIC_DELIVER_BATCH, NULL);
    parse_ok("cloudpush", "cloudpush/d/batch/x", CP_TOPIC_UNKNOWN, NULL);
    parse_ok("cloudpush", "cloudpush/d/resync", CP_TOPIC_DELIVER_RESYNC, NULL);

    parse_ok("a/b", "a/b/client/dev-1", CP_TOPIC_CLIENT, "dev-1");
    parse_ok("a/b", "a/b/broadcast", CP_TOPIC_BROADCAST, NULL);
    parse_ok("a/b", "a/b/upstream/x", CP_TOPIC_UPSTREAM, "x");
    parse_ok("a/b", "a/b/ack/x", CP_TOPIC_ACK, "x");
    parse_ok("a/b", "a/b/presence/x", CP_TOPIC_PRESENCE, "x");
    parse_ok("a/b", "a/b/sequencer/broker", CP_TOPIC_BROKER_ID, NULL);
}

static void test_build_parse_round_trip(void **state)
{
    (void)state;
    for (size_t p = 0; p < 2; p++) {
        for (int k = CP_TOPIC_CLIENT; k <= CP_TOPIC__LAST; k++) {
            char out[CP_TOPIC_MAX];
            int n = cp_topic_build(out, sizeof out, prefixes[p], (cp_topic_kind)k, "ch.9");
            assert_true(n > 0);
            const char *ch;
            size_t chlen;
            assert_int_equal(cp_topic_parse(prefixes[p], out, (size_t)n, &ch, &chlen), k);
            if (k == CP_TOPIC_BROADCAST || k == CP_TOPIC_DELIVER_BROADCAST ||
                k == CP_TOPIC_BROKER_ID || k == CP_TOPIC_DELIVER_BATCH ||
                k == CP_TOPIC_DELIVER_RESYNC) {
                assert_null(ch);
            } else {
                assert_int_equal(chlen, 4);
                assert_memory_equal(ch, "ch.9", 4);
            }
        }
    }
}

static void test_parse_uses_len(void **state)
{
    (void)state;
    /* The topic need not be NUL-terminated: only len bytes count. */
    const char *t = "cloudpush/client/abcdef";
    const char *ch;
    size_t chlen;
    assert_int_equal(cp_topic_parse("cloudpush", t, 20, &ch, &chlen), CP_TOPIC_CLIENT);
    assert_int_equal(chlen, 3);
    assert_memory_equal(ch, "abc", 3);
    assert_int_equal(cp_topic_parse("cloudpush", t, 19, &ch, &chlen), CP_TOPIC_CLIENT);
    assert_int_equal(chlen, 2);
    /* Cut right after "client/": empty channel. */
    assert_int_equal(cp_topic_parse("cloudpush", t, 17, &ch, &chlen), CP_TOPIC_UNKNOWN);
    assert_int_equal(cp_topic_parse("cloudpush", "cloudpush/broadcastXYZ", 19, &ch, &chlen),
                     CP_TOPIC_BROADCAST);
    assert_int_equal(cp_topic_parse("cloudpush", t, 0, &ch, &chlen), CP_TOPIC_UNKNOWN);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    /* Wrong or partial prefix. */
    parse_unknown("cloudpush", "other/client/x");
    parse_unknown("cloudpush", "cloudpushx/client/x");
    parse_unknown("cloudpush", "cloudpus/client/x");
    parse_unknown("cloudpush", "cloudpush_client/x"); /* no '/' after the prefix */
    parse_unknown("cloudpush", "cloudpushXbroadcast");
    parse_unknown("a/b", "a/b:ack/x");
    parse_unknown("cloudpush", "Cloudpush/client/x");
    parse_unknown("cloudpush", "/cloudpush/client/x");
    parse_unknown("a/b", "a/client/x");
    parse_unknown("a/b", "a/bc/client/x");
    parse_unknown("a/b", "b/client/x");
    parse_unknown("cloudpush", "");
    parse_unknown("cloudpush", "cloudpush");
    parse_unknown("cloudpush", "cloudpush/");
    /* Empty or missing channel. */
    parse_unknown("cloudpush", "cloudpush/client/");
    parse_unknown("cloudpush", "cloudpush/client");
    parse_unknown("cloudpush", "cloudpush/upstream/");
    parse_unknown("cloudpush", "cloudpush/ack");
    parse_unknown("cloudpush", "cloudpush/presence/");
    parse_unknown("a/b", "a/b/client/");
    /* Broadcast takes nothing after it. */
    parse_unknown("cloudpush", "cloudpush/broadcastx");
    parse_unknown("cloudpush", "cloudpush/broadcast/");
    parse_unknown("cloudpush", "cloudpush/broadcast/x");
    /* Kind names must match exactly. */
    parse_unknown("cloudpush", "cloudpush/clients/x");
    parse_unknown("cloudpush", "cloudpush/clientx");
    parse_unknown("cloudpush", "cloudpush/Client/x");
    parse_unknown("cloudpush", "cloudpush/acks/x");
    parse_unknown("cloudpush", "cloudpush/broad");
    parse_unknown("cloudpush", "cloudpush/unknown/x");
    parse_unknown("cloudpush", "cloudpush/status/x");
    parse_unknown("cloudpush", "cloudpush//client/x");
}

static void test_prefix_valid(void **state)
{
    (void)state;
    assert_true(cp_topic_prefix_valid("cloudpush"));
    assert_true(cp_topic_prefix_valid("a/b"));
    assert_true(cp_topic_prefix_valid("a"));
    assert_true(cp_topic_prefix_valid("tenant-1/prod.eu_west/cloudpush"));
    assert_true(cp_topic_prefix_valid("A.B_C-D/0"));

    char p[CP_PREFIX_MAX + 2];
    memset(p, 'x', sizeof p);
    p[CP_PREFIX_MAX] = '\0';
    assert_true(cp_topic_prefix_valid(p)); /* exactly 64 */
    p[CP_PREFIX_MAX] = 'x';
    p[CP_PREFIX_MAX + 1] = '\0';
    assert_false(cp_topic_prefix_valid(p)); /* 65 */

    assert_false(cp_topic_prefix_valid(""));
    assert_false(cp_topic_prefix_valid("/"));
    assert_false(cp_topic_prefix_valid("/a"));
    assert_false(cp_topic_prefix_valid("a/"));
    assert_false(cp_topic_prefix_valid("a//b"));
    assert_false(cp_topic_prefix_valid("a/+/b"));
    assert_false(cp_topic_prefix_valid("a/#"));
    assert_false(cp_topic_prefix_valid("#"));
    assert_false(cp_topic_prefix_valid("+"));
    assert_false(cp_topic_prefix_valid("a b"));
    assert_false(cp_topic_prefix_valid("a:b"));
    assert_false(cp_topic_prefix_valid("a@b"));
    assert_false(cp_topic_prefix_valid("caf\xc3\xa9"));
    assert_false(cp_topic_prefix_valid("$SYS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_every_kind),
        cmocka_unit_test(test_build_broadcast_ignores_channel),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_parse_every_kind),
        cmocka_unit_test(test_build_parse_round_trip),
        cmocka_unit_test(test_parse_uses_len),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_prefix_valid),
    };
    return cmocka_run_group_tests_name("topics", tests, NULL, NULL);
}
