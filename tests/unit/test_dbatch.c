/* common/dbatch.c: the delivery batch format read back item by item, and
 * every malformed payload refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dbatch.h"

static void expect_item(const cp_buf *p, size_t *at, const char *channel, const char *env)
{
    cp_dbatch_item it;
    assert_int_equal(cp_dbatch_next(p->data, p->len, at, &it), 1);
    assert_int_equal(it.channel_len, strlen(channel));
    assert_memory_equal(it.channel, channel, it.channel_len);
    assert_int_equal(it.len, strlen(env));
    assert_memory_equal(it.envelope, env, it.len);
}

static void test_round_trip(void **state)
{
    (void)state;
    cp_dbatch d;
    cp_dbatch_init(&d);
    /* An envelope may hold spaces and digits; the length alone delimits it. */
    assert_int_equal(cp_dbatch_add(&d, "alice", "{\"msg\":{\"a\":\"1 2\\n\"}}", 21, NULL), 0);
    assert_int_equal(cp_dbatch_add(&d, NULL, "{\"msg\":{}}", 10, NULL), 0);
    assert_int_equal(cp_dbatch_add(&d, "bob.9:x@y-z", "", 0, NULL), 0);
    assert_int_equal(d.count, 0); /* no completion was given */
    assert_int_equal(d.items, 3);
    assert_memory_equal(d.payload.data, "cpb1\nalice 21\n", 14);
    size_t at = 0;
    expect_item(&d.payload, &at, "alice", "{\"msg\":{\"a\":\"1 2\\n\"}}");
    expect_item(&d.payload, &at, "*", "{\"msg\":{}}");
    expect_item(&d.payload, &at, "bob.9:x@y-z", "");
    cp_dbatch_item it;
    assert_int_equal(cp_dbatch_next(d.payload.data, d.payload.len, &at, &it), 0);
    assert_int_equal(at, d.payload.len);
    cp_dbatch_free(&d);
}

static void test_empty_batch_is_just_the_magic(void **state)
{
    (void)state;
    size_t at = 0;
    cp_dbatch_item it;
    assert_int_equal(cp_dbatch_next("cpb1\n", 5, &at, &it), 0);
}

typedef struct {
    cp_bus_op op;
    int calls, ok, code;
} counted_op;

static void counted_done(cp_bus_op *op, int ok, int code)
{
    counted_op *c = (counted_op *)op;
    c->calls++;
    c->ok = ok;
    c->code = code;
}

static void test_fail_completes_every_op_once(void **state)
{
    (void)state;
    cp_dbatch d;
    cp_dbatch_init(&d);
    counted_op ops[100];
    for (int i = 0; i < 100; i++) { /* past the first growth of the op list */
        ops[i] = (counted_op){.op.done = counted_done};
        assert_int_equal(cp_dbatch_add(&d, "c", "{}", 2, &ops[i].op), 0);
    }
    assert_int_equal(cp_dbatch_add(&d, "nobody-waits", "{}", 2, NULL), 0);
    assert_int_equal(d.count, 100);
    assert_int_equal(d.items, 101);
    cp_dbatch_fail(&d, -3);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ops[i].calls, 1);
        assert_int_equal(ops[i].ok, 0);
        assert_int_equal(ops[i].code, -3);
    }
    assert_int_equal(d.count, 0);
    assert_int_equal(d.items, 0);
    assert_int_equal(d.payload.len, 0);
    /* Emptied, it is reused: the next batch starts with the magic again. */
    assert_int_equal(cp_dbatch_add(&d, "c", "{}", 2, NULL), 0);
    assert_memory_equal(d.payload.data, "cpb1\nc 2\n{}\n", 12);
    cp_dbatch_free(&d);
}

static int parse_all(const char *payload)
{
    size_t at = 0, len = strlen(payload);
    cp_dbatch_item it;
    int rc, items = 0;
    while ((rc = cp_dbatch_next(payload, len, &at, &it)) == 1)
        items++;
    return rc < 0 ? -1 : items;
}

static void test_malformed(void **state)
{
    (void)state;
    assert_int_equal(parse_all("cpb1\na 2\nxy\n"), 1);
    assert_int_equal(parse_all(""), -1);                  /* no magic */
    assert_int_equal(parse_all("cpb2\na 2\nxy\n"), -1);   /* another version */
    assert_int_equal(parse_all("cpb1\na 3\nxy\n"), -1);   /* length past the end */
    assert_int_equal(parse_all("cpb1\na 1\nxy\n"), -1);   /* no LF after the envelope */
    assert_int_equal(parse_all("cpb1\na 2\nxy"), -1);     /* the last LF missing */
    assert_int_equal(parse_all("cpb1\n 2\nxy\n"), -1);    /* empty channel */
    assert_int_equal(parse_all("cpb1\na\n"), -1);         /* no length */
    assert_int_equal(parse_all("cpb1\na x\nxy\n"), -1);   /* length not a number */
    assert_int_equal(parse_all("cpb1\na 2 \nxy\n"), -1);  /* junk after the length */
    assert_int_equal(parse_all("cpb1\na 99999999999\nx\n"), -1); /* too many digits */
    assert_int_equal(parse_all("cpb1\na 18446744073\nx\n"), -1);
    char longch[200];
    memset(longch, 'c', sizeof longch);
    memcpy(longch, "cpb1\n", 5);
    memcpy(longch + 150, " 1\nx\n", 6);
    assert_int_equal(parse_all(longch), -1); /* a channel longer than 128 */
    /* The limit exactly: 128 characters pass, 129 do not. */
    char edge[160];
    memset(edge, 'c', sizeof edge);
    memcpy(edge, "cpb1\n", 5);
    memcpy(edge + 5 + 128, " 1\nx\n", 6);
    assert_int_equal(parse_all(edge), 1);
    memset(edge, 'c', sizeof edge);
    memcpy(edge, "cpb1\n", 5);
    memcpy(edge + 5 + 129, " 1\nx\n", 6);
    assert_int_equal(parse_all(edge), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_batch_is_just_the_magic),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_fail_completes_every_op_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
