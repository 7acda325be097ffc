/* Unit tests for httpapi/push.c: parsing and validation of the HTTP push
 * request body (push_request_parse), against the error codes documented in
 * docs/http-api.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "push.h"

/* ---- helpers ------------------------------------------------------------ */

static const push_limits LIMITS = {.max_recipients = 10000};

/* body (len bytes) must be accepted; fills req. */
static void must_parse_len(const char *body, size_t len, const push_limits *limits,
                           push_request *req)
{
    push_error err;
    memset(&err, 0, sizeof err);
    if (push_request_parse(body, len, limits, req, &err) != 0)
        fail_msg("rejected %.*s: %d %s: %s", (int)len, body, err.status,
                 err.code ? err.code : "(null)", err.msg);
    assert_non_null(req->root);
    assert_non_null(req->msg);
    assert_true(cJSON_IsObject(req->msg));
}

static void must_parse(const char *body, push_request *req)
{
    must_parse_len(body, strlen(body), &LIMITS, req);
}

/* body (len bytes) must be rejected with status, code and a message
 * containing msg_part (when not NULL); the request is left zeroed. */
static void must_reject_len(const char *body, size_t len, const push_limits *limits, int status,
                            const char *code, const char *msg_part)
{
    push_request req;
    push_error err;
    memset(&req, 0xAB, sizeof req);
    memset(&err, 0, sizeof err);
    int rc = push_request_parse(body, len, limits, &req, &err);
    if (rc == 0) {
        push_request_free(&req);
        fail_msg("accepted %.*s (expected %s)", (int)len, body, code);
    }
    assert_int_equal(rc, -1);
    if (err.status != status || !err.code || strcmp(err.code, code) != 0)
        fail_msg("%.*s: got %d %s (%s), expected %d %s", (int)len, body, err.status,
                 err.code ? err.code : "(null)", err.msg, status, code);
    assert_true(strlen(err.msg) > 0);
    if (msg_part && !strstr(err.msg, msg_part))
        fail_msg("%.*s: message '%s' does not mention '%s'", (int)len, body, err.msg, msg_part);
    /* A rejected request is freed and zeroed: nothing dangles, and freeing
     * it again is harmless. */
    push_request zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&req, &zero, sizeof req);
    push_request_free(&req);
}

static void must_reject(const char *body, const char *code, const char *msg_part)
{
    must_reject_len(body, strlen(body), &LIMITS, 400, code, msg_part);
}

/* A malloc'd string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A malloc'd printf result. */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    assert_true(n >= 0);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static void assert_recipients(const push_request *req, const char *const *expect, size_t n)
{
    assert_int_equal(req->recipient_count, n);
    assert_non_null(req->recipients);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(req->recipients[i], expect[i]);
}

/* ---- valid bodies ------------------------------------------------------- */

static void test_valid_single(void **state)
{
    (void)state;
    push_request req;
    must_parse("{\"to\":[\"alice\"],\"msg\":{\"hello\":\"world\"}}", &req);
    assert_false(req.send_to_all);
    const char *expect[] = {"alice"};
    assert_recipients(&req, expect, 1);
    const cJSON *hello = cJSON_GetObjectItemCaseSensitive(req.msg, "hello");
    assert_true(cJSON_IsString(hello));
    assert_string_equal(hello->valuestring, "world");
    assert_null(req.request_id);
    assert_null(req.from);
    push_request_free(&req);
    assert_null(req.root);
    assert_null(req.recipients);
    assert_int_equal(req.recipient_count, 0);
}

/* msg is kept as the publisher wrote it: a 64-bit id is not rounded through
 * a double (cJSON would print 9007199254740993 as 9.00719925474099e+15). */
static void test_msg_text_as_written(void **state)
{
    (void)state;
    push_request req;
    must_parse("{\"msg\": {\"id\":9007199254740993, \"n\": [1.50]} ,\"to\":[\"a\"]}", &req);
    assert_string_equal(req.msg_text, "{\"id\":9007199254740993, \"n\": [1.50]}");
    assert_int_equal(req.msg_len, strlen(req.msg_text));
    push_request_free(&req);
    assert_null(req.msg_text);
    /* Two msg members: the one cJSON reads, printed from its tree. */
    must_parse("{\"msg\":{\"first\": 1},\"msg\":{\"second\":2},\"to\":[\"a\"]}", &req);
    assert_string_equal(req.msg_text, "{\"first\":1}");
    push_request_free(&req);
}

static void test_valid_multi_all_fields(void **state)
{
    (void)state;
    push_request req;
    must_parse("  {\"to\":[\"dev-1\",\"user@example.com\",\"A.b_c:9\"],"
               "\"msg\":{\"n\":[1,2.5,true,null],\"o\":{\"x\":{}}},"
               "\"sendToAll\":false,\"requestId\":\"rq-1\",\"from\":\"server-1\",\"delay\":0}\r\n\t ",
               &req);
    assert_false(req.send_to_all);
    const char *expect[] = {"dev-1", "user@example.com", "A.b_c:9"};
    assert_recipients(&req, expect, 3);
    assert_string_equal(req.request_id, "rq-1");
    assert_string_equal(req.from, "server-1");
    assert_int_equal(cJSON_GetArraySize(req.msg), 2);
    assert_ptr_equal(req.msg, cJSON_GetObjectItemCaseSensitive(req.root, "msg"));
    push_request_free(&req);
}

static void test_valid_broadcast(void **state)
{
    (void)state;
    push_request req;
    must_parse("{\"sendToAll\":true,\"msg\":{}}", &req);
    assert_true(req.send_to_all);
    assert_null(req.recipients);
    assert_int_equal(req.recipient_count, 0);
    assert_int_equal(cJSON_GetArraySize(req.msg), 0);
    push_request_free(&req);

    must_parse("{\"msg\":{\"a\":1},\"sendToAll\":true,\"requestId\":\"r\",\"from\":\"f\"}", &req);
    assert_true(req.send_to_all);
    assert_string_equal(req.request_id, "r");
    assert_string_equal(req.from, "f");
    push_request_free(&req);
}

static void test_send_to_all_ignores_to(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"sendToAll\":true,\"msg\":{},\"to\":[\"alice\"]}",
        "{\"sendToAll\":true,\"msg\":{},\"to\":[]}",
        "{\"sendToAll\":true,\"msg\":{},\"to\":null}",
        "{\"sendToAll\":true,\"msg\":{},\"to\":\"alice\"}",
        "{\"sendToAll\":true,\"msg\":{},\"to\":{\"a\":1}}",
        "{\"sendToAll\":true,\"msg\":{},\"to\":5}",
        "{\"sendToAll\":true,\"msg\":{},\"to\":[\"a/b\",\"#\",\"\",1,null]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        push_request req;
        must_parse(bodies[i], &req);
        assert_true(req.send_to_all);
        assert_null(req.recipients);
        assert_int_equal(req.recipient_count, 0);
        push_request_free(&req);
    }

    /* Nor does the recipient limit apply. */
    push_limits one = {.max_recipients = 1};
    const char *many = "{\"sendToAll\":true,\"msg\":{},\"to\":[\"a\",\"b\",\"c\"]}";
    push_request req;
    must_parse_len(many, strlen(many), &one, &req);
    assert_true(req.send_to_all);
    assert_int_equal(req.recipient_count, 0);
    push_request_free(&req);
}

static void test_send_to_all_false_or_null_needs_to(void **state)
{
    (void)state;
    push_request req;
    must_parse("{\"sendToAll\":false,\"to\":[\"a\"],\"msg\":{}}", &req);
    assert_false(req.send_to_all);
    assert_int_equal(req.recipient_count, 1);
    push_request_free(&req);

    must_parse("{\"sendToAll\":null,\"to\":[\"a\"],\"msg\":{}}", &req);
    assert_false(req.send_to_all);
    assert_int_equal(req.recipient_count, 1);
    push_request_free(&req);

    must_reject("{\"sendToAll\":false,\"msg\":{}}", "missing_to", NULL);
    must_reject("{\"sendToAll\":null,\"msg\":{}}", "missing_to", NULL);
}

static void test_parse_uses_len(void **state)
{
    (void)state;
    /* Only len bytes are read: what follows is not part of the body. */
    const char buf[] = "{\"to\":[\"a\"],\"msg\":{}}garbage";
    push_request req;
    must_parse_len(buf, strlen("{\"to\":[\"a\"],\"msg\":{}}"), &LIMITS, &req);
    assert_int_equal(req.recipient_count, 1);
    push_request_free(&req);

    /* A body cut short is not JSON. */
    must_reject_len(buf, 10, &LIMITS, 400, "invalid_json", NULL);

    /* Not NUL terminated: an exact-size heap copy (ASan catches overreads). */
    const char *body = "{\"to\":[\"abc\"],\"msg\":{\"k\":\"v\"}}";
    size_t n = strlen(body);
    char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, body, n);
    must_parse_len(copy, n, &LIMITS, &req);
    const char *expect[] = {"abc"};
    assert_recipients(&req, expect, 1);
    push_request_free(&req);
    free(copy);
}

/* ---- duplicates --------------------------------------------------------- */

static void test_dedupe_keeps_first_occurrence_order(void **state)
{
    (void)state;
    push_request req;
    must_parse("{\"to\":[\"b\",\"a\",\"b\",\"c\",\"a\"],\"msg\":{}}", &req);
    const char *e1[] = {"b", "a", "c"};
    assert_recipients(&req, e1, 3);
    push_request_free(&req);

    must_parse("{\"to\":[\"x\",\"x\",\"x\",\"x\"],\"msg\":{}}", &req);
    const char *e2[] = {"x"};
    assert_recipients(&req, e2, 1);
    push_request_free(&req);

    /* No duplicates: unchanged, including a reversed sort order. */
    must_parse("{\"to\":[\"z\",\"y\",\"x\",\"w\"],\"msg\":{}}", &req);
    const char *e3[] = {"z", "y", "x", "w"};
    assert_recipients(&req, e3, 4);
    push_request_free(&req);

    /* Ids are compared exactly: case and prefixes matter. */
    must_parse("{\"to\":[\"a\",\"A\",\"ab\",\"a\",\"ab\",\"a.\"],\"msg\":{}}", &req);
    const char *e4[] = {"a", "A", "ab", "a."};
    assert_recipients(&req, e4, 4);
    push_request_free(&req);

    /* An escaped spelling is the same id once decoded. */
    must_parse("{\"to\":[\"ab\",\"\\u0061b\",\"a\\u0062\"],\"msg\":{}}", &req);
    const char *e5[] = {"ab"};
    assert_recipients(&req, e5, 1);
    push_request_free(&req);
}

static void test_dedupe_large(void **state)
{
    (void)state;
    enum { N = 5000, DISTINCT = 1237 };
    /* N ids drawn from DISTINCT values in a scrambled order. */
    int keys[N];
    uint32_t x = 12345;
    for (size_t i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        keys[i] = (int)((x >> 8) % DISTINCT);
    }
    char *body = malloc(N * 16 + 64);
    assert_non_null(body);
    size_t len = (size_t)sprintf(body, "{\"msg\":{},\"to\":[");
    for (size_t i = 0; i < N; i++)
        len += (size_t)sprintf(body + len, "%s\"id-%d\"", i ? "," : "", keys[i]);
    len += (size_t)sprintf(body + len, "]}");

    /* Expected: first occurrences, in order. */
    int seen[DISTINCT] = {0};
    int expect[DISTINCT];
    size_t n_expect = 0;
    for (size_t i = 0; i < N; i++)
        if (!seen[keys[i]]) {
            seen[keys[i]] = 1;
            expect[n_expect++] = keys[i];
        }
    assert_true(n_expect > 1000 && n_expect < N);

    push_request req;
    must_parse_len(body, len, &LIMITS, &req);
    assert_int_equal(req.recipient_count, n_expect);
    for (size_t i = 0; i < n_expect; i++) {
        char id[16];
        snprintf(id, sizeof id, "id-%d", expect[i]);
        assert_string_equal(req.recipients[i], id);
    }
    push_request_free(&req);
    free(body);
}

/* ---- requestId / from / messageId -------------------------------------- */

static const char **optional_field(push_request *req, size_t k)
{
    return k == 0 ? &req->request_id : k == 1 ? &req->from : &req->message_id;
}

static void test_optional_strings_accepted(void **state)
{
    (void)state;
    static const char *const keys[] = {"requestId", "from", "messageId"};
    char *max = repeat('r', 128);
    for (size_t k = 0; k < 3; k++) {
        push_request req;
        const char **field;

        char *b1 = fmt("{\"to\":[\"a\"],\"msg\":{},\"%s\":\"x\"}", keys[k]);
        must_parse(b1, &req);
        field = optional_field(&req, k);
        assert_string_equal(*field, "x");
        push_request_free(&req);

        char *b2 = fmt("{\"to\":[\"a\"],\"msg\":{},\"%s\":\"%s\"}", keys[k], max);
        must_parse(b2, &req);
        field = optional_field(&req, k);
        assert_string_equal(*field, max);
        push_request_free(&req);

        /* Any characters: these are not channel ids. */
        char *b3 = fmt("{\"to\":[\"a\"],\"msg\":{},\"%s\":\"a b/#+\\u00e9\"}", keys[k]);
        must_parse(b3, &req);
        field = optional_field(&req, k);
        assert_string_equal(*field, "a b/#+\xc3\xa9");
        push_request_free(&req);

        /* null is the same as absent. */
        char *b4 = fmt("{\"to\":[\"a\"],\"msg\":{},\"%s\":null}", keys[k]);
        must_parse(b4, &req);
        assert_null(req.request_id);
        assert_null(req.from);
        assert_null(req.message_id);
        push_request_free(&req);

        free(b1);
        free(b2);
        free(b3);
        free(b4);
    }
    free(max);
}

static void test_optional_strings_rejected(void **state)
{
    (void)state;
    static const char *const keys[] = {"requestId", "from", "messageId"};
    char *over = repeat('r', 129);
    for (size_t k = 0; k < 3; k++) {
        char length_msg[64], type_msg[64];
        snprintf(length_msg, sizeof length_msg, "%s must be 1-128 characters", keys[k]);
        snprintf(type_msg, sizeof type_msg, "%s must be a string", keys[k]);

        const char *len_values[] = {"\"\"", NULL};
        char *quoted = fmt("\"%s\"", over);
        len_values[1] = quoted;
        for (size_t i = 0; i < 2; i++) {
            char *b = fmt("{\"to\":[\"a\"],\"msg\":{},\"%s\":%s}", keys[k], len_values[i]);
            must_reject(b, "invalid_field", length_msg);
            /* Also with sendToAll, which skips only the to checks. */
            char *b2 = fmt("{\"sendToAll\":true,\"msg\":{},\"%s\":%s}", keys[k], len_values[i]);
            must_reject(b2, "invalid_field", length_msg);
            free(b);
            free(b2);
        }
        free(quoted);

        static const char *const type_values[] = {"5", "0", "true", "false", "[]", "[\"a\"]",
                                                  "{}"};
        for (size_t i = 0; i < sizeof type_values / sizeof type_values[0]; i++) {
            char *b = fmt("{\"to\":[\"a\"],\"msg\":{},\"%s\":%s}", keys[k], type_values[i]);
            must_reject(b, "invalid_field", type_msg);
            free(b);
        }
    }
    free(over);
}

/* ---- documented errors -------------------------------------------------- */

static void test_invalid_json(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "",
        " \r\n\t",
        "not json",
        "{",
        "{\"msg\":{}",
        "{\"to\":[\"a\"],\"msg\":{},}",
        "{'msg':{}}",
        "{\"msg\":{}} x",
        "{\"msg\":{}}{}",
        "{\"to\":[\"a\"],\"msg\":{}}]",
        "{\"to\":[\"a\"],\"msg\":{}} {\"to\":[\"b\"],\"msg\":{}}",
        "{\"to\":[\"a\"],\"msg\":{}}\x01",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        must_reject(bodies[i], "invalid_json", "not valid JSON");

    /* Nested past the bound (a 2 KB body 999 deep once crashed a worker). */
    char deep[2200];
    int k = snprintf(deep, sizeof deep, "{\"to\":[\"a\"],\"msg\":{\"v\":");
    memset(deep + k, '[', 999);
    memset(deep + k + 999, ']', 999);
    strcpy(deep + k + 1998, "}}");
    must_reject(deep, "invalid_json", "nested deeper than 64 levels");

    /* A NUL byte after the value is trailing garbage too. */
    static const char with_nul[] = "{\"to\":[\"a\"],\"msg\":{}}\0";
    must_reject_len(with_nul, sizeof with_nul - 1, &LIMITS, 400, "invalid_json", NULL);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "\xff",
        "{\"to\":[\"a\"],\"msg\":{\"k\":\"\xff\"}}",
        "{\"to\":[\"a\"],\"msg\":{\"k\":\"\xc3\x28\"}}",         /* bad continuation */
        "{\"to\":[\"a\"],\"msg\":{\"k\":\"\xc0\xaf\"}}",         /* overlong '/' */
        "{\"to\":[\"a\"],\"msg\":{\"k\":\"\xed\xa0\x80\"}}",     /* UTF-16 surrogate */
        "{\"to\":[\"a\"],\"msg\":{\"k\":\"\xf4\x90\x80\x80\"}}", /* above U+10FFFF */
        "{\"to\":[\"a\"],\"msg\":{\"k\":\"\xe2\x82\"}}",         /* truncated sequence */
        "{\"to\":[\"a\"],\"msg\":{},\"from\":\"\x80\"}",
        "{\"to\":[\"a\"],\"msg\":{}}\xc3",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        must_reject(bodies[i], "invalid_json", "UTF-8");

    /* Valid multi-byte UTF-8 is fine. */
    push_request req;
    must_parse("{\"to\":[\"a\"],\"msg\":{\"k\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"},"
               "\"from\":\"\xc3\xa9\"}",
               &req);
    assert_string_equal(req.from, "\xc3\xa9");
    push_request_free(&req);
}

static void test_invalid_body(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "[]", "[{\"to\":[\"a\"],\"msg\":{}}]", "\"str\"", "1", "null", "true", "false",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        must_reject(bodies[i], "invalid_body", "must be a JSON object");
}

static void test_invalid_msg(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"to\":[\"a\"]}",
        "{}",
        "{\"to\":[\"a\"],\"msg\":\"hello\"}",
        "{\"to\":[\"a\"],\"msg\":[]}",
        "{\"to\":[\"a\"],\"msg\":[{}]}",
        "{\"to\":[\"a\"],\"msg\":null}",
        "{\"to\":[\"a\"],\"msg\":1}",
        "{\"to\":[\"a\"],\"msg\":true}",
        "{\"to\":[\"a\"],\"Msg\":{}}", /* keys are case-sensitive */
        "{\"sendToAll\":true}",
        "{\"sendToAll\":true,\"msg\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        must_reject(bodies[i], "invalid_msg", "msg must be a JSON object");
}

static void test_missing_to(void **state)
{
    (void)state;
    must_reject("{\"msg\":{}}", "missing_to", "required unless sendToAll");
    must_reject("{\"msg\":{},\"to\":null}", "missing_to", "required unless sendToAll");
    must_reject("{\"msg\":{},\"To\":[\"a\"]}", "missing_to", NULL);
    must_reject("{\"msg\":{},\"to\":[]}", "missing_to", "must not be empty");
    must_reject("{\"msg\":{},\"to\":[],\"sendToAll\":false}", "missing_to", "must not be empty");
}

static void test_invalid_to(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"msg\":{},\"to\":\"alice\"}",
        "{\"msg\":{},\"to\":\"\"}",
        "{\"msg\":{},\"to\":{}}",
        "{\"msg\":{},\"to\":{\"0\":\"alice\"}}",
        "{\"msg\":{},\"to\":1}",
        "{\"msg\":{},\"to\":true}",
        "{\"msg\":{},\"to\":false}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        must_reject(bodies[i], "invalid_to", "must be an array");
}

static void test_invalid_channel_id(void **state)
{
    (void)state;
    char *over = repeat('c', 129);
    char *long_body = fmt("{\"msg\":{},\"to\":[\"%s\"]}", over);
    const char *const bodies[] = {
        "{\"msg\":{},\"to\":[\"a/b\"]}",
        "{\"msg\":{},\"to\":[\"a+\"]}",
        "{\"msg\":{},\"to\":[\"#\"]}",
        "{\"msg\":{},\"to\":[\"\"]}",
        "{\"msg\":{},\"to\":[\"a b\"]}",
        "{\"msg\":{},\"to\":[\"\\u00e9\"]}",
        "{\"msg\":{},\"to\":[\"a\\n\"]}",
        "{\"msg\":{},\"to\":[\"$SYS\"]}",
        long_body,
        "{\"msg\":{},\"to\":[1]}",
        "{\"msg\":{},\"to\":[null]}",
        "{\"msg\":{},\"to\":[true]}",
        "{\"msg\":{},\"to\":[[\"a\"]]}",
        "{\"msg\":{},\"to\":[{}]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        must_reject(bodies[i], "invalid_channel_id", "to[0] is not a valid channel id");
    free(long_body);
    free(over);

    /* The message names the first bad element's index. */
    must_reject("{\"msg\":{},\"to\":[\"ok\",\"ok-2\",\"bad id\",\"#\"]}", "invalid_channel_id",
                "to[2] is not a valid channel id (1-128 characters of [A-Za-z0-9._:@-])");
    must_reject("{\"msg\":{},\"to\":[\"a\",\"a\",\"a\",{}]}", "invalid_channel_id", "to[3]");

    /* Every allowed character, and exactly 128 characters, pass. */
    char *max = repeat('c', 128);
    char *b = fmt("{\"msg\":{},\"to\":[\"%s\",\"azAZ09._:@-\"]}", max);
    push_request req;
    must_parse(b, &req);
    const char *expect[] = {max, "azAZ09._:@-"};
    assert_recipients(&req, expect, 2);
    for (size_t i = 0; i < req.recipient_count; i++)
        assert_true(cp_channel_id_valid(req.recipients[i], strlen(req.recipients[i])));
    push_request_free(&req);
    free(b);
    free(max);
}

/* Builds {"msg":{},"to":["r0",...,"r<n-1>"]} (or n copies of "same"). */
static char *to_body(size_t n, int same)
{
    char *body = malloc(n * 16 + 32);
    assert_non_null(body);
    size_t len = (size_t)sprintf(body, "{\"msg\":{},\"to\":[");
    for (size_t i = 0; i < n; i++)
        len += same ? (size_t)sprintf(body + len, "%s\"same\"", i ? "," : "")
                    : (size_t)sprintf(body + len, "%s\"r%zu\"", i ? "," : "", i);
    sprintf(body + len, "]}");
    return body;
}

static void test_too_many_recipients(void **state)
{
    (void)state;
    push_limits three = {.max_recipients = 3};
    push_request req;

    char *at = to_body(3, 0);
    must_parse_len(at, strlen(at), &three, &req);
    assert_int_equal(req.recipient_count, 3);
    push_request_free(&req);

    char *over = to_body(4, 0);
    must_reject_len(over, strlen(over), &three, 400, "too_many_recipients",
                    "too many recipients: at most 3 per request");

    /* The limit is on the array as sent, before duplicates are removed. */
    char *dups = to_body(4, 1);
    must_reject_len(dups, strlen(dups), &three, 400, "too_many_recipients", "at most 3");

    /* The default limit of the API, 10000: exactly at it passes. */
    push_limits deflt = {.max_recipients = 10000};
    char *big = to_body(10000, 0);
    must_parse_len(big, strlen(big), &deflt, &req);
    assert_int_equal(req.recipient_count, 10000);
    assert_string_equal(req.recipients[0], "r0");
    assert_string_equal(req.recipients[9999], "r9999");
    push_request_free(&req);
    char *bigger = to_body(10001, 0);
    must_reject_len(bigger, strlen(bigger), &deflt, 400, "too_many_recipients",
                    "at most 10000 per request");

    free(at);
    free(over);
    free(dups);
    free(big);
    free(bigger);
}

static void test_send_to_all_not_boolean(void **state)
{
    (void)state;
    static const char *const values[] = {"\"true\"", "\"false\"", "1", "0", "[]", "{}", "\"\""};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char *b = fmt("{\"to\":[\"a\"],\"msg\":{},\"sendToAll\":%s}", values[i]);
        must_reject(b, "invalid_field", "sendToAll must be true or false");
        free(b);
    }
}

static void test_delay(void **state)
{
    (void)state;
    static const char *const refused[] = {"5", "\"5\"", "true", "false", "-1", "0.5",
                                          "1e-300", "\"0\"", "[]", "[0]", "{}", "1e400"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char *b = fmt("{\"to\":[\"a\"],\"msg\":{},\"delay\":%s}", refused[i]);
        must_reject(b, "delay_not_supported", "delayed push is not supported");
        free(b);
        b = fmt("{\"sendToAll\":true,\"msg\":{},\"delay\":%s}", refused[i]);
        must_reject(b, "delay_not_supported", NULL);
        free(b);
    }

    static const char *const accepted[] = {"0", "null", "0.0", "-0", "0e10"};
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        char *b = fmt("{\"to\":[\"a\"],\"msg\":{},\"delay\":%s}", accepted[i]);
        push_request req;
        must_parse(b, &req);
        assert_int_equal(req.recipient_count, 1);
        push_request_free(&req);
        free(b);
    }
}

/* ---- freeing ------------------------------------------------------------ */

static void test_error_leaves_request_zeroed(void **state)
{
    (void)state;
    /* Errors after the tree and the recipient array were allocated: the
     * helper checks the request is zeroed; ASan checks nothing leaked. */
    must_reject("{\"msg\":{},\"to\":[\"a\",\"b\",\"c\",\"#\"]}", "invalid_channel_id", "to[3]");
    must_reject("{\"msg\":{},\"to\":[\"a\"],\"requestId\":\"\"}", "invalid_field", NULL);
    must_reject("{\"msg\":{},\"to\":[\"a\"],\"requestId\":\"r\",\"from\":7}", "invalid_field",
                "from must be a string");

    /* A request is reusable after an error and after a free. */
    push_request req;
    push_error err;
    memset(&err, 0, sizeof err);
    const char *bad = "{\"msg\":{},\"to\":[\"a/b\"]}";
    assert_int_equal(push_request_parse(bad, strlen(bad), &LIMITS, &req, &err), -1);
    must_parse("{\"msg\":{},\"to\":[\"a\"]}", &req);
    push_request_free(&req);
    push_request_free(&req); /* zeroed by the first free: harmless */
    must_parse("{\"msg\":{},\"sendToAll\":true}", &req);
    push_request_free(&req);

    /* Freeing a zeroed request is harmless. */
    memset(&req, 0, sizeof req);
    push_request_free(&req);
}

/* ---- regressions -------------------------------------------------------- */

/* Asserts the body is refused with 400 invalid_json or invalid_channel_id. */
static void must_refuse_nul(const char *body, size_t len)
{
    push_request req;
    push_error err;
    memset(&err, 0, sizeof err);
    if (push_request_parse(body, len, &LIMITS, &req, &err) == 0) {
        char got[64];
        snprintf(got, sizeof got, "%s", req.recipient_count ? req.recipients[0] : "(none)");
        push_request_free(&req);
        fail_msg("accepted a \"to\" element with a NUL as channel id '%s'", got);
    }
    assert_int_equal(err.status, 400);
    assert_true(strcmp(err.code, "invalid_json") == 0 ||
                strcmp(err.code, "invalid_channel_id") == 0);
}

/* Regression: cJSON decodes \u0000 into a NUL, and "a\u0000#" used to be
 * checked (and pushed) as the channel id "a". */
static void test_regression_channel_id_with_escaped_nul(void **state)
{
    (void)state;
    static const char a[] = "{\"msg\":{},\"to\":[\"a\\u0000#\"]}";
    static const char b[] = "{\"msg\":{},\"to\":[\"ok\",\"victim\\u0000/x/#\"]}";
    static const char c[] = "{\"msg\":{},\"to\":[\"a\"],\"requestId\":\"r\\u0000x\"}";
    must_refuse_nul(a, sizeof a - 1);
    must_refuse_nul(b, sizeof b - 1);
    push_request req;
    push_error err;
    assert_int_equal(push_request_parse(c, sizeof c - 1, &LIMITS, &req, &err), -1);
    assert_int_equal(err.status, 400);
}

/* Regression (same cause): a raw NUL byte inside a string (control
 * characters must be escaped in JSON) also cut the id short. */
static void test_regression_channel_id_with_raw_nul(void **state)
{
    (void)state;
    static const char body[] = "{\"msg\":{},\"to\":[\"a\0#\"]}";
    must_refuse_nul(body, sizeof body - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_single),
        cmocka_unit_test(test_msg_text_as_written),
        cmocka_unit_test(test_valid_multi_all_fields),
        cmocka_unit_test(test_valid_broadcast),
        cmocka_unit_test(test_send_to_all_ignores_to),
        cmocka_unit_test(test_send_to_all_false_or_null_needs_to),
        cmocka_unit_test(test_parse_uses_len),
        cmocka_unit_test(test_dedupe_keeps_first_occurrence_order),
        cmocka_unit_test(test_dedupe_large),
        cmocka_unit_test(test_optional_strings_accepted),
        cmocka_unit_test(test_optional_strings_rejected),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_invalid_body),
        cmocka_unit_test(test_invalid_msg),
        cmocka_unit_test(test_missing_to),
        cmocka_unit_test(test_invalid_to),
        cmocka_unit_test(test_invalid_channel_id),
        cmocka_unit_test(test_too_many_recipients),
        cmocka_unit_test(test_send_to_all_not_boolean),
        cmocka_unit_test(test_delay),
        cmocka_unit_test(test_error_leaves_request_zeroed),
        cmocka_unit_test(test_regression_channel_id_with_escaped_nul),
        cmocka_unit_test(test_regression_channel_id_with_raw_nul),
    };
    return cmocka_run_group_tests_name("push", tests, NULL, NULL);
}
