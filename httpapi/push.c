#include "push.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "ids.h"

static int fail(push_error *err, int status, const char *code, const char *msg)
{
    err->status = status;
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "%s", msg);
    return -1;
}

typedef struct {
    const char *id;
    size_t pos;
} id_at;

static int cmp_id_at(const void *a, const void *b)
{
    const id_at *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Keeps the first occurrence of every id, in request order: O(n log n).
 * Returns the new count, or n unchanged when memory ran out (duplicates
 * then cost one extra publish each, nothing worse). */
static size_t dedupe(const char **ids, size_t n)
{
    if (n < 2)
        return n;
    id_at *v = malloc(n * sizeof *v);
    unsigned char *dup = calloc(n, 1);
    if (!v || !dup) {
        free(v);
        free(dup);
        return n;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = (id_at){ids[i], i};
    qsort(v, n, sizeof *v, cmp_id_at);
    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i].id, v[i - 1].id) == 0)
            dup[v[i].pos] = 1;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!dup[i])
            ids[kept++] = ids[i];
    free(v);
    free(dup);
    return kept;
}

static int optional_string(const cJSON *root, const char *key, const char **out, push_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return 0;
    char text[96];
    if (!cJSON_IsString(v)) {
        snprintf(text, sizeof text, "%s must be a string", key);
        return fail(err, 400, "invalid_field", text);
    }
    size_t n = strlen(v->valuestring);
    if (n == 0 || n > CP_ENVELOPE_ID_MAX) {
        snprintf(text, sizeof text, "%s must be 1-%d characters", key, CP_ENVELOPE_ID_MAX);
        return fail(err, 400, "invalid_field", text);
    }
    *out = v->valuestring;
    return 0;
}

int push_request_parse(const char *body, size_t len, const push_limits *limits,
                       push_request *req, push_error *err)
{
    memset(req, 0, sizeof *req);
    const char *why = NULL;
    cp_json_span msg_span = {.key = "msg"};
    cJSON *root = cp_json_parse_strict_span(body, len, 0, &msg_span, &why);
    if (!root) {
        char text[96];
        snprintf(text, sizeof text, "the body is not valid JSON: %s", why);
        if (why == CP_JSON_NOT_UTF8)
            snprintf(text, sizeof text, "the body is not valid UTF-8");
        return fail(err, 400, "invalid_json", text);
    }
    req->root = root;
    if (!cJSON_IsObject(root)) {
        fail(err, 400, "invalid_body", "the body must be a JSON object");
        goto bad;
    }

    const cJSON *all = cJSON_GetObjectItemCaseSensitive(root, "sendToAll");
    if (all && !cJSON_IsNull(all)) {
        if (!cJSON_IsBool(all)) {
            fail(err, 400, "invalid_field", "sendToAll must be true or false");
            goto bad;
        }
        req->send_to_all = cJSON_IsTrue(all);
    }

    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "msg");
    if (!cJSON_IsObject(msg)) {
        fail(err, 400, "invalid_msg", "msg must be a JSON object");
        goto bad;
    }
    req->msg = msg;
    /* The body is freed before the push is written out: msg is kept as
     * written (numbers exactly), or printed from the tree when it could not
     * be told apart in the text. */
    const char *raw = body + msg_span.off;
    size_t raw_len = msg_span.len;
    char *printed = NULL;
    if (!raw_len) {
        printed = cJSON_PrintUnformatted(msg);
        raw = printed;
        raw_len = printed ? strlen(printed) : 0;
    }
    req->msg_text = raw ? malloc(raw_len + 1) : NULL;
    if (req->msg_text) {
        memcpy(req->msg_text, raw, raw_len);
        req->msg_text[raw_len] = '\0';
        req->msg_len = raw_len;
    }
    cJSON_free(printed);
    if (!req->msg_text) {
        fail(err, 500, "internal_error", "out of memory");
        goto bad;
    }

    const cJSON *delay = cJSON_GetObjectItemCaseSensitive(root, "delay");
    if (delay && !cJSON_IsNull(delay) && !(cJSON_IsNumber(delay) && delay->valuedouble == 0)) {
        fail(err, 400, "delay_not_supported",
             "delayed push is not supported: omit delay (or send 0) and schedule the push "
             "yourself");
        goto bad;
    }

    if (optional_string(root, "requestId", &req->request_id, err) != 0 ||
        optional_string(root, "from", &req->from, err) != 0 ||
        optional_string(root, "messageId", &req->message_id, err) != 0)
        goto bad;

    if (req->send_to_all)
        return 0; /* to is ignored, as in the original */

    const cJSON *to = cJSON_GetObjectItemCaseSensitive(root, "to");
    if (!to || cJSON_IsNull(to)) {
        fail(err, 400, "missing_to", "to (an array of channel ids) is required unless sendToAll");
        goto bad;
    }
    if (!cJSON_IsArray(to)) {
        fail(err, 400, "invalid_to", "to must be an array of channel ids");
        goto bad;
    }
    size_t n = (size_t)cJSON_GetArraySize(to);
    if (n == 0) {
        fail(err, 400, "missing_to", "to must not be empty (or set sendToAll)");
        goto bad;
    }
    if (n > limits->max_recipients) {
        char text[96];
        snprintf(text, sizeof text, "too many recipients: at most %zu per request",
                 limits->max_recipients);
        fail(err, 400, "too_many_recipients", text);
        goto bad;
    }
    req->recipients = malloc(n * sizeof *req->recipients);
    if (!req->recipients) {
        fail(err, 500, "internal_error", "out of memory");
        goto bad;
    }
    size_t i = 0;
    const cJSON *el;
    cJSON_ArrayForEach(el, to)
    {
        if (!cJSON_IsString(el) || !cp_channel_id_valid(el->valuestring, strlen(el->valuestring))) {
            char text[160];
            snprintf(text, sizeof text,
                     "to[%zu] is not a valid channel id (1-128 characters of [A-Za-z0-9._:@-])",
                     i);
            fail(err, 400, "invalid_channel_id", text);
            goto bad;
        }
        req->recipients[i++] = el->valuestring;
    }
    req->recipient_count = dedupe(req->recipients, n);
    return 0;

bad:
    push_request_free(req);
    return -1;
}

void push_request_free(push_request *req)
{
    cJSON_Delete(req->root);
    free(req->msg_text);
    free(req->recipients);
    memset(req, 0, sizeof *req);
}
