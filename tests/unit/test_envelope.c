/* Unit tests for common/envelope.c: parsing/validation, compact writing in
 * alphabetical key order, split (per-recipient) writing, escaping and round
 * trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "envelope.h"
#include "ids.h"

/* ---- helpers ------------------------------------------------------------ */

static cJSON *parse_str(const char *json, cp_envelope *env, char *err, size_t cap)
{
    return cp_envelope_parse(json, strlen(json), env, err, cap);
}

/* Parses json, which must be accepted. */
static cJSON *must_parse(const char *json, cp_envelope *env)
{
    char err[128] = "";
    cJSON *root = parse_str(json, env, err, sizeof err);
    if (!root)
        fail_msg("rejected %s: %s", json, err);
    return root;
}

/* json must be rejected with an error text containing err_part. */
static void must_reject(const char *json, const char *err_part)
{
    cp_envelope env;
    char err[128] = "";
    memset(&env, 0xAB, sizeof env);
    cJSON *root = parse_str(json, &env, err, sizeof err);
    if (root) {
        cJSON_Delete(root);
        fail_msg("accepted %s", json);
    }
    if (err_part && !strstr(err, err_part))
        fail_msg("error for %s is '%s', expected it to mention '%s'", json, err, err_part);
    /* A rejected envelope is left zeroed, with no dangling pointers. */
    assert_int_equal(env.fields, 0);
    assert_null(env.from);
    assert_null(env.msg);
    assert_null(env.to);
}

/* Writes env into a fresh buffer and returns a malloc'd copy. */
static char *write_str(const cp_envelope *env)
{
    cp_buf b;
    cp_buf_init(&b);
    assert_int_equal(cp_envelope_write(&b, env, NULL), 0);
    char *s = strdup(cp_buf_cstr(&b));
    cp_buf_free(&b);
    return s;
}

static void assert_writes(const cp_envelope *env, const char *expect)
{
    char *s = write_str(env);
    assert_string_equal(s, expect);
    assert_true(cp_utf8_valid(s, strlen(s)));
    free(s);
}

static const char FULL[] =
    "{\"activeTime\":1700000000123,\"from\":\"server-1\",\"messageId\":\"m-1\","
    "\"msg\":{\"title\":\"hi\",\"n\":[1,2.5,true,null],\"o\":{}},\"msgType\":1,"
    "\"requestId\":\"r-1\",\"resultMsg\":\"ok\",\"sessionId\":\"s-1\","
    "\"to\":[\"dev-1\",\"dev-2\"],\"trigger\":3}";

/* ---- parse: valid ------------------------------------------------------- */

static void test_parse_all_fields(void **state)
{
    (void)state;
    cp_envelope e;
    cJSON *root = must_parse(FULL, &e);
    assert_int_equal(e.fields, CP_F_ACTIVE_TIME | CP_F_FROM | CP_F_MESSAGE_ID | CP_F_MSG |
                                   CP_F_MSG_TYPE | CP_F_REQUEST_ID | CP_F_RESULT_MSG |
                                   CP_F_SESSION_ID | CP_F_TO | CP_F_TRIGGER);
    assert_true(e.active_time == 1700000000123LL);
    assert_string_equal(e.from, "server-1");
    assert_string_equal(e.message_id, "m-1");
    assert_non_null(e.msg);
    assert_true(cJSON_IsObject(e.msg));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(e.msg, "title")->valuestring, "hi");
    assert_int_equal(e.msg_type, CP_MSG_BUSINESS);
    assert_string_equal(e.request_id, "r-1");
    assert_string_equal(e.result_msg, "ok");
    assert_string_equal(e.session_id, "s-1");
    assert_non_null(e.to);
    assert_int_equal(cJSON_GetArraySize(e.to), 2);
    assert_string_equal(cJSON_GetArrayItem(e.to, 1)->valuestring, "dev-2");
    assert_null(e.to_single);
    assert_int_equal(e.trigger, CP_TRIGGER_MQTT);
    cJSON_Delete(root);
}

static void test_parse_minimal(void **state)
{
    (void)state;
    cp_envelope e;
    cJSON *root = must_parse("{}", &e);
    assert_int_equal(e.fields, 0);
    cJSON_Delete(root);

    root = must_parse(" \n{ \"msgType\" : 3 }\t", &e);
    assert_int_equal(e.fields, CP_F_MSG_TYPE);
    assert_int_equal(e.msg_type, CP_MSG_HEARTBEAT);
    cJSON_Delete(root);

    /* Unknown keys are ignored. */
    root = must_parse("{\"msgType\":0,\"extra\":[1,{\"x\":2}],\"MSGTYPE\":\"zz\"}", &e);
    assert_int_equal(e.fields, CP_F_MSG_TYPE);
    assert_int_equal(e.msg_type, CP_MSG_CONNECTION);
    cJSON_Delete(root);
}

static void test_parse_msg_type_forms(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int type;
    } cases[] = {
        {"{\"msgType\":-1}", CP_MSG_ERROR},
        {"{\"msgType\":0}", CP_MSG_CONNECTION},
        {"{\"msgType\":1}", CP_MSG_BUSINESS},
        {"{\"msgType\":2}", CP_MSG_BUSINESS_ACK},
        {"{\"msgType\":3}", CP_MSG_HEARTBEAT},
        {"{\"msgType\":4}", CP_MSG_HEARTBEAT_ACK},
        {"{\"msgType\":1.0}", CP_MSG_BUSINESS},
        {"{\"msgType\":1e0}", CP_MSG_BUSINESS},
        {"{\"msgType\":\"1\"}", CP_MSG_BUSINESS},
        {"{\"msgType\":\"0\"}", CP_MSG_CONNECTION},
        {"{\"msgType\":\"4\"}", CP_MSG_HEARTBEAT_ACK},
        {"{\"msgType\":\"-1\"}", CP_MSG_ERROR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cp_envelope e;
        cJSON *root = must_parse(cases[i].json, &e);
        assert_int_equal(e.fields, CP_F_MSG_TYPE);
        assert_int_equal(e.msg_type, cases[i].type);
        cJSON_Delete(root);
    }
}

static void test_parse_nulls_are_absent(void **state)
{
    (void)state;
    cp_envelope e;
    cJSON *root = must_parse(
        "{\"activeTime\":null,\"from\":null,\"messageId\":null,\"msg\":null,\"msgType\":null,"
        "\"requestId\":null,\"resultMsg\":null,\"sessionId\":null,\"to\":null,\"trigger\":null}",
        &e);
    assert_int_equal(e.fields, 0);
    assert_null(e.from);
    assert_null(e.message_id);
    assert_null(e.msg);
    assert_null(e.to);
    assert_null(e.session_id);
    char *s = write_str(&e);
    assert_string_equal(s, "{}");
    free(s);
    cJSON_Delete(root);

    root = must_parse("{\"msgType\":2,\"from\":null,\"to\":[\"a\"]}", &e);
    assert_int_equal(e.fields, CP_F_MSG_TYPE | CP_F_TO);
    cJSON_Delete(root);
}

static void test_parse_edge_values(void **state)
{
    (void)state;
    cp_envelope e;
    /* Empty containers and strings are present, not absent. */
    cJSON *root = must_parse("{\"msg\":{},\"to\":[],\"from\":\"\",\"resultMsg\":\"\"}", &e);
    assert_int_equal(e.fields, CP_F_MSG | CP_F_TO | CP_F_FROM | CP_F_RESULT_MSG);
    assert_int_equal(cJSON_GetArraySize(e.to), 0);
    assert_string_equal(e.from, "");
    cJSON_Delete(root);

    /* activeTime: 0 and 2^53 are the limits. */
    root = must_parse("{\"activeTime\":0}", &e);
    assert_true(e.active_time == 0);
    cJSON_Delete(root);
    root = must_parse("{\"activeTime\":9007199254740992}", &e);
    assert_true(e.active_time == 9007199254740992LL);
    cJSON_Delete(root);

    /* trigger 0..100 */
    root = must_parse("{\"trigger\":0}", &e);
    assert_int_equal(e.trigger, 0);
    assert_int_equal(e.fields, CP_F_TRIGGER);
    cJSON_Delete(root);
    root = must_parse("{\"trigger\":100}", &e);
    assert_int_equal(e.trigger, 100);
    cJSON_Delete(root);

    /* Ids of exactly 128 characters are accepted; resultMsg has no limit. */
    char json[1200], id[129], big[1001];
    memset(id, 'i', 128);
    id[128] = '\0';
    memset(big, 'r', 1000);
    big[1000] = '\0';
    snprintf(json, sizeof json, "{\"messageId\":\"%s\",\"from\":\"%s\",\"requestId\":\"%s\"}", id,
             id, id);
    root = must_parse(json, &e);
    assert_int_equal(strlen(e.message_id), 128);
    assert_int_equal(strlen(e.from), 128);
    assert_int_equal(strlen(e.request_id), 128);
    cJSON_Delete(root);
    snprintf(json, sizeof json, "{\"resultMsg\":\"%s\",\"sessionId\":\"%s\"}", big, id);
    root = must_parse(json, &e);
    assert_int_equal(strlen(e.result_msg), 1000);
    cJSON_Delete(root);
}

static void test_parse_uses_len(void **state)
{
    (void)state;
    /* Only len bytes are parsed: the rest of the buffer is not looked at. */
    const char *data = "{\"msgType\":1}{\"msgType\":2}";
    cp_envelope e;
    cJSON *root = cp_envelope_parse(data, 13, &e, NULL, 0);
    assert_non_null(root);
    assert_int_equal(e.msg_type, 1);
    cJSON_Delete(root);
    /* Cut in the middle: invalid. */
    assert_null(cp_envelope_parse(data, 12, &e, NULL, 0));
    assert_null(cp_envelope_parse(data, 0, &e, NULL, 0));
}

/* ---- parse: rejected ---------------------------------------------------- */

static void test_reject_invalid_json(void **state)
{
    (void)state;
    must_reject("", "invalid JSON");
    must_reject("{", "invalid JSON");
    must_reject("{\"msgType\":1", "invalid JSON");
    must_reject("{\"msgType\":1,}", "invalid JSON");
    must_reject("{msgType:1}", "invalid JSON");
    must_reject("{'msgType':1}", "invalid JSON");
    must_reject("{\"msgType\":01x}", "invalid JSON");
    must_reject("{\"from\":\"unterminated}", "invalid JSON");
    must_reject("not json", "invalid JSON");
    /* cJSON decodes \u with a bad hex digit as U+0000, cutting the string
     * short as \u0000 would: refused like it. */
    must_reject("{\"from\":\"a\\u00zzb\",\"msgType\":1}", "invalid JSON");
    must_reject("{\"from\":\"a\\u12\",\"msgType\":1}", "invalid JSON");
    must_reject("{\"from\":\"a\\qb\",\"msgType\":1}", "invalid JSON");
}

static void test_reject_non_object_root(void **state)
{
    (void)state;
    must_reject("[]", "object");
    must_reject("[{\"msgType\":1}]", "object");
    must_reject("\"str\"", "object");
    must_reject("42", "object");
    must_reject("true", "object");
    must_reject("null", "object");
}

static void test_reject_msg_not_object(void **state)
{
    (void)state;
    must_reject("{\"msg\":[]}", "msg");
    must_reject("{\"msg\":[{\"a\":1}]}", "msg");
    must_reject("{\"msg\":\"text\"}", "msg");
    must_reject("{\"msg\":1}", "msg");
    must_reject("{\"msg\":true}", "msg");
}

static void test_reject_msg_type(void **state)
{
    (void)state;
    must_reject("{\"msgType\":6}", "msgType");
    must_reject("{\"msgType\":-2}", "msgType");
    must_reject("{\"msgType\":1.5}", "msgType");
    must_reject("{\"msgType\":100000000000000000000}", "msgType");
    must_reject("{\"msgType\":1e300}", "msgType");
    must_reject("{\"msgType\":\"abc\"}", "msgType");
    must_reject("{\"msgType\":\"\"}", "msgType");
    must_reject("{\"msgType\":\"1x\"}", "msgType");
    must_reject("{\"msgType\":\"1.0\"}", "msgType");
    must_reject("{\"msgType\":\"6\"}", "msgType");
    must_reject("{\"msgType\":\"-2\"}", "msgType");
    must_reject("{\"msgType\":\"99999999999999999999999\"}", "msgType");
    must_reject("{\"msgType\":true}", "msgType");
    must_reject("{\"msgType\":[1]}", "msgType");
    must_reject("{\"msgType\":{}}", "msgType");
    /* Fields parsed before the bad one are not left behind in env. */
    must_reject("{\"from\":\"a\",\"msg\":{},\"msgType\":9}", "msgType");
    must_reject("{\"activeTime\":1,\"from\":\"a\",\"msg\":{},\"msgType\":1,\"to\":[1]}", "to");
}

static void test_reject_to(void **state)
{
    (void)state;
    must_reject("{\"to\":\"dev-1\"}", "to");
    must_reject("{\"to\":{}}", "to");
    must_reject("{\"to\":1}", "to");
    must_reject("{\"to\":[1]}", "to");
    must_reject("{\"to\":[\"a\",2]}", "to");
    must_reject("{\"to\":[\"a\",null]}", "to");
    must_reject("{\"to\":[[\"a\"]]}", "to");
    must_reject("{\"to\":[{}]}", "to");
}

static void test_reject_active_time(void **state)
{
    (void)state;
    must_reject("{\"activeTime\":\"1700000000000\"}", "activeTime");
    must_reject("{\"activeTime\":-1}", "activeTime");
    must_reject("{\"activeTime\":1e300}", "activeTime");
    must_reject("{\"activeTime\":9007199254740994}", "activeTime");
    must_reject("{\"activeTime\":true}", "activeTime");
    must_reject("{\"activeTime\":[]}", "activeTime");
}

static void test_reject_trigger(void **state)
{
    (void)state;
    must_reject("{\"trigger\":\"1\"}", "trigger");
    must_reject("{\"trigger\":1.5}", "trigger");
    must_reject("{\"trigger\":-1}", "trigger");
    must_reject("{\"trigger\":101}", "trigger");
    must_reject("{\"trigger\":false}", "trigger");
}

static void test_reject_strings(void **state)
{
    (void)state;
    must_reject("{\"from\":1}", "from");
    must_reject("{\"messageId\":123}", "messageId");
    must_reject("{\"requestId\":{}}", "requestId");
    must_reject("{\"resultMsg\":[]}", "resultMsg");
    must_reject("{\"sessionId\":true}", "sessionId");

    char json[400], id[130];
    memset(id, 'x', 129);
    id[129] = '\0';
    snprintf(json, sizeof json, "{\"messageId\":\"%s\"}", id);
    must_reject(json, "messageId is too long");
    snprintf(json, sizeof json, "{\"from\":\"%s\"}", id);
    must_reject(json, "from is too long");
    snprintf(json, sizeof json, "{\"requestId\":\"%s\"}", id);
    must_reject(json, "requestId is too long");
}

static void test_reject_error_buffer(void **state)
{
    (void)state;
    /* NULL / zero-sized / tiny error buffers are fine. */
    cp_envelope e;
    assert_null(cp_envelope_parse("[]", 2, &e, NULL, 0));
    char tiny[4] = "zzz";
    assert_null(cp_envelope_parse("[]", 2, &e, tiny, 0));
    assert_string_equal(tiny, "zzz");
    assert_null(cp_envelope_parse("[]", 2, &e, tiny, sizeof tiny));
    assert_int_equal(strlen(tiny), 3);
}

/* Regression (fixed; common/envelope.c, cp_envelope_parse): cJSON_ParseWithLength
 * does not require the input to end after the JSON value, so an envelope
 * followed by garbage is accepted as valid. Expected: "invalid JSON". */
static void test_regression_reject_trailing_garbage(void **state)
{
    (void)state;
    must_reject("{\"msgType\":1}garbage", "invalid JSON");
    must_reject("{\"msgType\":1}}", "invalid JSON");
    must_reject("{\"msgType\":1} {\"msgType\":2}", "invalid JSON");
}

/* ---- write -------------------------------------------------------------- */

static void test_write_all_fields_alphabetical(void **state)
{
    (void)state;
    cJSON *msg = cJSON_Parse("{\"b\":1,\"a\":[true,null,\"x\"],\"c\":{\"d\":-2.5}}");
    assert_non_null(msg);
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_ACTIVE_TIME | CP_F_FROM | CP_F_MESSAGE_ID | CP_F_MSG | CP_F_MSG_TYPE |
               CP_F_REQUEST_ID | CP_F_RESULT_MSG | CP_F_SESSION_ID | CP_F_TO | CP_F_TRIGGER;
    e.trigger = CP_TRIGGER_HTTP;
    e.to_single = "dev-1";
    e.session_id = "sess-1";
    e.result_msg = "done";
    e.request_id = "req-1";
    e.msg_type = CP_MSG_BUSINESS;
    e.msg = msg;
    e.message_id = "0123456789abcdef0123456789abcdef";
    e.from = "httpapi";
    e.active_time = 1700000000123LL;
    assert_writes(&e, "{\"activeTime\":1700000000123,\"from\":\"httpapi\","
                      "\"messageId\":\"0123456789abcdef0123456789abcdef\","
                      "\"msg\":{\"b\":1,\"a\":[true,null,\"x\"],\"c\":{\"d\":-2.5}},"
                      "\"msgType\":1,\"requestId\":\"req-1\",\"resultMsg\":\"done\","
                      "\"sessionId\":\"sess-1\",\"to\":[\"dev-1\"],\"trigger\":1}");
    cJSON_Delete(msg);
}

/* The stream fields of issue 13: written in alphabetical order among the
 * others, read back the same, "offset":null kept as -1 (not stored). */
static void test_stream_fields_round_trip(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_ACTIVE_TIME | CP_F_BEPOCH | CP_F_BOFFSET | CP_F_BROADCAST | CP_F_EPOCH |
               CP_F_FROM | CP_F_MSG_TYPE | CP_F_OFFSET | CP_F_RECOVERED | CP_F_REQUEST_ID;
    e.active_time = 5;
    e.bepoch = "be";
    e.boffset = 0;
    e.epoch = "e1";
    e.from = "x";
    e.msg_type = CP_MSG_CONNECTION;
    e.offset = 9007199254740992LL;
    e.recovered = 0;
    e.request_id = "r";
    const char *want = "{\"activeTime\":5,\"bepoch\":\"be\",\"boffset\":0,\"broadcast\":true,"
                       "\"epoch\":\"e1\",\"from\":\"x\",\"msgType\":0,"
                       "\"offset\":9007199254740992,\"recovered\":false,\"requestId\":\"r\"}";
    assert_writes(&e, want);

    cp_envelope p;
    char err[128];
    cJSON *root = cp_envelope_parse(want, strlen(want), &p, err, sizeof err);
    assert_non_null(root);
    assert_true(p.fields & CP_F_BROADCAST);
    assert_true(p.fields & CP_F_RECOVERED);
    assert_int_equal(p.recovered, 0);
    assert_int_equal(p.offset, 9007199254740992LL);
    assert_int_equal(p.boffset, 0);
    assert_string_equal(p.epoch, "e1");
    assert_string_equal(p.bepoch, "be");
    cJSON_Delete(root);

    const char *unstored = "{\"msgType\":1,\"offset\":null,\"broadcast\":false}";
    root = cp_envelope_parse(unstored, strlen(unstored), &p, err, sizeof err);
    assert_non_null(root);
    assert_true(p.fields & CP_F_OFFSET);
    assert_int_equal(p.offset, -1);
    assert_false(p.fields & CP_F_BROADCAST);
    cJSON_Delete(root);
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG_TYPE | CP_F_OFFSET;
    e.msg_type = 1;
    e.offset = -1;
    assert_writes(&e, "{\"msgType\":1,\"offset\":null}");

    static const char *const bad[] = {
        "{\"offset\":-1}", "{\"offset\":1.5}", "{\"offset\":\"3\"}", "{\"boffset\":null,\"epoch\":3}",
        "{\"broadcast\":1}", "{\"recovered\":\"yes\"}", "{\"offset\":1e300}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        root = cp_envelope_parse(bad[i], strlen(bad[i]), &p, err, sizeof err);
        if (root)
            fail_msg("accepted %s", bad[i]);
    }
    const char *reconnect = "{\"msgType\":5}";
    root = cp_envelope_parse(reconnect, strlen(reconnect), &p, err, sizeof err);
    assert_non_null(root);
    assert_int_equal(p.msg_type, CP_MSG_RECONNECT);
    cJSON_Delete(root);
}

static void test_write_omits_absent(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    assert_writes(&e, "{}");

    e.fields = CP_F_MSG_TYPE;
    e.msg_type = CP_MSG_HEARTBEAT_ACK;
    assert_writes(&e, "{\"msgType\":4}");

    e.fields = CP_F_MSG_TYPE;
    e.msg_type = CP_MSG_ERROR;
    e.result_msg = "not written: bit not set";
    e.from = "not written either";
    assert_writes(&e, "{\"msgType\":-1}");

    /* Presence bits with NULL pointers are omitted, never null. */
    memset(&e, 0, sizeof e);
    e.fields = CP_F_FROM | CP_F_MESSAGE_ID | CP_F_MSG | CP_F_REQUEST_ID | CP_F_RESULT_MSG |
               CP_F_SESSION_ID | CP_F_TRIGGER;
    e.trigger = 2;
    assert_writes(&e, "{\"trigger\":2}");

    /* to with neither array nor single recipient: empty array. */
    memset(&e, 0, sizeof e);
    e.fields = CP_F_TO | CP_F_ACTIVE_TIME;
    e.active_time = 0;
    assert_writes(&e, "{\"activeTime\":0,\"to\":[]}");

    /* to_single is ignored without the presence bit. */
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG_TYPE;
    e.msg_type = 1;
    e.to_single = "dev";
    assert_writes(&e, "{\"msgType\":1}");
}

static void test_write_to_array_preferred_over_single(void **state)
{
    (void)state;
    cJSON *to = cJSON_Parse("[\"a\",\"b\"]");
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_TO;
    e.to = to;
    e.to_single = "ignored";
    assert_writes(&e, "{\"to\":[\"a\",\"b\"]}");
    cJSON_Delete(to);
}

static void test_write_appends_to_existing_buffer(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG_TYPE;
    e.msg_type = 3;
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "[");
    assert_int_equal(cp_envelope_write(&b, &e, NULL), 0);
    cp_buf_putc(&b, ',');
    assert_int_equal(cp_envelope_write(&b, &e, NULL), 0);
    cp_buf_putc(&b, ']');
    assert_string_equal(cp_buf_cstr(&b), "[{\"msgType\":3},{\"msgType\":3}]");
    cp_buf_free(&b);
}

static void test_write_escaping(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_FROM | CP_F_RESULT_MSG | CP_F_MESSAGE_ID | CP_F_SESSION_ID | CP_F_TO;
    e.from = "say \"hi\"\\";
    e.result_msg = "line1\nline2\r\ttab\x01\x1f";
    e.message_id = "bad\xff utf8 \xc3\xa9 \xed\xa0\x80";
    e.session_id = "\xc3";
    e.to_single = "q\"";
    assert_writes(&e, "{\"from\":\"say \\\"hi\\\"\\\\\","
                      "\"messageId\":\"bad\\ufffd utf8 \xc3\xa9 \\ufffd\\ufffd\\ufffd\","
                      "\"resultMsg\":\"line1\\nline2\\r\\ttab\\u0001\\u001f\","
                      "\"sessionId\":\"\\ufffd\",\"to\":[\"q\\\"\"]}");

    /* The output parses back to the same text, invalid bytes replaced by
     * U+FFFD. */
    char *s = write_str(&e);
    cp_envelope back;
    cJSON *root = must_parse(s, &back);
    assert_string_equal(back.from, e.from);
    assert_string_equal(back.result_msg, e.result_msg);
    assert_string_equal(back.message_id, "bad\xef\xbf\xbd utf8 \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(back.session_id, "\xef\xbf\xbd");
    assert_string_equal(cJSON_GetArrayItem(back.to, 0)->valuestring, "q\"");
    cJSON_Delete(root);
    free(s);
}

static void test_write_escaped_input_round_trip(void **state)
{
    (void)state;
    /* JSON escapes in the input (\u00e9, surrogate pairs, \/) come out as
     * UTF-8 or plain characters. */
    cp_envelope e;
    cJSON *root = must_parse("{\"from\":\"caf\\u00e9 \\ud83d\\ude00 a\\/b \\u0007\","
                             "\"msgType\":\"2\"}",
                             &e);
    assert_string_equal(e.from, "caf\xc3\xa9 \xf0\x9f\x98\x80 a/b \x07");
    assert_writes(&e, "{\"from\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 a/b \\u0007\",\"msgType\":2}");
    cJSON_Delete(root);
}

static void test_write_large_msg(void **state)
{
    (void)state;
    /* A msg much larger than the buffer's first allocation. */
    size_t n = 100000;
    char *json = malloc(n + 64);
    assert_non_null(json);
    strcpy(json, "{\"msgType\":1,\"msg\":{\"blob\":\"");
    size_t off = strlen(json);
    memset(json + off, 'z', n);
    strcpy(json + off + n, "\"}}");
    cp_envelope e;
    cJSON *root = must_parse(json, &e);
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "pre");
    assert_int_equal(cp_envelope_write(&b, &e, NULL), 0);
    const char *out = cp_buf_cstr(&b);
    const char *head = "pre{\"msg\":{\"blob\":\"";
    const char *tail = "\"},\"msgType\":1}";
    assert_int_equal(b.len, strlen(head) + n + strlen(tail));
    assert_memory_equal(out, head, strlen(head));
    for (size_t i = 0; i < n; i++)
        if (out[strlen(head) + i] != 'z')
            fail_msg("byte %zu of the blob is %d", i, out[strlen(head) + i]);
    assert_string_equal(out + b.len - strlen(tail), tail);
    cp_buf_free(&b);
    cJSON_Delete(root);
    free(json);
}

/* ---- split -------------------------------------------------------------- */

/* Writes e in split mode after `prefix`, inserts one recipient and checks
 * the result equals a full write of e with sessionId/to set to that
 * recipient. */
static void check_split(const cp_envelope *e, const char *prefix, const char *sid,
                        const char *chan)
{
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, prefix);
    size_t split = (size_t)-1;
    assert_int_equal(cp_envelope_write(&b, e, &split), 0);
    size_t plen = strlen(prefix);
    assert_true(split <= b.len - plen);
    const char *env_start = cp_buf_cstr(&b) + plen;
    assert_memory_equal(cp_buf_cstr(&b), prefix, plen);

    /* head + fragment + tail */
    cp_buf out;
    cp_buf_init(&out);
    cp_buf_append(&out, env_start, split);
    cp_envelope_write_recipient(&out, sid, chan);
    cp_buf_append(&out, env_start + split, b.len - plen - split);

    cp_envelope full = *e;
    full.fields |= CP_F_SESSION_ID | CP_F_TO;
    full.session_id = sid;
    full.to = NULL;
    full.to_single = chan;
    char *expect = write_str(&full);
    assert_string_equal(cp_buf_cstr(&out), expect);

    /* And it parses back with that recipient. */
    cp_envelope back;
    cJSON *root = must_parse(expect, &back);
    assert_true(back.fields & CP_F_SESSION_ID);
    assert_int_equal(cJSON_GetArraySize(back.to), 1);
    cJSON_Delete(root);

    free(expect);
    cp_buf_free(&out);
    cp_buf_free(&b);
}

static void test_split_matches_full_write(void **state)
{
    (void)state;
    cp_envelope e;
    cJSON *root = must_parse(FULL, &e);
    /* sessionId and to of the parsed envelope are replaced by the fragment. */
    check_split(&e, "", "sess-9", "dev-9");
    check_split(&e, "some prefix bytes", "s", "c");
    check_split(&e, "", "needs \"escaping\"\n", "\xff");

    /* Without trigger: the tail is just the closing brace. */
    e.fields &= ~(unsigned)CP_F_TRIGGER;
    check_split(&e, "", "sess-9", "dev-9");
    cJSON_Delete(root);

    /* msgType only, the smallest deliverable envelope. */
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG_TYPE;
    e.msg_type = CP_MSG_HEARTBEAT;
    check_split(&e, "", "sid", "ch");
    e.fields |= CP_F_TRIGGER;
    e.trigger = 2;
    check_split(&e, "xx", "sid", "ch");
}

static void test_split_exact_pieces(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG_TYPE | CP_F_FROM | CP_F_SESSION_ID | CP_F_TO | CP_F_TRIGGER;
    e.msg_type = 1;
    e.from = "f";
    e.session_id = "left out";
    e.to_single = "left out too";
    e.trigger = 2;
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "ABC");
    size_t split = 0;
    assert_int_equal(cp_envelope_write(&b, &e, &split), 0);
    assert_string_equal(cp_buf_cstr(&b), "ABC{\"from\":\"f\",\"msgType\":1,\"trigger\":2}");
    /* Offset is relative to the start of the envelope, not the buffer. */
    assert_int_equal(split, strlen("{\"from\":\"f\",\"msgType\":1"));

    cp_buf frag;
    cp_buf_init(&frag);
    cp_envelope_write_recipient(&frag, "bridge1_dev_20240101000000-1", "dev");
    assert_string_equal(cp_buf_cstr(&frag),
                        ",\"sessionId\":\"bridge1_dev_20240101000000-1\",\"to\":[\"dev\"]");
    cp_buf_free(&frag);
    cp_buf_free(&b);
}

static void test_write_msg_raw(void **state)
{
    (void)state;
    /* A pre-serialised msg is copied verbatim (only msg_raw_len bytes) and
     * wins over the cJSON tree. */
    cJSON *tree = cJSON_Parse("{\"tree\":1}");
    const char raw[] = "{\"raw\":[1,\"x\"]}TRAILING";
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG | CP_F_MSG_TYPE | CP_F_TRIGGER;
    e.msg = tree;
    e.msg_raw = raw;
    e.msg_raw_len = strlen("{\"raw\":[1,\"x\"]}");
    e.msg_type = 1;
    e.trigger = 2;
    assert_writes(&e, "{\"msg\":{\"raw\":[1,\"x\"]},\"msgType\":1,\"trigger\":2}");
    check_split(&e, "p", "sid", "ch");

    /* Without the presence bit neither is written. */
    e.fields = CP_F_MSG_TYPE;
    assert_writes(&e, "{\"msgType\":1}");

    /* The same output as writing the tree it came from. */
    e.fields = CP_F_MSG | CP_F_MSG_TYPE;
    e.msg_raw = NULL;
    char *from_tree = write_str(&e);
    char *printed = cJSON_PrintUnformatted(tree);
    e.msg_raw = printed;
    e.msg_raw_len = strlen(printed);
    char *from_raw = write_str(&e);
    assert_string_equal(from_tree, from_raw);
    free(from_tree);
    free(from_raw);
    cJSON_free(printed);
    cJSON_Delete(tree);
}

/* msg goes on as its sender wrote it: the parse points msg_raw at its text,
 * so numbers are not rounded through a double and spacing stays. */
static void test_parse_keeps_msg_text(void **state)
{
    (void)state;
    const char in[] = "{ \"msgType\":1, \"msg\" : {\"id\": 9007199254740993, "
                      "\"big\":12345678901234567890,\"s\":\"}\\\"{\",\"a\":[1, {}]} ,"
                      "\"from\":\"\\\"msg\\\":{\"}";
    const char want[] = "{\"id\": 9007199254740993, \"big\":12345678901234567890,"
                        "\"s\":\"}\\\"{\",\"a\":[1, {}]}";
    cp_envelope e;
    cJSON *root = must_parse(in, &e);
    assert_non_null(e.msg);
    assert_non_null(e.msg_raw);
    assert_int_equal(e.msg_raw_len, strlen(want));
    assert_memory_equal(e.msg_raw, want, strlen(want));
    assert_true(e.msg_raw >= in && e.msg_raw + e.msg_raw_len <= in + sizeof in - 1);
    char *out = write_str(&e);
    assert_non_null(strstr(out, "\"msg\":{\"id\": 9007199254740993, \"big\":12345678901234567890,"));
    free(out);
    cJSON_Delete(root);

    /* A "msg" key inside another member is not the envelope's. */
    root = must_parse("{\"x\":{\"msg\":{\"no\":1}},\"msg\":{\"yes\":1}}", &e);
    assert_int_equal(e.msg_raw_len, strlen("{\"yes\":1}"));
    assert_memory_equal(e.msg_raw, "{\"yes\":1}", e.msg_raw_len);
    cJSON_Delete(root);
}

/* Where the text cannot be told to be the member cJSON returns, the tree is
 * printed as before. */
static void test_parse_msg_text_only_when_unambiguous(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        "{\"msg\":{\"a\":1},\"msg\":{\"b\":2}}",          /* written twice */
        "{\"m\\u0073g\":{\"a\":1},\"msg\":{\"b\":2}}",    /* an escaped spelling */
        "{\"msg\":{\"a\":1},\"n\\u0061me\":1}",           /* any escaped top-level key */
        /* what cJSON takes and strict JSON (a browser's JSON.parse) does not */
        "{\"msg\":{\"a\":01}}", "{\"msg\":{\"a\":1.}}", "{\"msg\":{\"a\":\x01 1}}",
        "{\"msg\":{\"a\":1},\"x\":-.5}",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        cp_envelope e;
        cJSON *root = must_parse(inputs[i], &e);
        assert_non_null(e.msg);
        assert_null(e.msg_raw);
        char *out = write_str(&e);
        assert_non_null(strstr(out, "\"msg\":{\"a\":1}"));
        free(out);
        cJSON_Delete(root);
    }
    /* The span of another member, for callers with their own keys. */
    cp_json_span span = {.key = "to"};
    const char body[] = "{\"msg\":{},\"to\": [\"a\", \"b\"] }";
    cJSON *root = cp_json_parse_strict_span(body, strlen(body), 0, &span, NULL);
    assert_non_null(root);
    assert_int_equal(span.len, strlen("[\"a\", \"b\"]"));
    assert_memory_equal(body + span.off, "[\"a\", \"b\"]", span.len);
    cJSON_Delete(root);
    /* A scalar value has no span. */
    span.key = "n";
    root = cp_json_parse_strict_span("{\"n\":5}", 7, 0, &span, NULL);
    assert_non_null(root);
    assert_int_equal(span.len, 0);
    cJSON_Delete(root);
}

/* ---- round trip ------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        FULL,
        "{}",
        "{\"msgType\":\"1\",\"msg\":{\"k\":\"v\"},\"to\":[\"a\"]}",
        "{\"msgType\":-1,\"resultMsg\":\"bad \\\"thing\\\"\\n\"}",
        "{\"activeTime\":1.9,\"trigger\":2,\"requestId\":\"\\u00e9\"}",
        "{\"msg\":{\"deep\":{\"a\":[[[{}]]]},\"num\":1e3,\"neg\":-0.125},\"msgType\":1}",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        cp_envelope a, b2;
        cJSON *ra = must_parse(inputs[i], &a);
        char *s1 = write_str(&a);
        cJSON *rb = must_parse(s1, &b2);
        assert_int_equal(a.fields, b2.fields);
        assert_true(a.active_time == b2.active_time);
        assert_int_equal(a.msg_type, b2.msg_type);
        assert_int_equal(a.trigger, b2.trigger);
        if (a.from)
            assert_string_equal(a.from, b2.from);
        if (a.request_id)
            assert_string_equal(a.request_id, b2.request_id);
        if (a.result_msg)
            assert_string_equal(a.result_msg, b2.result_msg);
        if (a.msg)
            assert_true(cJSON_Compare(a.msg, b2.msg, 1));
        if (a.to)
            assert_true(cJSON_Compare(a.to, b2.to, 1));
        /* Writing is a fixed point after one round. */
        char *s2 = write_str(&b2);
        assert_string_equal(s1, s2);
        free(s1);
        free(s2);
        cJSON_Delete(ra);
        cJSON_Delete(rb);
    }
}

/* Regression (fixed; common/envelope.c, json_value() used for "msg" and "to"):
 * msg and to are printed with cJSON_PrintPreallocated, which copies string
 * bytes verbatim; cJSON_Parse does not validate UTF-8 either. So invalid
 * UTF-8 inside msg (keys or values) or inside a "to" element is written out
 * unchanged and the envelope is not valid UTF-8 / JSON, unlike top-level
 * strings, which cp_buf_json_string repairs with U+FFFD. A WebSocket text
 * frame carrying it is invalid (RFC 6455 requires UTF-8). Expected: either
 * the parse rejects it or the output is valid UTF-8. */
static void test_regression_write_msg_invalid_utf8(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        "{\"msgType\":1,\"msg\":{\"k\":\"\xff\"}}",
        "{\"msgType\":1,\"msg\":{\"\xc0\x80\":1}}",
        "{\"msgType\":1,\"to\":[\"\xed\xa0\x80\"]}",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        cp_envelope e;
        cJSON *root = cp_envelope_parse(inputs[i], strlen(inputs[i]), &e, NULL, 0);
        if (!root)
            continue; /* rejecting invalid UTF-8 is fine too */
        char *s = write_str(&e);
        int ok = cp_utf8_valid(s, strlen(s));
        if (!ok)
            print_error("input %zu written as invalid UTF-8: %s\n", i, s);
        free(s);
        cJSON_Delete(root);
        assert_true(ok);
    }
}

/* Regression (fixed; common/envelope.c, get_string() length check vs.
 * cp_buf_json_string): from/messageId/requestId are limited to 128 bytes
 * when parsed, but each invalid UTF-8 byte is written back as U+FFFD
 * (3 bytes once parsed again). An accepted envelope with a 128-byte
 * messageId of invalid bytes is therefore written as one that
 * cp_envelope_parse rejects ("messageId is too long"). Expected: whatever
 * cp_envelope_parse accepts, cp_envelope_write produces something it
 * accepts again (e.g. reject invalid UTF-8 in ids, or count the limit after
 * repair). Found by tests/fuzz/fuzz_envelope. */
static void test_regression_rewritten_id_rejected(void **state)
{
    (void)state;
    char json[300], id[129];
    memset(id, '\xff', 128);
    id[128] = '\0';
    static const char *const keys[] = {"messageId", "from", "requestId"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(json, sizeof json, "{\"msgType\":1,\"%s\":\"%s\"}", keys[i], id);
        cp_envelope e;
        cJSON *root = cp_envelope_parse(json, strlen(json), &e, NULL, 0);
        if (!root)
            continue; /* rejecting invalid UTF-8 ids is fine too */
        char *s = write_str(&e);
        cJSON_Delete(root);
        char err[128] = "";
        root = cp_envelope_parse(s, strlen(s), &e, err, sizeof err);
        if (!root)
            print_error("%s: written envelope rejected: %s\n", keys[i], err);
        free(s);
        assert_non_null(root);
        cJSON_Delete(root);
    }
}

static void test_msg_type_name(void **state)
{
    (void)state;
    assert_string_equal(cp_msg_type_name(CP_MSG_ERROR), "error");
    assert_string_equal(cp_msg_type_name(CP_MSG_CONNECTION), "connection");
    assert_string_equal(cp_msg_type_name(CP_MSG_BUSINESS), "business");
    assert_string_equal(cp_msg_type_name(CP_MSG_BUSINESS_ACK), "business_ack");
    assert_string_equal(cp_msg_type_name(CP_MSG_HEARTBEAT), "heartbeat");
    assert_string_equal(cp_msg_type_name(CP_MSG_HEARTBEAT_ACK), "heartbeat_ack");
    assert_string_equal(cp_msg_type_name(CP_MSG_RECONNECT), "reconnect");
    assert_string_equal(cp_msg_type_name(6), "unknown");
    assert_string_equal(cp_msg_type_name(-2), "unknown");
}

/* ---- nesting depth (a ~2 KB body nested 999 deep crashed the HTTP API) --- */

/* open^n + "1" + close^n as a msg value inside an envelope. */
static char *nested_envelope(unsigned n, char open, char close)
{
    size_t cap = 64 + 8 * (size_t)n;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t k = (size_t)snprintf(s, cap, "{\"msgType\":1,\"msg\":{\"v\":");
    for (unsigned i = 0; i < n; i++) {
        if (open == '{') {
            memcpy(s + k, "{\"a\":", 5);
            k += 5;
        } else {
            s[k++] = open;
        }
    }
    s[k++] = '1';
    for (unsigned i = 0; i < n; i++)
        s[k++] = close;
    memcpy(s + k, "}}", 3);
    return s;
}

static void test_depth_bound(void **state)
{
    (void)state;
    /* The envelope and msg objects are two levels; msg's value gets the rest. */
    unsigned inner_max = CP_JSON_MAX_DEPTH - 2;
    const char pairs[2][2] = {{'[', ']'}, {'{', '}'}};
    for (int p = 0; p < 2; p++) {
        cp_envelope env;
        char *ok = nested_envelope(inner_max, pairs[p][0], pairs[p][1]);
        cJSON_Delete(must_parse(ok, &env));
        free(ok);
        char *over = nested_envelope(inner_max + 1, pairs[p][0], pairs[p][1]);
        must_reject(over, "nested deeper than");
        free(over);
        char *hostile = nested_envelope(999, pairs[p][0], pairs[p][1]);
        must_reject(hostile, "nested deeper than");
        free(hostile);
    }
    /* Brackets inside strings are text, not nesting. */
    char text[400];
    memset(text, 0, sizeof text);
    strcpy(text, "{\"msgType\":1,\"msg\":{\"s\":\"");
    memset(text + strlen(text), '[', 200);
    strcat(text, "\"}}");
    cp_envelope env;
    cJSON_Delete(must_parse(text, &env));
    /* Unbalanced closers cannot lower the count below zero to sneak depth in. */
    const char *why = NULL;
    assert_null(cp_json_parse_strict("]]]]]]", 6, &why));
    assert_non_null(why);
}

/* What CivetWeb gives a worker (100 KiB, Debian stack notes): the deepest
 * accepted document must parse, print and free within it. */
#define SMALL_STACK (100 * 1024)

static void *parse_print_delete(void *arg)
{
    const char *doc = arg;
    cJSON *root = cp_json_parse_strict(doc, strlen(doc), NULL);
    if (!root)
        return NULL;
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static void test_depth_fits_worker_stack(void **state)
{
    (void)state;
    char *doc = nested_envelope(CP_JSON_MAX_DEPTH - 2, '{', '}');
    pthread_attr_t attr;
    pthread_t t;
    void *out = NULL;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, SMALL_STACK), 0);
    assert_int_equal(pthread_create(&t, &attr, parse_print_delete, doc), 0);
    assert_int_equal(pthread_join(t, &out), 0);
    pthread_attr_destroy(&attr);
    assert_non_null(out);
    assert_int_equal(strlen(out), strlen(doc));
    free(out);
    free(doc);
}

/* ---- defaults and the UTF-8 flag ---------------------------------------- */

static void test_fill_defaults_fills_absent(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    char id[CP_MESSAGE_ID_LEN + 1];
    int64_t before = cp_now_ms();
    cp_envelope_fill_defaults(&e, CP_TRIGGER_MQTT, id);
    int64_t after = cp_now_ms();
    assert_int_equal(e.fields, CP_F_MESSAGE_ID | CP_F_ACTIVE_TIME | CP_F_FROM | CP_F_TRIGGER);
    assert_ptr_equal(e.message_id, id);
    assert_int_equal(strlen(id), CP_MESSAGE_ID_LEN);
    assert_int_equal(strspn(id, "0123456789abcdef"), CP_MESSAGE_ID_LEN);
    assert_true(e.active_time >= before && e.active_time <= after);
    assert_string_equal(e.from, "system");
    assert_int_equal(e.trigger, CP_TRIGGER_MQTT);
}

static void test_fill_defaults_keeps_present(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MESSAGE_ID | CP_F_ACTIVE_TIME | CP_F_FROM | CP_F_TRIGGER | CP_F_MSG_TYPE;
    e.message_id = "mine";
    e.active_time = 42;
    e.from = "svc";
    e.trigger = CP_TRIGGER_HTTP;
    e.msg_type = CP_MSG_BUSINESS;
    char id[CP_MESSAGE_ID_LEN + 1] = "untouched";
    cp_envelope_fill_defaults(&e, CP_TRIGGER_WEBSOCKET, id);
    assert_int_equal(e.fields,
                     CP_F_MESSAGE_ID | CP_F_ACTIVE_TIME | CP_F_FROM | CP_F_TRIGGER | CP_F_MSG_TYPE);
    assert_string_equal(e.message_id, "mine");
    assert_int_equal(e.active_time, 42);
    assert_string_equal(e.from, "svc");
    assert_int_equal(e.trigger, CP_TRIGGER_HTTP);
    assert_string_equal(id, "untouched");
}

static void test_fill_defaults_without_id_buf(void **state)
{
    (void)state;
    cp_envelope e;
    memset(&e, 0, sizeof e);
    cp_envelope_fill_defaults(&e, CP_TRIGGER_WEBSOCKET, NULL);
    assert_false(e.fields & CP_F_MESSAGE_ID);
    assert_null(e.message_id);
    assert_true(e.fields & CP_F_ACTIVE_TIME);
    assert_int_equal(e.trigger, CP_TRIGGER_WEBSOCKET);
    /* And the result is what goes on the wire. */
    cp_buf out;
    cp_buf_init(&out);
    assert_int_equal(cp_envelope_write(&out, &e, NULL), 0);
    cp_buf_putc(&out, '\0'); /* for strstr */
    assert_non_null(strstr(out.data, "\"from\":\"system\""));
    assert_non_null(strstr(out.data, "\"trigger\":2}"));
    assert_null(strstr(out.data, "messageId"));
    cp_buf_free(&out);
}

static void test_utf8_checked_flag_skips_only_utf8(void **state)
{
    (void)state;
    static const char bad[] = "{\"msgType\":3,\"requestId\":\"\xff\"}";
    const char *why = NULL;
    cp_envelope env;
    char err[128];
    /* By default the bytes are checked... */
    assert_null(cp_json_parse_strict(bad, strlen(bad), &why));
    assert_ptr_equal(why, CP_JSON_NOT_UTF8);
    assert_null(cp_envelope_parse(bad, strlen(bad), &env, err, sizeof err));
    assert_string_equal(err, "invalid UTF-8");
    /* ...with the flag the caller vouches for them (this text would have
     * been closed with 1007 by lws first). */
    cJSON *root = cp_json_parse_strict_flags(bad, strlen(bad), CP_PARSE_UTF8_CHECKED, &why);
    assert_non_null(root);
    assert_null(why);
    cJSON_Delete(root);
    root = cp_envelope_parse_flags(bad, strlen(bad), CP_PARSE_UTF8_CHECKED, &env, err, sizeof err);
    assert_non_null(root);
    assert_int_equal(env.msg_type, CP_MSG_HEARTBEAT);
    cJSON_Delete(root);
    /* Everything else is still checked. */
    static const char ctrl[] = "{\"msgType\":3,\"requestId\":\"a\x01\"}";
    assert_null(cp_envelope_parse_flags(ctrl, strlen(ctrl), CP_PARSE_UTF8_CHECKED, &env, err,
                                        sizeof err));
    char deep[CP_JSON_MAX_DEPTH + 2];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    assert_null(cp_json_parse_strict_flags(deep, strlen(deep), CP_PARSE_UTF8_CHECKED, &why));
    assert_ptr_equal(why, CP_JSON_TOO_DEEP);
    static const char trailing[] = "{\"msgType\":3} x";
    assert_null(cp_json_parse_strict_flags(trailing, strlen(trailing), CP_PARSE_UTF8_CHECKED,
                                           NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_all_fields),
        cmocka_unit_test(test_parse_minimal),
        cmocka_unit_test(test_parse_msg_type_forms),
        cmocka_unit_test(test_parse_nulls_are_absent),
        cmocka_unit_test(test_parse_edge_values),
        cmocka_unit_test(test_parse_uses_len),
        cmocka_unit_test(test_reject_invalid_json),
        cmocka_unit_test(test_reject_non_object_root),
        cmocka_unit_test(test_reject_msg_not_object),
        cmocka_unit_test(test_reject_msg_type),
        cmocka_unit_test(test_reject_to),
        cmocka_unit_test(test_reject_active_time),
        cmocka_unit_test(test_reject_trigger),
        cmocka_unit_test(test_reject_strings),
        cmocka_unit_test(test_reject_error_buffer),
        cmocka_unit_test(test_regression_reject_trailing_garbage),
        cmocka_unit_test(test_write_all_fields_alphabetical),
        cmocka_unit_test(test_write_omits_absent),
        cmocka_unit_test(test_stream_fields_round_trip),
        cmocka_unit_test(test_write_to_array_preferred_over_single),
        cmocka_unit_test(test_write_appends_to_existing_buffer),
        cmocka_unit_test(test_write_escaping),
        cmocka_unit_test(test_write_escaped_input_round_trip),
        cmocka_unit_test(test_write_large_msg),
        cmocka_unit_test(test_split_matches_full_write),
        cmocka_unit_test(test_split_exact_pieces),
        cmocka_unit_test(test_write_msg_raw),
        cmocka_unit_test(test_parse_keeps_msg_text),
        cmocka_unit_test(test_parse_msg_text_only_when_unambiguous),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_regression_write_msg_invalid_utf8),
        cmocka_unit_test(test_regression_rewritten_id_rejected),
        cmocka_unit_test(test_msg_type_name),
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_depth_fits_worker_stack),
        cmocka_unit_test(test_fill_defaults_fills_absent),
        cmocka_unit_test(test_fill_defaults_keeps_present),
        cmocka_unit_test(test_fill_defaults_without_id_buf),
        cmocka_unit_test(test_utf8_checked_flag_skips_only_utf8),
    };
    return cmocka_run_group_tests_name("envelope", tests, NULL, NULL);
}
