/* libFuzzer target for the envelope codec (common/envelope.c, common/buf.c).
 *
 * For every input that cp_envelope_parse accepts:
 *   1. cp_envelope_write (full) must succeed, produce valid UTF-8 with no NUL
 *      byte, and parse again to an envelope with the same fields;
 *   2. writing is a fixed point after one round (write(parse(out)) == out
 *      from the second round on);
 *   3. in split mode, head + cp_envelope_write_recipient + tail must equal a
 *      full write with sessionId / to_single set, and parse again;
 *   4. writing msg from msg_raw (the tree printed by cJSON) gives the same
 *      bytes as writing it from the tree;
 *   5. the msg text the parse points at (msg_raw) lies inside the input and
 *      parses to the same value as msg's tree (json_same.h).
 * Any violation aborts, so libFuzzer saves the input as a crash artifact.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "envelope.h"
#include "json_same.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char recipient_session[] = "bridge-1_dev\"1_20240101000000-ff";
static const char recipient_channel[] = "dev\"1\\\x01\xc3\xa9";

#define CHECK(cond, out)                                                                          \
    do {                                                                                          \
        if (!(cond))                                                                              \
            check_failed(#cond, __LINE__, (out));                                                 \
    } while (0)

static void check_failed(const char *what, int line, const cp_buf *out)
{
    fprintf(stderr, "fuzz_envelope.c:%d: check failed: %s\n", line, what);
    if (out && out->data)
        fprintf(stderr, "output (%zu bytes): %.*s\n", out->len,
                out->len > 4096 ? 4096 : (int)out->len, out->data);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* True when every key and string value in the tree is valid UTF-8. */
static int tree_utf8_valid(const cJSON *item)
{
    for (; item; item = item->next) {
        if (item->string && !cp_utf8_valid(item->string, strlen(item->string)))
            return 0;
        if (cJSON_IsString(item) && item->valuestring &&
            !cp_utf8_valid(item->valuestring, strlen(item->valuestring)))
            return 0;
        if (item->child && !tree_utf8_valid(item->child))
            return 0;
    }
    return 1;
}

/* What the parser accepts is valid UTF-8 throughout: it refuses anything
 * else, so nothing invalid can reach a WebSocket text frame. */
static int parsed_utf8_valid(const cp_envelope *e)
{
    const char *strs[] = {e->from, e->message_id, e->request_id, e->result_msg, e->session_id};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i] && !cp_utf8_valid(strs[i], strlen(strs[i])))
            return 0;
    return (!e->msg || tree_utf8_valid(e->msg)) && (!e->to || !e->to->child || tree_utf8_valid(e->to->child));
}

static int same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Writes e in full into out (reset first) and checks the generic output
 * properties. */
static void write_full(cp_buf *out, const cp_envelope *e)
{
    cp_buf_reset(out);
    CHECK(cp_envelope_write(out, e, NULL) == 0, out);
    const char *s = cp_buf_cstr(out);
    CHECK(out->len >= 2 && s[0] == '{' && s[out->len - 1] == '}', out);
    CHECK(strlen(s) == out->len, out); /* no NUL inside */
    CHECK(cp_utf8_valid(s, out->len), out);
}

/* Parses out again; aborts unless it parses. */
static cJSON *reparse(const cp_buf *out, cp_envelope *back)
{
    char err[128] = "";
    cJSON *root = cp_envelope_parse(out->data, out->len, back, err, sizeof err);
    if (!root) {
        fprintf(stderr, "re-parse error: %s\n", err);
        CHECK(root != NULL, out);
    }
    return root;
}

static void check_split(const cp_envelope *e, const cp_buf *full_ref)
{
    cp_buf b, joined, expect;
    cp_buf_init(&b);
    cp_buf_init(&joined);
    cp_buf_init(&expect);

    /* Something in front, so the offset must be relative to the envelope. */
    cp_buf_puts(&b, "XYZ");
    size_t split = (size_t)-1;
    CHECK(cp_envelope_write(&b, e, &split) == 0, &b);
    size_t env_len = b.len - 3;
    CHECK(split >= 1 && split < env_len, &b);
    const char *env = cp_buf_cstr(&b) + 3;
    CHECK(memcmp(cp_buf_cstr(&b), "XYZ", 3) == 0, &b);
    CHECK(env[0] == '{' && env[env_len - 1] == '}', &b);

    /* The fragment starts with a comma, so it needs a non-empty head: the
     * header documents that msgType (the first head field of anything
     * delivered) is always present. With an empty head the split output is
     * "{" + tail with a leading comma, e.g. {,"trigger":2}, and only valid
     * once a fragment is inserted; cp_envelope_parse accepts such envelopes
     * (no msgType), so callers must check msgType before splitting. */
    if (split > 1) {
        /* Without sessionId/to, the split output is the full output minus
         * those two keys: never longer. */
        CHECK(env_len <= full_ref->len, &b);

        cp_buf_append(&joined, env, split);
        cp_envelope_write_recipient(&joined, recipient_session, recipient_channel);
        cp_buf_append(&joined, env + split, env_len - split);

        cp_envelope full = *e;
        full.fields |= CP_F_SESSION_ID | CP_F_TO;
        full.session_id = recipient_session;
        full.to = NULL;
        full.to_single = recipient_channel;
        write_full(&expect, &full);
        CHECK(joined.len == expect.len && memcmp(cp_buf_cstr(&joined), expect.data, expect.len) == 0,
              &joined);

        cp_envelope back;
        cJSON *root = reparse(&joined, &back);
        if (root) {
            CHECK(back.fields == (e->fields | CP_F_SESSION_ID | CP_F_TO), &joined);
            CHECK(same_string(back.session_id, recipient_session), &joined);
            CHECK(cJSON_GetArraySize(back.to) == 1, &joined);
            CHECK(same_string(cJSON_GetArrayItem(back.to, 0)->valuestring, recipient_channel),
                  &joined);
            cJSON_Delete(root);
        }
    }

    cp_buf_free(&b);
    cp_buf_free(&joined);
    cp_buf_free(&expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cp_envelope e;
    char err[128];
    cJSON *root = cp_envelope_parse((const char *)data, size, &e, err, sizeof err);
    if (!root) {
        CHECK(e.fields == 0 && err[0] != '\0', NULL);
        return 0;
    }
    CHECK(parsed_utf8_valid(&e), NULL);

    cp_buf out1, out2, out3;
    cp_buf_init(&out1);
    cp_buf_init(&out2);
    cp_buf_init(&out3);

    /* 1. full write, re-parse, same fields */
    write_full(&out1, &e);
    cp_envelope e2;
    cJSON *root2 = reparse(&out1, &e2);
    if (root2) {
        CHECK(e2.fields == e.fields, &out1);
        CHECK(e2.msg_type == e.msg_type, &out1);
        CHECK(e2.trigger == e.trigger, &out1);
        CHECK(e2.active_time == e.active_time, &out1);
        if (e.to)
            CHECK(cJSON_GetArraySize(e2.to) == cJSON_GetArraySize(e.to), &out1);
        if (e.msg)
            CHECK(cJSON_GetArraySize(e2.msg) == cJSON_GetArraySize(e.msg), &out1);
        CHECK(same_string(e.from, e2.from), &out1);
        CHECK(same_string(e.result_msg, e2.result_msg), &out1);
        CHECK(same_string(e.message_id, e2.message_id), &out1);
        CHECK(same_string(e.request_id, e2.request_id), &out1);

        /* 2. fixed point from the second round on */
        write_full(&out2, &e2);
        cp_envelope e3;
        cJSON *root3 = reparse(&out2, &e3);
        if (root3) {
            write_full(&out3, &e3);
            CHECK(out2.len == out3.len && memcmp(out2.data, out3.data, out2.len) == 0, &out3);
            cJSON_Delete(root3);
        }
        cJSON_Delete(root2);
    }

    /* 3. split mode */
    check_split(&e, &out1);

    /* 4. a pre-serialised msg (msg_raw) gives the same bytes as the tree */
    if (e.msg) {
        char *printed = cJSON_PrintUnformatted(e.msg);
        CHECK(printed != NULL, NULL);
        cp_envelope tree = e, raw = e;
        tree.msg_raw = NULL;
        write_full(&out1, &tree);
        raw.msg_raw = printed;
        raw.msg_raw_len = strlen(printed);
        write_full(&out2, &raw);
        CHECK(out2.len == out1.len && memcmp(out2.data, out1.data, out1.len) == 0, &out2);
        cJSON_free(printed);
    }

    /* 5. the text kept for msg is msg */
    if (e.msg_raw) {
        const char *in = (const char *)data;
        CHECK(e.msg_raw >= in && e.msg_raw_len <= size &&
                  e.msg_raw + e.msg_raw_len <= in + size,
              NULL);
        cJSON *again = cJSON_ParseWithLength(e.msg_raw, e.msg_raw_len);
        CHECK(again != NULL && json_same(again, e.msg), NULL);
        cJSON_Delete(again);
    }

    cp_buf_free(&out1);
    cp_buf_free(&out2);
    cp_buf_free(&out3);
    cJSON_Delete(root);
    return 0;
}
