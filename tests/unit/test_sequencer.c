/* Unit tests for common/sequencer.c's message logic (no I/O): what a
 * service message becomes on its way to the stream and the delivery
 * topic. The MQTT and Redis parts are tested in
 * tests/integration/test_streams.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "sequencer.h"

static int read_entry(cp_seq_entry *e, const char *topic, const char *payload, long max)
{
    char err[160];
    return cp_seq_entry_read(e, "cloudpush", topic, strlen(topic), payload, strlen(payload), max,
                             err, sizeof err);
}

static cJSON *written(cp_buf *b) { return cJSON_ParseWithLength(b->data, b->len); }

static void test_client_message_gets_one_id_and_an_offset(void **state)
{
    (void)state;
    cp_seq_entry e;
    assert_int_equal(read_entry(&e, "cloudpush/client/dev-1", "{\"msg\":{\"a\":1}}", 0), 0);
    assert_int_equal(e.kind, CP_TOPIC_DELIVER_CLIENT);
    assert_string_equal(e.stream, "dev-1");
    assert_int_equal(strlen(e.env.message_id), CP_MESSAGE_ID_LEN);
    char topic[CP_TOPIC_MAX];
    assert_true(cp_seq_entry_topic(&e, "cloudpush", topic, sizeof topic) > 0);
    assert_string_equal(topic, "cloudpush/d/client/dev-1");

    cp_buf stored, delivered;
    cp_buf_init(&stored);
    cp_buf_init(&delivered);
    assert_int_equal(cp_seq_entry_write_stored(&e, &stored), 0);
    assert_int_equal(cp_seq_entry_write_delivered(&e, &delivered, 42, "00000000deadbeef"), 0);
    cJSON *s = written(&stored), *d = written(&delivered);
    /* stored: no position (the stream entry's id is the offset) */
    assert_null(cJSON_GetObjectItem(s, "offset"));
    assert_null(cJSON_GetObjectItem(s, "epoch"));
    assert_null(cJSON_GetObjectItem(s, "broadcast"));
    assert_int_equal(cJSON_GetObjectItem(d, "offset")->valueint, 42);
    assert_string_equal(cJSON_GetObjectItem(d, "epoch")->valuestring, "00000000deadbeef");
    /* one messageId on both, the one given once here */
    assert_string_equal(cJSON_GetObjectItem(s, "messageId")->valuestring, e.env.message_id);
    assert_string_equal(cJSON_GetObjectItem(d, "messageId")->valuestring, e.env.message_id);
    assert_int_equal(cJSON_GetObjectItem(d, "msgType")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(d, "trigger")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(d, "from")->valuestring, "system");
    cJSON_Delete(s);
    cJSON_Delete(d);
    cp_buf_free(&stored);
    cp_buf_free(&delivered);
    cp_seq_entry_free(&e);
}

static void test_publisher_id_kept_and_positions_replaced(void **state)
{
    (void)state;
    cp_seq_entry e;
    assert_int_equal(read_entry(&e, "cloudpush/broadcast",
                                "{\"msg\":{},\"messageId\":\"svc-7\",\"offset\":9,\"epoch\":\"x\","
                                "\"recovered\":true,\"from\":\"billing\"}",
                                0),
                     0);
    assert_int_equal(e.kind, CP_TOPIC_DELIVER_BROADCAST);
    assert_string_equal(e.stream, "*");
    assert_string_equal(e.env.message_id, "svc-7");
    cp_buf b;
    cp_buf_init(&b);
    assert_int_equal(cp_seq_entry_write_stored(&e, &b), 0);
    cJSON *s = written(&b);
    assert_null(cJSON_GetObjectItem(s, "offset"));
    assert_null(cJSON_GetObjectItem(s, "epoch"));
    assert_null(cJSON_GetObjectItem(s, "recovered"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(s, "broadcast")));
    assert_string_equal(cJSON_GetObjectItem(s, "from")->valuestring, "billing");
    cJSON_Delete(s);
    /* Redis down: "offset":null, no epoch */
    cp_buf_reset(&b);
    assert_int_equal(cp_seq_entry_write_delivered(&e, &b, 0, NULL), 0);
    cJSON *d = written(&b);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "offset")));
    assert_null(cJSON_GetObjectItem(d, "epoch"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(d, "broadcast")));
    char topic[CP_TOPIC_MAX];
    cp_seq_entry_topic(&e, "cloudpush", topic, sizeof topic);
    assert_string_equal(topic, "cloudpush/d/broadcast");
    cJSON_Delete(d);
    cp_buf_free(&b);
    cp_seq_entry_free(&e);
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *topic, *payload;
        int rc;
    } cases[] = {
        {"cloudpush/client/dev-1", "not json", CP_SEQ_INVALID},
        {"cloudpush/client/dev-1", "{\"msg\":\"text\"}", CP_SEQ_INVALID},
        {"cloudpush/client/dev-1", "{\"foo\":1}", CP_SEQ_INVALID},
        {"cloudpush/client/dev-1", "{\"msg\":{},\"msgType\":3}", CP_SEQ_INVALID},
        {"cloudpush/client/bad id", "{\"msg\":{}}", CP_SEQ_INVALID},
        {"cloudpush/upstream/dev-1", "{\"msg\":{}}", CP_SEQ_INVALID},
        {"cloudpush/d/client/dev-1", "{\"msg\":{}}", CP_SEQ_INVALID},
        {"other/client/dev-1", "{\"msg\":{}}", CP_SEQ_INVALID},
        {"cloudpush/client/dev-1", "{\"msg\":{\"blob\":\"0123456789012345678901234567890\"}}",
         CP_SEQ_TOO_BIG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cp_seq_entry e;
        assert_int_equal(read_entry(&e, cases[i].topic, cases[i].payload, 40), cases[i].rc);
        assert_null(e.root);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_message_gets_one_id_and_an_offset),
        cmocka_unit_test(test_publisher_id_kept_and_positions_replaced),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
