#include "envelope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const char cp_json_not_utf8[] = "not valid UTF-8";
const char cp_json_too_deep[] = "nested deeper than " STR(CP_JSON_MAX_DEPTH) " levels";

/* Writes "<subject><problem>" as the error text. */
static int fail(char *err, size_t cap, const char *subject, const char *problem)
{
    if (err && cap)
        snprintf(err, cap, "%s%s", subject, problem);
    return -1;
}

static int get_string(const cJSON *root, const char *key, unsigned bit, size_t max_len,
                      const char **out, unsigned *fields, char *err, size_t cap)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsString(item))
        return fail(err, cap, key, " must be a string");
    if (max_len && strlen(item->valuestring) > max_len)
        return fail(err, cap, key, " is too long");
    *out = item->valuestring;
    *fields |= bit;
    return 0;
}

/* A stream offset: a whole number 0 .. 2^53. With keep_null, "null" is kept
 * as -1 (a message that could not be stored says so on every hop). */
static int get_offset(const cJSON *root, const char *key, unsigned bit, int keep_null,
                      int64_t *out, unsigned *fields, char *err, size_t cap)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item)
        return 0;
    if (cJSON_IsNull(item)) {
        if (keep_null) {
            *out = -1;
            *fields |= bit;
        }
        return 0;
    }
    double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
    if (!isfinite(v) || v != floor(v) || v < 0 || v > 9007199254740992.0)
        return fail(err, cap, key, " must be a whole number");
    *out = (int64_t)v;
    *fields |= bit;
    return 0;
}

/* "broadcast" is written only as true; "recovered" as true or false. */
static int get_bool(const cJSON *root, const char *key, unsigned bit, unsigned *fields,
                    int *out, char *err, size_t cap)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsBool(item))
        return fail(err, cap, key, " must be true or false");
    if (out) {
        *out = cJSON_IsTrue(item);
        *fields |= bit;
    } else if (cJSON_IsTrue(item)) {
        *fields |= bit;
    }
    return 0;
}

/* msgType may be a number or a numeric string, as fastjson accepted. */
static int parse_msg_type(const cJSON *item, int *out, char *err, size_t cap)
{
    double v;
    if (cJSON_IsNumber(item)) {
        v = item->valuedouble;
    } else if (cJSON_IsString(item)) {
        const char *s = item->valuestring;
        char *end = NULL;
        long l = strtol(s, &end, 10);
        if (end == s || *end != '\0')
            return fail(err, cap, "msgType", " must be a number");
        v = (double)l;
    } else {
        return fail(err, cap, "msgType", " must be a number");
    }
    if (!isfinite(v) || v != floor(v) || v < CP_MSG_ERROR || v > CP_MSG__LAST) {
        if (err && cap)
            snprintf(err, cap, "unknown msgType");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int hex4(const char *p)
{
    for (int i = 0; i < 4; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f') ||
              (p[i] >= 'A' && p[i] <= 'F')))
            return 0;
    return 1;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and nothing else. */
static int strict_number(const char *p, size_t n)
{
    size_t i = 0;
    if (i < n && p[i] == '-')
        i++;
    if (i < n && p[i] == '0') {
        i++;
    } else if (i < n && p[i] >= '1' && p[i] <= '9') {
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    } else {
        return 0;
    }
    if (i < n && p[i] == '.') {
        size_t digits = ++i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == digits)
            return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t digits = i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == digits)
            return 0;
    }
    return i == n;
}

/* One pass over the raw text before cJSON sees it. cJSON copies raw control
 * bytes inside strings and decodes \u0000 into a NUL that silently cuts the
 * C string short ("a\u0000#" would be read as "a"): strict JSON forbids the
 * first, we refuse both. cJSON also parses, prints and deletes recursively,
 * so the nesting depth is bounded here, before any recursion starts: a few
 * KB of '[' would otherwise overflow a small thread stack (CivetWeb's
 * workers have 100 KiB).
 *
 * The same pass finds where the value of one top-level member lies when it
 * is an object or an array (span->key set): the text then goes on byte for
 * byte instead of being printed again from cJSON's tree, which is cheaper and
 * keeps numbers as written (cJSON holds them as doubles and prints
 * 9007199254740993 as 9.00719925474099e+15). Found only when the key is
 * written exactly once and no top-level key holds an escape (one could spell
 * the same name), so it is the member cJSON_GetObjectItemCaseSensitive
 * returns; and only when the text is strict JSON: cJSON also takes control
 * bytes as white space and numbers such as 01, 1. or -.5, which a client's
 * JSON.parse refuses (printing the tree again repairs those, as before).
 * Returns NULL, or why the text is refused. */
static const char *scan_json(const char *data, size_t len, cp_json_span *span)
{
    int in_string = 0;
    unsigned depth = 0;
    size_t str_start = 0, str_end = 0; /* the last string closed: at a ':' of depth 1, its key */
    int str_escaped = 0, want_value = 0, capturing = 0, matches = 0, escaped_keys = 0;
    int lenient = 0; /* text cJSON takes that strict JSON does not */
    size_t key_len = span && span->key ? strlen(span->key) : 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (!in_string) {
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
                continue;
            if (c < 0x20) {
                lenient = 1;
                continue;
            }
            if (key_len && (c == '-' || (c >= '0' && c <= '9'))) {
                /* cJSON reads a number as the longest run of these */
                size_t end = i;
                while (end < len && strchr("0123456789+-.eE", data[end]) && data[end])
                    end++;
                lenient |= !strict_number(data + i, end - i);
                want_value = 0;
                i = end - 1;
                continue;
            }
            if (key_len && depth == 1) {
                if (c == ':') {
                    escaped_keys += str_escaped;
                    want_value = !str_escaped && str_end - str_start == key_len &&
                                 memcmp(data + str_start, span->key, key_len) == 0;
                    matches += want_value;
                    continue;
                }
                if (want_value && (c == '{' || c == '[')) {
                    span->off = i;
                    capturing = 1;
                }
                want_value = 0;
            }
            if (c == '"') {
                in_string = 1;
                str_start = i + 1;
                str_escaped = 0;
            } else if (c == '[' || c == '{') {
                if (++depth > CP_JSON_MAX_DEPTH)
                    return CP_JSON_TOO_DEEP;
            } else if ((c == ']' || c == '}') && depth > 0) {
                if (--depth == 1 && capturing) {
                    span->len = i + 1 - span->off;
                    capturing = 0;
                }
            }
            continue;
        }
        if (c < 0x20)
            return "control character in a string";
        if (c == '"') {
            in_string = 0;
            str_end = i;
        } else if (c == '\\') {
            /* cJSON decodes \u with a bad hex digit as U+0000 too */
            char e = i + 1 < len ? data[i + 1] : '\0';
            if (e == 'u') {
                if (i + 5 >= len || !hex4(data + i + 2))
                    return "bad \\u escape in a string";
                if (memcmp(data + i + 2, "0000", 4) == 0)
                    return "\\u0000 in a string";
            } else if (!e || !strchr("\"\\/bfnrt", e)) {
                return "bad escape in a string";
            }
            str_escaped = 1;
            i++; /* skip the escaped character */
        }
    }
    if (key_len && (matches != 1 || escaped_keys || capturing || lenient))
        span->len = 0;
    return NULL;
}

cJSON *cp_json_parse_strict(const char *data, size_t len, const char **why)
{
    return cp_json_parse_strict_flags(data, len, 0, why);
}

cJSON *cp_json_parse_strict_flags(const char *data, size_t len, unsigned flags,
                                  const char **why)
{
    return cp_json_parse_strict_span(data, len, flags, NULL, why);
}

cJSON *cp_json_parse_strict_span(const char *data, size_t len, unsigned flags,
                                 cp_json_span *span, const char **why)
{
    const char *problem = NULL;
    if (span)
        span->off = span->len = 0;
    cJSON *root = NULL;
    if (!(flags & CP_PARSE_UTF8_CHECKED) && !cp_utf8_valid(data, len)) {
        problem = CP_JSON_NOT_UTF8;
        goto out;
    }
    if ((problem = scan_json(data, len, span)) != NULL)
        goto out;
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        problem = "syntax error";
        goto out;
    }
    /* cJSON stops after the first value; anything but white space after it
     * means the input was not one JSON document. */
    for (const char *p = end; p && p < data + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            root = NULL;
            problem = "data after the JSON value";
            goto out;
        }
    }
out:
    if (why)
        *why = problem;
    return root;
}

cJSON *cp_envelope_parse(const char *data, size_t len, cp_envelope *env, char *err, size_t cap)
{
    return cp_envelope_parse_flags(data, len, 0, env, err, cap);
}

cJSON *cp_envelope_parse_flags(const char *data, size_t len, unsigned flags, cp_envelope *env,
                               char *err, size_t cap)
{
    memset(env, 0, sizeof *env);
    const char *why = NULL;
    cp_json_span msg_span = {.key = "msg"};
    cJSON *root = cp_json_parse_strict_span(data, len, flags, &msg_span, &why);
    if (!root) {
        if (why == CP_JSON_NOT_UTF8)
            fail(err, cap, "invalid UTF-8", "");
        else if (why == CP_JSON_TOO_DEEP)
            fail(err, cap, "invalid JSON: ", why);
        else
            fail(err, cap, "invalid JSON", "");
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        fail(err, cap, "envelope must be a JSON object", "");
        goto bad;
    }

    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, "activeTime");
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || item->valuedouble < 0 ||
            item->valuedouble > 9007199254740992.0) {
            fail(err, cap, "activeTime", " must be a number (epoch milliseconds)");
            goto bad;
        }
        env->active_time = (int64_t)item->valuedouble;
        env->fields |= CP_F_ACTIVE_TIME;
    }
    if (get_string(root, "from", CP_F_FROM, CP_ENVELOPE_ID_MAX, &env->from, &env->fields, err,
                   cap) ||
        get_string(root, "messageId", CP_F_MESSAGE_ID, CP_ENVELOPE_ID_MAX, &env->message_id,
                   &env->fields, err, cap) ||
        get_string(root, "requestId", CP_F_REQUEST_ID, CP_ENVELOPE_ID_MAX, &env->request_id,
                   &env->fields, err, cap) ||
        get_string(root, "resultMsg", CP_F_RESULT_MSG, 0, &env->result_msg, &env->fields, err,
                   cap) ||
        get_string(root, "sessionId", CP_F_SESSION_ID, 0, &env->session_id, &env->fields, err,
                   cap))
        goto bad;

    if (get_offset(root, "offset", CP_F_OFFSET, 1, &env->offset, &env->fields, err, cap) ||
        get_offset(root, "boffset", CP_F_BOFFSET, 0, &env->boffset, &env->fields, err, cap) ||
        get_string(root, "epoch", CP_F_EPOCH, CP_ENVELOPE_EPOCH_MAX, &env->epoch, &env->fields,
                   err, cap) ||
        get_string(root, "bepoch", CP_F_BEPOCH, CP_ENVELOPE_EPOCH_MAX, &env->bepoch,
                   &env->fields, err, cap) ||
        get_bool(root, "broadcast", CP_F_BROADCAST, &env->fields, NULL, err, cap) ||
        get_bool(root, "recovered", CP_F_RECOVERED, &env->fields, &env->recovered, err, cap))
        goto bad;

    item = cJSON_GetObjectItemCaseSensitive(root, "msg");
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsObject(item)) {
            fail(err, cap, "msg", " must be a JSON object");
            goto bad;
        }
        env->msg = item;
        env->fields |= CP_F_MSG;
        if (msg_span.len) {
            env->msg_raw = data + msg_span.off;
            env->msg_raw_len = msg_span.len;
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(root, "msgType");
    if (item && !cJSON_IsNull(item)) {
        if (parse_msg_type(item, &env->msg_type, err, cap) != 0)
            goto bad;
        env->fields |= CP_F_MSG_TYPE;
    }

    item = cJSON_GetObjectItemCaseSensitive(root, "to");
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsArray(item)) {
            fail(err, cap, "to", " must be an array of strings");
            goto bad;
        }
        const cJSON *el;
        cJSON_ArrayForEach(el, item)
        {
            if (!cJSON_IsString(el)) {
                fail(err, cap, "to", " must be an array of strings");
                goto bad;
            }
        }
        env->to = item;
        env->fields |= CP_F_TO;
    }

    item = cJSON_GetObjectItemCaseSensitive(root, "trigger");
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
            item->valuedouble < 0 || item->valuedouble > 100) {
            fail(err, cap, "trigger", " must be a small integer");
            goto bad;
        }
        env->trigger = (int)item->valuedouble;
        env->fields |= CP_F_TRIGGER;
    }
    return root;

bad:
    cJSON_Delete(root);
    memset(env, 0, sizeof *env);
    return NULL;
}

typedef struct {
    cp_buf *b;
    int first;
} writer;

static void key(writer *w, const char *k)
{
    if (!w->first)
        cp_buf_putc(w->b, ',');
    w->first = 0;
    cp_buf_putc(w->b, '"');
    cp_buf_puts(w->b, k);
    cp_buf_puts(w->b, "\":");
}

static void str_field(writer *w, const char *k, const char *v)
{
    key(w, k);
    cp_buf_json_string(w->b, v, strlen(v));
}

static void offset_field(writer *w, const char *k, int64_t v)
{
    key(w, k);
    if (v < 0)
        cp_buf_puts(w->b, "null");
    else
        cp_buf_printf(w->b, "%lld", (long long)v);
}

/* Prints a cJSON value straight into the buffer's spare room: no temporary
 * string is allocated per message. */
static void json_value(cp_buf *b, const cJSON *v)
{
    size_t room = 256;
    for (int attempt = 0; attempt < 24; attempt++) {
        if (cp_buf_reserve(b, room) != 0)
            return;
        size_t avail = b->cap - b->len - 1;
        if (avail > (size_t)INT32_MAX)
            avail = INT32_MAX;
        if (cJSON_PrintPreallocated((cJSON *)v, b->data + b->len, (int)avail, 0)) {
            b->len += strlen(b->data + b->len);
            return;
        }
        room = avail * 2;
    }
    b->failed = 1;
}

int cp_envelope_write(cp_buf *b, const cp_envelope *e, size_t *split)
{
    size_t start = b->len;
    writer w = {b, 1};
    cp_buf_putc(b, '{');
    if (e->fields & CP_F_ACTIVE_TIME) {
        key(&w, "activeTime");
        cp_buf_printf(b, "%lld", (long long)e->active_time);
    }
    if ((e->fields & CP_F_BEPOCH) && e->bepoch)
        str_field(&w, "bepoch", e->bepoch);
    if (e->fields & CP_F_BOFFSET)
        offset_field(&w, "boffset", e->boffset);
    if (e->fields & CP_F_BROADCAST) {
        key(&w, "broadcast");
        cp_buf_puts(b, "true");
    }
    if ((e->fields & CP_F_EPOCH) && e->epoch)
        str_field(&w, "epoch", e->epoch);
    if ((e->fields & CP_F_FROM) && e->from)
        str_field(&w, "from", e->from);
    if ((e->fields & CP_F_MESSAGE_ID) && e->message_id)
        str_field(&w, "messageId", e->message_id);
    if ((e->fields & CP_F_MSG) && e->msg_raw) {
        key(&w, "msg");
        cp_buf_append(b, e->msg_raw, e->msg_raw_len);
    } else if ((e->fields & CP_F_MSG) && e->msg) {
        key(&w, "msg");
        json_value(b, e->msg);
    }
    if (e->fields & CP_F_MSG_TYPE) {
        key(&w, "msgType");
        cp_buf_printf(b, "%d", e->msg_type);
    }
    if (e->fields & CP_F_OFFSET)
        offset_field(&w, "offset", e->offset);
    if (e->fields & CP_F_RECOVERED) {
        key(&w, "recovered");
        cp_buf_puts(b, e->recovered ? "true" : "false");
    }
    if ((e->fields & CP_F_REQUEST_ID) && e->request_id)
        str_field(&w, "requestId", e->request_id);
    if ((e->fields & CP_F_RESULT_MSG) && e->result_msg)
        str_field(&w, "resultMsg", e->result_msg);
    if (split) {
        *split = b->len - start;
        /* The recipient fragment starts with a comma, so the head must not
         * be empty: msgType is always present on anything delivered. */
        w.first = 0;
    } else {
        if ((e->fields & CP_F_SESSION_ID) && e->session_id)
            str_field(&w, "sessionId", e->session_id);
        if (e->fields & CP_F_TO) {
            key(&w, "to");
            if (e->to) {
                json_value(b, e->to);
            } else if (e->to_single) {
                cp_buf_putc(b, '[');
                cp_buf_json_string(b, e->to_single, strlen(e->to_single));
                cp_buf_putc(b, ']');
            } else {
                cp_buf_puts(b, "[]");
            }
        }
    }
    if (e->fields & CP_F_TRIGGER) {
        key(&w, "trigger");
        cp_buf_printf(b, "%d", e->trigger);
    }
    cp_buf_putc(b, '}');
    return b->failed ? -1 : 0;
}

void cp_envelope_fill_defaults(cp_envelope *env, cp_trigger trigger, char *id_buf)
{
    if (!(env->fields & CP_F_MESSAGE_ID) && id_buf) {
        cp_message_id(id_buf);
        env->message_id = id_buf;
        env->fields |= CP_F_MESSAGE_ID;
    }
    if (!(env->fields & CP_F_ACTIVE_TIME)) {
        env->active_time = cp_now_ms();
        env->fields |= CP_F_ACTIVE_TIME;
    }
    if (!(env->fields & CP_F_FROM)) {
        env->from = "system";
        env->fields |= CP_F_FROM;
    }
    if (!(env->fields & CP_F_TRIGGER)) {
        env->trigger = trigger;
        env->fields |= CP_F_TRIGGER;
    }
}

void cp_envelope_write_recipient(cp_buf *b, const char *session_id, const char *channel_id)
{
    cp_buf_puts(b, ",\"sessionId\":");
    cp_buf_json_string(b, session_id, strlen(session_id));
    cp_buf_puts(b, ",\"to\":[");
    cp_buf_json_string(b, channel_id, strlen(channel_id));
    cp_buf_puts(b, "]");
}

const char *cp_msg_type_name(int t)
{
    switch (t) {
    case CP_MSG_ERROR:
        return "error";
    case CP_MSG_CONNECTION:
        return "connection";
    case CP_MSG_BUSINESS:
        return "business";
    case CP_MSG_BUSINESS_ACK:
        return "business_ack";
    case CP_MSG_HEARTBEAT:
        return "heartbeat";
    case CP_MSG_HEARTBEAT_ACK:
        return "heartbeat_ack";
    case CP_MSG_RECONNECT:
        return "reconnect";
    default:
        return "unknown";
    }
}
