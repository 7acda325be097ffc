/* HTTP handlers of the push API (they run on CivetWeb worker threads, which
 * have 100 KiB stacks: every buffer of size is on the heap). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <civetweb.h>

#include "buf.h"
#include "commalist.h"
#include "dbatch.h"
#include "envelope.h"
#include "groupcommit.h"
#include "httpapi.h"
#include "ids.h"
#include "addrlimit.h"
#include "jwt.h"
#include "reload.h"
#include "log.h"
#include "procmetrics.h"
#include "pubbatch.h"
#include "push.h"
#include "sequencer.h"
#include "topics.h"

static const int status_codes[STATUS_SLOTS - 1] = {200, 400, 401, 404, 405, 408,
                                                   413, 415, 429, 500, 501, 503};
static const char *const refusal_names[REFUSED__COUNT] = {"framing", "too_large", "address_limit",
                                                           "body_timeout"};
static const char *const endpoint_names[EP__COUNT] = {
    "/api/v1/push", "/message/send", "/portal/message/send", "/healthz", "/livez", "/readyz",
    "/metrics",
    "/api/v1/config", "/api/v1/clients", "/api/v1/dev/token", "/api/v1/openapi.json"};

static void count(httpapi *api, endpoint ep, int status)
{
    size_t slot = STATUS_SLOTS - 1;
    for (size_t i = 0; i < STATUS_SLOTS - 1; i++)
        if (status_codes[i] == status)
            slot = i;
    atomic_fetch_add(&api->requests[ep][slot], 1);
}

/* What this worker knows of the connection it serves. CivetWeb runs a
 * connection on one worker from its opening to its close (the callbacks
 * included), so a thread-local holds it without any allocation. */
typedef struct {
    char address[64]; /* counted in api->conns under this address */
    int counted;
    int body_read; /* the current request's body was read to its end */
    int close;     /* end the connection after the current reply */
} worker_conn;

static _Thread_local worker_conn this_conn;

/* A reply sent while the body the client announced is still unread ends
 * the connection: otherwise CivetWeb reads and discards that body first
 * (a Content-Length of 10^18 held the worker until its timeout), and bytes
 * of it could be taken for the next request. */
static int body_left_unread(const struct mg_connection *conn)
{
    /* content_length is -1 both without a body and for a chunked one */
    int has_body = mg_get_request_info(conn)->content_length > 0 ||
                   mg_get_header(conn, "Transfer-Encoding") != NULL;
    return has_body && !this_conn.body_read;
}

/* CivetWeb 1.15 has no call to end a connection from a handler. Its error
 * path does: mg_send_http_error sets must_close, and for a 304 (no body
 * allowed) after our reply was sent it writes nothing more (the header
 * calls refuse: a response is already out). */
static void close_after_reply(struct mg_connection *conn)
{
    mg_send_http_error(conn, 304, "%s", "");
}

/* The Date header, formatted once a second per worker. */
static const char *http_date(void)
{
    static _Thread_local time_t at = -1;
    static _Thread_local char text[40];
    time_t now = time(NULL);
    if (now != at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        at = now;
    }
    return text;
}

/* Whether the client lets the connection live after this reply (CivetWeb
 * decides the same way; our header must say what it will do). */
static int client_keeps_alive(const struct mg_connection *conn)
{
    const char *c = mg_get_header(conn, "Connection");
    if (c)
        return cp_comma_has_token(c, strlen(c), "keep-alive");
    const char *v = mg_get_request_info(conn)->http_version;
    return v && strcmp(v, "1.1") == 0;
}

/* The whole reply, status line to body, in one write when it fits in
 * RESPONSE_ONE_WRITE: CivetWeb's header calls send each header line on its
 * own (8 send(2) per reply, each a segment the client wakes for), which
 * cost more than the rest of a push. */
#define RESPONSE_ONE_WRITE 4096

static int send_body(struct mg_connection *conn, int status, const char *type, const char *body,
                     size_t len, const char *extra_name, const char *extra_value)
{
    int close = this_conn.close || body_left_unread(conn);
    int keep = !close && client_keeps_alive(conn);
    char out[RESPONSE_ONE_WRITE];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s%s%sDate: %s\r\nConnection: %s\r\n\r\n",
                     status, mg_get_response_code_text(conn, status), type, len,
                     extra_name ? extra_name : "", extra_name ? ": " : "",
                     extra_name ? extra_value : "", extra_name ? "\r\n" : "", http_date(),
                     keep ? "keep-alive" : "close");
    if (n < 0 || (size_t)n >= sizeof out) { /* our own header values: cannot happen */
        log_error("a reply header did not fit in %d bytes", RESPONSE_ONE_WRITE);
        n = 0;
        keep = 0;
    }
    const char *m = mg_get_request_info(conn)->request_method;
    if (m && strcmp(m, "HEAD") == 0)
        len = 0; /* the headers describe the body a GET would get */
    if ((size_t)n + len <= sizeof out) {
        if (len)
            memcpy(out + n, body, len);
        mg_write(conn, out, (size_t)n + len);
    } else {
        mg_write(conn, out, (size_t)n);
        mg_write(conn, body, len);
    }
    if (!keep)
        close_after_reply(conn);
    return status;
}

/* {"success":false,"code":CODE,"msg":MSG,"data":null} */
static void send_error_body(struct mg_connection *conn, endpoint ep, int status, const char *code,
                            const char *msg)
{
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "{\"success\":false,\"code\":");
    /* The original's callers know only "0" and "-1". */
    const char *c = ep == EP_MESSAGE_SEND || ep == EP_PORTAL_MESSAGE_SEND ? "-1" : code;
    cp_buf_json_string(&b, c, strlen(c));
    cp_buf_puts(&b, ",\"msg\":");
    cp_buf_json_string(&b, msg, strlen(msg));
    if (c != code) {
        cp_buf_puts(&b, ",\"error\":");
        cp_buf_json_string(&b, code, strlen(code));
    }
    cp_buf_puts(&b, ",\"data\":null}");
    const char *extra = NULL, *value = NULL;
    if (status == 405) {
        extra = "Allow";
        value = "POST";
    } else if (status == 401) {
        extra = "WWW-Authenticate";
        value = "Bearer";
    }
    send_body(conn, status, "application/json", b.data, b.len, extra, value);
    cp_buf_free(&b);
}

static int send_error(httpapi *api, struct mg_connection *conn, endpoint ep, int status,
                      const char *code, const char *msg)
{
    send_error_body(conn, ep, status, code, msg);
    count(api, ep, status);
    return status;
}

/* Constant-time comparison: the time taken does not depend on where the
 * first difference is. */
static int same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)(a[i < alen ? i : 0] ^ b[i]);
    return diff == 0;
}

int api_key_match(const httpapi *api, const char *authorization)
{
    httpapi *a = (httpapi *)api; /* the lock, not the keys, changes */
    pthread_rwlock_rdlock(&a->keys_lock);
    int match = -1;
    if (api->key_count == 0) {
        match = API_NO_KEYS;
    } else if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
        const char *given = authorization + 7;
        size_t glen = strlen(given);
        /* Every key is compared, so the time does not tell which one matched. */
        for (size_t i = 0; i < api->key_count; i++)
            if (same_secret(given, glen, api->keys[i], strlen(api->keys[i])))
                match = (int)i;
    }
    pthread_rwlock_unlock(&a->keys_lock);
    return match;
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        explicit_bzero(keys[i], strlen(keys[i]));
        free(keys[i]);
    }
    free(keys);
}

int api_keys_load(httpapi *api)
{
    const char *path = api->cfg.api_key_file;
    char *text;
    if (cp_reload_read_file("--api-key-file", path, &text) < 0)
        return -1;
    char **keys = NULL;
    size_t n = 0;
    int failed = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\r\n", &save); line && !failed;
         line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        if (!len || *line == '#')
            continue;
        char **k = realloc(keys, (n + 1) * sizeof *k);
        if (!k || !(k[n] = strndup(line, len))) {
            keys = k ? k : keys;
            failed = 1;
            break;
        }
        keys = k;
        n++;
    }
    explicit_bzero(text, strlen(text));
    free(text);
    key_bucket *buckets = failed || !n ? NULL : calloc(n, sizeof *buckets);
    if (failed || !n || !buckets) {
        log_error("--api-key-file %s: %s; the keys in use stay", path,
                  !n && !failed ? "no key in the file" : "out of memory");
        free_keys(keys, n);
        free(buckets);
        return -1;
    }
    int64_t now = cp_mono_ms();
    for (size_t i = 0; i < n; i++)
        cp_bucket_init(&buckets[i], (double)api->cfg.burst_per_key, now);
    pthread_rwlock_wrlock(&api->keys_lock);
    pthread_mutex_lock(&api->bucket_lock);
    char **old = api->keys;
    size_t old_n = api->key_count;
    key_bucket *old_buckets = api->buckets;
    api->keys = keys;
    api->key_count = n;
    api->buckets = buckets;
    pthread_mutex_unlock(&api->bucket_lock);
    pthread_rwlock_unlock(&api->keys_lock);
    free_keys(old, old_n);
    free(old_buckets);
    log_info("reload: %zu API key%s from %s", n, n == 1 ? "" : "s", path);
    return 0;
}

/* Token bucket of one API key: returns 0 when the request may go on, or
 * the seconds to wait (for Retry-After). */
static int key_rate_wait(httpapi *api, int key)
{
    if (api->cfg.rate_per_key <= 0 || key < 0)
        return 0;
    int64_t now = cp_mono_ms();
    double rate = (double)api->cfg.rate_per_key;
    pthread_mutex_lock(&api->bucket_lock);
    int wait = 0;
    /* The keys may have been reloaded since the key was matched. */
    key_bucket *kb = (size_t)key < api->key_count ? &api->buckets[key] : NULL;
    if (kb && !cp_bucket_take(kb, rate, (double)api->cfg.burst_per_key, now))
        wait = 1 + (int)((1.0 - kb->tokens) / rate);
    pthread_mutex_unlock(&api->bucket_lock);
    return wait;
}

static int is_json(const char *content_type)
{
    if (!content_type)
        return 0;
    size_t n = strlen("application/json");
    return strncasecmp(content_type, "application/json", n) == 0 &&
           (content_type[n] == '\0' || content_type[n] == ';' || content_type[n] == ' ');
}

/* mg_read answers 0 both at the end of the body and when the peer went
 * away or a read timed out: only the announced length tells them apart. */
static int body_unfinished(const struct mg_connection *conn, size_t got)
{
    long long announced = mg_get_request_info(conn)->content_length;
    return announced > 0 && (long long)got < announced;
}

/* Reads the whole body. Returns 0, or an HTTP status after answering. */
static int read_body(httpapi *api, struct mg_connection *conn, endpoint ep, cp_buf *body)
{
    /* An announced length over the limit was refused in api_begin_request;
     * a chunked body is measured as it arrives. */
    size_t max = (size_t)api->cfg.max_body_bytes;
    char *chunk = malloc(16384);
    if (!chunk)
        return send_error(api, conn, ep, 500, "internal_error", "out of memory");
    /* A read that gets nothing for --header-timeout-ms ends the request.
     * (CivetWeb's mg_read waits until its whole buffer is filled, so a
     * total time for the body cannot be enforced from here: see
     * docs/security.md.) */
    for (;;) {
        int n = mg_read(conn, chunk, 16384);
        int stalled = n < 0 || (n == 0 && body_unfinished(conn, body->len));
        if (n == 0 && !stalled)
            break;
        if (n > 0) {
            if (body->len + (size_t)n > max) {
                free(chunk);
                atomic_fetch_add(&api->refused[REFUSED_TOO_LARGE], 1);
                return send_error(api, conn, ep, 413, "body_too_large",
                                  "the body is larger than allowed");
            }
            cp_buf_append(body, chunk, (size_t)n);
        }
        if (stalled) {
            free(chunk);
            atomic_fetch_add(&api->refused[REFUSED_BODY_TIMEOUT], 1);
            return send_error(api, conn, ep, 408, "body_timeout",
                              "the announced body did not arrive in time");
        }
    }
    free(chunk);
    this_conn.body_read = 1;
    if (body->failed)
        return send_error(api, conn, ep, 500, "internal_error", "out of memory");
    return 0;
}

/* One push request on its way: what it stores, publishes and answers. */
typedef struct {
    push_request req;
    char generated_rid[40];
    const char *rid;
    size_t n; /* messages: one per recipient, or one broadcast */
    char (*mids)[CP_MESSAGE_ID_LEN + 1]; /* generated, when the publisher gave none */
    char (*alt)[CP_ENVELOPE_ID_MAX + 1]; /* per message, "" or the id it got after a conflict */
    cp_envelope env; /* shared by the messages; messageId, to and offset vary */
    int connected;
    int history;     /* appends were tried (--redis set) */
    cp_redis_appended *appended; /* per message; offset 0: not stored */
    size_t *slot;    /* per message: its publish in batch, SIZE_MAX: not published */
    size_t published; /* publishes in batch */
    cp_pub_batch *batch;
    int publish_on_commit; /* the group commit's thread publishes, right after Redis */
    int published_on_commit; /* ... and it did (nothing conflicted) */
    unsigned char *online; /* per recipient, when presence_known */
    int presence_known;
} push_job;

static const char *job_mid(const push_job *job, size_t i)
{
    if (job->alt && job->alt[i][0])
        return job->alt[i];
    return job->req.message_id ? job->req.message_id : job->mids[i];
}

static int job_conflict(const push_job *job, size_t i)
{
    return job->alt && job->alt[i][0];
}

static int job_stored(const push_job *job, size_t i)
{
    return job->appended && job->appended[i].offset > 0;
}

static int job_duplicate(const push_job *job, size_t i)
{
    return job_stored(job, i) && job->appended[i].duplicate;
}

static int job_published(const push_job *job, size_t i)
{
    return job->batch && job->slot[i] != SIZE_MAX &&
           cp_pub_batch_state(job->batch, job->slot[i]) == CP_PUB_OK;
}

/* Handed to the connected bus and not refused: Paho sends it (again)
 * until the broker acknowledges it, even after the wait gave up. */
static int job_handed(const push_job *job, size_t i)
{
    return job->batch && job->slot[i] != SIZE_MAX &&
           cp_pub_batch_state(job->batch, job->slot[i]) != CP_PUB_FAILED;
}

/* Accepted: confirmed by the bus, or stored (kept for recovery) and
 * handed to the bus (on its way to the live sessions). A message stored
 * but not handed to the bus (the broker away) is not accepted: its
 * retry with the same messageId publishes it with its stored offset. */
static int job_accepted(const push_job *job, size_t i)
{
    return job_published(job, i) || (job_stored(job, i) && job_handed(job, i));
}

/* [{"to":..,"messageId":..,"offset":..,"epoch":..,"stored":..,"duplicate":..,
 * "online":..}, ...] of the messages whose acceptance is want_ok. */
static void message_list(cp_buf *out, const char *key, const push_job *job, int want_ok)
{
    const push_request *req = &job->req;
    cp_buf_printf(out, "\"%s\":[", key);
    int first = 1;
    for (size_t i = 0; i < job->n; i++) {
        if (job_accepted(job, i) != want_ok)
            continue;
        if (!first)
            cp_buf_putc(out, ',');
        first = 0;
        const char *to = req->send_to_all ? "*" : req->recipients[i];
        const char *mid = job_mid(job, i);
        cp_buf_puts(out, "{\"to\":");
        cp_buf_json_string(out, to, strlen(to));
        cp_buf_puts(out, ",\"messageId\":");
        cp_buf_json_string(out, mid, strlen(mid));
        if (job_stored(job, i)) {
            cp_buf_printf(out, ",\"offset\":%lld,\"epoch\":", (long long)job->appended[i].offset);
            cp_buf_json_string(out, job->appended[i].epoch, strlen(job->appended[i].epoch));
        } else {
            cp_buf_puts(out, ",\"offset\":null");
        }
        cp_buf_printf(out, ",\"stored\":%s,\"duplicate\":%s", job_stored(job, i) ? "true" : "false",
                      job_duplicate(job, i) ? "true" : "false");
        if (job_conflict(job, i))
            cp_buf_puts(out, ",\"conflict\":true");
        if (job->presence_known)
            cp_buf_printf(out, ",\"online\":%s", job->online[i] ? "true" : "false");
        cp_buf_putc(out, '}');
    }
    cp_buf_putc(out, ']');
}

/* ,"offline":[ids without a live session] when presence is known. */
static void offline_list(cp_buf *out, const push_request *req, const unsigned char *online,
                         int known)
{
    if (!known)
        return;
    cp_buf_puts(out, ",\"offline\":[");
    int first = 1;
    for (size_t i = 0; i < req->recipient_count; i++) {
        if (online[i])
            continue;
        if (!first)
            cp_buf_putc(out, ',');
        first = 0;
        cp_buf_json_string(out, req->recipients[i], strlen(req->recipients[i]));
    }
    cp_buf_putc(out, ']');
}


/* What a push request must pass before its body is read: method, key,
 * rate and content type. Returns 0, or the status it answered with. */
static int admit_push(httpapi *api, struct mg_connection *conn, endpoint ep)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (strcmp(ri->request_method, "POST") != 0)
        return send_error(api, conn, ep, 405, "method_not_allowed", "use POST");
    int key = api_key_match(api, mg_get_header(conn, "Authorization"));
    if (key == -1)
        return send_error(api, conn, ep, 401, "unauthorized",
                          "missing or wrong API key: send Authorization: Bearer <key>");
    int wait = key_rate_wait(api, key);
    if (wait) {
        char retry[16];
        snprintf(retry, sizeof retry, "%d", wait);
        atomic_fetch_add(&api->rate_limited, 1);
        static const char body[] = "{\"success\":false,\"code\":\"rate_limited\",\"msg\":"
                                   "\"too many requests for this API key; retry after the "
                                   "Retry-After seconds\",\"data\":null}";
        send_body(conn, 429, "application/json", body, sizeof body - 1, "Retry-After", retry);
        count(api, ep, 429);
        return 429;
    }
    if (!is_json(mg_get_header(conn, "Content-Type")))
        return send_error(api, conn, ep, 415, "unsupported_media_type",
                          "send the body as Content-Type: application/json");
    return 0;
}

/* Ids and the envelope all messages share. */
static int job_prepare(push_job *job)
{
    cp_uuid_dashed(job->generated_rid);
    job->rid = job->req.request_id ? job->req.request_id : job->generated_rid;
    job->n = job->req.send_to_all ? 1 : job->req.recipient_count;
    job->mids = job->req.message_id ? NULL : malloc(job->n * sizeof *job->mids);
    job->slot = malloc(job->n * sizeof *job->slot);
    if ((!job->mids && !job->req.message_id) || !job->slot)
        return -1;
    for (size_t i = 0; job->mids && i < job->n; i++)
        cp_message_id(job->mids[i]);
    cp_envelope *env = &job->env;
    memset(env, 0, sizeof *env);
    env->fields = CP_F_MESSAGE_ID | CP_F_MSG | CP_F_MSG_TYPE | CP_F_REQUEST_ID |
                  (job->req.from ? CP_F_FROM : 0u) | (job->req.send_to_all ? CP_F_BROADCAST : CP_F_TO);
    env->from = job->req.from;
    env->msg_raw = job->req.msg_text;
    env->msg_raw_len = job->req.msg_len;
    env->msg_type = CP_MSG_BUSINESS;
    env->request_id = job->rid;
    cp_envelope_fill_defaults(env, CP_TRIGGER_HTTP, NULL);
    return 0;
}

/* Message i into payload (reset first): as stored (stored 1: without
 * offset and epoch) or as published, with offset (< 1: null) and epoch;
 * its delivery topic into topic. */
static int job_message(const httpapi *api, push_job *job, size_t i, cp_buf *payload,
                       char *topic, size_t topic_cap, int stored, int64_t offset,
                       const char *epoch)
{
    cp_envelope *env = &job->env;
    env->message_id = job_mid(job, i);
    if (job->req.send_to_all) {
        cp_topic_build(topic, topic_cap, api->cfg.prefix, CP_TOPIC_DELIVER_BROADCAST, NULL);
    } else {
        env->to_single = job->req.recipients[i];
        cp_topic_build(topic, topic_cap, api->cfg.prefix, CP_TOPIC_DELIVER_CLIENT,
                       job->req.recipients[i]);
    }
    env->fields &= ~(unsigned)(CP_F_OFFSET | CP_F_EPOCH);
    if (!stored) {
        env->fields |= CP_F_OFFSET;
        env->offset = offset >= 1 ? offset : -1;
        if (offset >= 1 && epoch && *epoch) {
            env->fields |= CP_F_EPOCH;
            env->epoch = epoch;
        }
    }
    cp_buf_reset(payload);
    return cp_envelope_write(payload, env, NULL);
}

/* The largest message of the request as published: the messages differ
 * only in the recipient id (and their offsets), so it is the one to the
 * longest id, with the largest offset and epoch. */
static size_t job_largest_message(const httpapi *api, push_job *job, cp_buf *payload)
{
    size_t longest = 0;
    for (size_t i = 1; i < job->n && !job->req.send_to_all; i++)
        if (strlen(job->req.recipients[i]) > strlen(job->req.recipients[longest]))
            longest = i;
    char topic[CP_TOPIC_MAX];
    if (job_message(api, job, longest, payload, topic, sizeof topic, 0,
                    CP_ENVELOPE_LARGEST_OFFSET, CP_ENVELOPE_LARGEST_EPOCH) != 0)
        return SIZE_MAX;
    return payload->len;
}

static int job_publish_prepare(httpapi *api, push_job *job);
static int job_publish_slots(httpapi *api, push_job *job, cp_buf *payload);
static void job_batch_slots(httpapi *api, push_job *job, cp_buf *payload);

/* What job_append hands the group commit (groupcommit.h), on its stack. */
typedef struct {
    httpapi *api;
    push_job *job;
    cp_buf *payload;         /* the request thread's, idle while it waits */
    const size_t *index;     /* append j is message index[j] */
    const cp_redis_appended *got;
    int publish;             /* publish from the committer unless something conflicted */
} commit_ctx;

/* Runs when Redis answered (on the group commit's thread): takes the
 * offsets and presence, then, when asked and nothing conflicted, publishes
 * every message, so the request thread wakes once, with its messages
 * stored and handed to the bus. Otherwise the request thread goes on
 * itself. */
static void job_committed(redis_work *w)
{
    commit_ctx *c = w->ud;
    push_job *job = c->job;
    if (w->n && w->rc != 0)
        atomic_fetch_add(&c->api->history_failures, 1);
    if (w->m && w->online_rc == 0)
        job->presence_known = 1;
    else if (w->m)
        atomic_fetch_add(&c->api->presence_failures, 1);
    for (size_t j = 0; j < w->n; j++)
        job->appended[c->index[j]] = c->got[j];
    if (!c->publish)
        return;
    for (size_t i = 0; i < job->n; i++)
        if (job->appended[i].conflict)
            return; /* the request thread goes on itself */
    job->published_on_commit = 1;
    /* A pipeline of many messages goes out as one batch (after every
     * request of the pipeline added its own; api_publish_batch). */
    if (c->api->cfg.bus_batch > 0 && w->pipeline_appends >= (size_t)c->api->cfg.bus_batch &&
        !job->req.send_to_all)
        job_batch_slots(c->api, job, c->payload);
    else
        job_publish_slots(c->api, job, c->payload);
}

/* Appends the messages want[] marks (NULL: all) to their streams, into
 * job->appended, and with lookup set also asks which recipients are
 * online (job->online): one group commit (groupcommit.h). With
 * job->publish_on_commit (first appends only) the group commit's thread
 * also publishes them, and this returns once they are acknowledged (or
 * the publish timeout passed) or something conflicted. 0, or -1 when
 * memory ran out. */
static int job_append(httpapi *api, push_job *job, cp_buf *payload, const char *fp,
                      const unsigned char *want, int lookup)
{
    const char **streams = malloc(job->n * sizeof *streams);
    const char **mids = malloc(job->n * sizeof *mids);
    const char **texts = malloc(job->n * sizeof *texts);
    size_t *lens = malloc(job->n * sizeof *lens), *at = malloc(job->n * sizeof *at);
    size_t *index = malloc(job->n * sizeof *index);
    cp_redis_appended *got = calloc(job->n, sizeof *got);
    int rc = -1;
    if (!streams || !mids || !texts || !lens || !at || !index || !got)
        goto done;
    /* Every stored envelope goes into one buffer; pointers are taken after
     * the last append (the buffer may move while it grows). */
    cp_buf all;
    cp_buf_init(&all);
    char topic[CP_TOPIC_MAX];
    size_t k = 0, failed = 0;
    for (size_t i = 0; i < job->n; i++) {
        if (want && !want[i])
            continue;
        if (job_message(api, job, i, payload, topic, sizeof topic, 1, 0, NULL) != 0) {
            failed = 1;
            break;
        }
        at[k] = all.len;
        lens[k] = payload->len;
        cp_buf_append(&all, payload->data, payload->len);
        streams[k] = job->req.send_to_all ? CP_REDIS_BROADCAST_STREAM : job->req.recipients[i];
        mids[k] = job_mid(job, i);
        index[k++] = i;
    }
    if (!all.failed && !failed) {
        for (size_t j = 0; j < k; j++)
            texts[j] = all.data + at[j];
        commit_ctx c = {.api = api,
                        .job = job,
                        .payload = payload,
                        .index = index,
                        .got = got,
                        .publish = !want && job->publish_on_commit};
        redis_work w = {.n = k,
                        .streams = streams,
                        .message_ids = mids,
                        .fingerprint = fp,
                        .envelopes = texts,
                        .lens = lens,
                        .out = got,
                        .then = job_committed,
                        .ud = &c};
        if (lookup && job->online) {
            w.m = job->n;
            w.ids = job->req.recipients;
            w.online = job->online;
        }
        group_commit_ticket t;
        /* One sleep: until Redis answered and the committer handed the
         * messages to the bus. Stored ones are accepted then; only the
         * others wait again, for the broker (handle_push). */
        group_commit_begin(&w, &t);
        group_commit_end(&t);
        rc = 0;
    }
    cp_buf_free(&all);
done:
    free(streams);
    free(mids);
    free(texts);
    free(lens);
    free(at);
    free(index);
    free(got);
    return rc;
}

/* Appends every message to its stream in one Redis pipeline: offsets and
 * epochs for what is published next. Without Redis (down, or no --redis)
 * nothing is stored and the messages go out with offset null. A messageId
 * another message (another sender or payload) used on a recipient's
 * stream is a conflict: that message becomes a new one under a derived id
 * (cp_seq_conflict_id), appended in a second pipeline, and its answer says
 * "conflict":true. Returns -1 only when memory ran out. */
static int job_store(httpapi *api, push_job *job, cp_buf *payload)
{
    job->appended = calloc(job->n, sizeof *job->appended);
    if (!job->appended)
        return -1;
    if (!api->history_enabled)
        return 0;
    job->history = 1;
    /* Who has no live session rides along; the messages are published
     * either way (a client may connect any moment). */
    int lookup = api->presence_enabled && !job->req.send_to_all && job->n > 0;
    if (lookup && !(job->online = malloc(job->n)))
        atomic_fetch_add(&api->presence_failures, 1);
    char fp[CP_SEQ_FINGERPRINT_LEN + 1];
    cp_seq_fingerprint(job->req.msg, job->env.from, payload, fp);
    job->publish_on_commit = job->connected && job_publish_prepare(api, job) == 0;
    if (job->connected && !job->publish_on_commit)
        return -1;
    if (job_append(api, job, payload, fp, NULL, lookup) != 0)
        return -1;
    if (job->published_on_commit)
        return 0;
    unsigned char *want = NULL;
    for (size_t i = 0; i < job->n; i++) {
        if (!job->appended[i].conflict)
            continue;
        if ((!job->alt && !(job->alt = calloc(job->n, sizeof *job->alt))) ||
            (!want && !(want = calloc(job->n, 1)))) {
            free(want);
            return -1;
        }
        cp_seq_conflict_id(job_mid(job, i), fp, job->alt[i], sizeof job->alt[i]);
        want[i] = 1;
        atomic_fetch_add(&api->message_id_conflicts, 1);
        log_warn("push %s: messageId %s to %s was used before by another message: this one is %s",
                 job->rid, job->req.message_id ? job->req.message_id : job->mids[i],
                 job->req.send_to_all ? "*" : job->req.recipients[i], job->alt[i]);
    }
    if (!want)
        return 0;
    int rc = job_append(api, job, payload, fp, want, 0);
    for (size_t i = 0; rc == 0 && i < job->n; i++)
        if (want[i] && job->appended[i].conflict) /* the derived id is taken too */
            memset(&job->appended[i], 0, sizeof job->appended[i]);
    free(want);
    return rc;
}

/* On the thread that settled a request's last publish, maybe after its
 * answer: the broker's confirmations and how long they took. */
static void job_settled(cp_pub_batch *b)
{
    httpapi *api = b->ud;
    atomic_fetch_add(&api->messages_published, b->count - (size_t)atomic_load(&b->failed));
    cp_histogram_observe_us(&api->publish_latency, (uint64_t)(cp_mono_us() - b->created_us));
}

/* Every message gets its publish slot in a new batch. 0, or -1 when
 * memory ran out. */
static int job_publish_prepare(httpapi *api, push_job *job)
{
    job->published = 0;
    for (size_t i = 0; i < job->n; i++)
        job->slot[i] = job->published++;
    if (job->published == 0)
        return 0;
    job->batch = cp_pub_batch_new(job->published, job_settled, api);
    return job->batch ? 0 : -1;
}

/* Every message is stored: once handed to the bus it is accepted (a
 * session that misses it live recovers it), so the request need not wait
 * for the broker's acknowledgements. */
static int job_all_stored(const push_job *job)
{
    for (size_t i = 0; i < job->n; i++)
        if (!job_stored(job, i))
            return 0;
    return job->n > 0;
}

/* Publishes every message at once (QoS 1) on its delivery topic, with its
 * offset; acknowledgements come later. A publisher's retry of a message
 * already stored (duplicate) is published again with its stored offset:
 * its first publish may never have happened (the bus was away); a bridge
 * that had it drops the repeat by offset. */
static int job_publish_slots(httpapi *api, push_job *job, cp_buf *payload)
{
    if (!job->batch)
        return 0;
    char topic[CP_TOPIC_MAX];
    for (size_t i = 0; i < job->n; i++) {
        if (job->slot[i] == SIZE_MAX)
            continue;
        const cp_redis_appended *a = &job->appended[i];
        if (job_message(api, job, i, payload, topic, sizeof topic, 0, a->offset, a->epoch) != 0) {
            cp_pub_batch_abandon(job->batch, job->slot[i]);
            break;
        }
        cp_pub_batch_publish(job->batch, job->slot[i], api->bus, topic, payload->data,
                             payload->len);
    }
    return 0;
}

/* The group commit's delivery batch (common/dbatch.h): filled and
 * published on its thread only. */
static cp_dbatch commit_batch;

void api_publish_batch(void *ud)
{
    httpapi *api = ud;
    if (commit_batch.payload.len == 0)
        return;
    char topic[CP_TOPIC_MAX];
    cp_topic_build(topic, sizeof topic, api->cfg.prefix, CP_TOPIC_DELIVER_BATCH, NULL);
    size_t items = commit_batch.items;
    int rc = cp_dbatch_publish(&commit_batch, api->bus, topic);
    if (rc != 0) {
        log_warn("publishing a delivery batch of %zu messages: %s", items, cp_bus_strerror(rc));
        cp_dbatch_fail(&commit_batch, rc);
        return;
    }
    atomic_fetch_add(&api->bus_batches, 1);
    atomic_fetch_add(&api->bus_batched_messages, items);
}

void api_batch_free(void) { cp_dbatch_free(&commit_batch); }

/* As job_publish_slots, into the pipeline's batch: every message of the
 * job is settled by the batch's one publish. */
static void job_batch_slots(httpapi *api, push_job *job, cp_buf *payload)
{
    if (!job->batch)
        return;
    char topic[CP_TOPIC_MAX];
    for (size_t i = 0; i < job->n; i++) {
        if (job->slot[i] == SIZE_MAX)
            continue;
        const cp_redis_appended *a = &job->appended[i];
        if (job_message(api, job, i, payload, topic, sizeof topic, 0, a->offset, a->epoch) != 0 ||
            cp_dbatch_add(&commit_batch, job->req.recipients[i], payload->data, payload->len,
                          cp_pub_batch_slot_op(job->batch, job->slot[i])) != 0) {
            cp_pub_batch_abandon(job->batch, job->slot[i]);
            break;
        }
        if (commit_batch.payload.len >= CP_DBATCH_MAX_BYTES)
            api_publish_batch(api);
    }
}

static int job_publish(httpapi *api, push_job *job, cp_buf *payload)
{
    if (!job->batch && job_publish_prepare(api, job) != 0)
        return -1;
    return job_publish_slots(api, job, payload);
}

/* The answer when `accepted` of the request's messages were stored or
 * handed to the bus; returns its status. */
static int job_answer(const push_job *job, endpoint ep, size_t accepted, cp_buf *out)
{
    const push_request *req = &job->req;
    if (accepted == job->n) {
        cp_buf_puts(out, "{\"success\":true,\"code\":\"0\",\"msg\":\"success\",\"data\":{"
                         "\"requestId\":");
        cp_buf_json_string(out, job->rid, strlen(job->rid));
        cp_buf_putc(out, ',');
        message_list(out, "messages", job, 1);
        offline_list(out, req, job->online, job->presence_known);
        cp_buf_puts(out, "}}");
        return 200;
    }
    int compat = ep != EP_PUSH;
    const char *code = !job->connected ? "bus_unavailable" : "publish_unconfirmed";
    char text[200];
    if (!job->connected)
        snprintf(text, sizeof text,
                 "the message bus is unreachable: %zu of %zu messages were not published "
                 "(those with an offset are stored); retry with the same messageId",
                 job->n - accepted, job->n);
    else
        snprintf(text, sizeof text,
                 "%zu of %zu messages were not handed to the bus: retry with the same "
                 "messageId",
                 job->n - accepted, job->n);
    cp_buf_printf(out, "{\"success\":false,\"code\":\"%s\",\"msg\":", compat ? "-1" : code);
    cp_buf_json_string(out, text, strlen(text));
    if (compat)
        cp_buf_printf(out, ",\"error\":\"%s\"", code);
    cp_buf_puts(out, ",\"data\":{\"requestId\":");
    cp_buf_json_string(out, job->rid, strlen(job->rid));
    cp_buf_putc(out, ',');
    message_list(out, "confirmed", job, 1);
    cp_buf_putc(out, ',');
    message_list(out, "unconfirmed", job, 0);
    offline_list(out, req, job->online, job->presence_known);
    cp_buf_puts(out, "}}");
    log_warn("push %s: %zu of %zu messages not on the bus (%s)", job->rid,
             job->n - accepted, job->n, code);
    return 503;
}

static void job_free(push_job *job)
{
    free(job->online);
    if (job->batch)
        cp_pub_batch_release(job->batch);
    free(job->mids);
    free(job->alt);
    free(job->slot);
    free(job->appended);
    push_request_free(&job->req);
}

static int handle_push(httpapi *api, struct mg_connection *conn, endpoint ep)
{
    int status = admit_push(api, conn, ep);
    if (status)
        return status;
    cp_buf body;
    cp_buf_init(&body);
    if ((status = read_body(api, conn, ep, &body)) != 0) {
        cp_buf_free(&body);
        return status;
    }
    push_limits limits = {.max_recipients = (size_t)api->cfg.max_recipients};
    push_job job;
    memset(&job, 0, sizeof job);
    push_error err;
    int parsed = push_request_parse(body.data ? body.data : "", body.len, &limits, &job.req, &err);
    cp_buf_free(&body);
    if (parsed != 0)
        return send_error(api, conn, ep, err.status, err.code, err.msg);

    cp_buf payload, out;
    cp_buf_init(&payload);
    cp_buf_init(&out);
    if (job_prepare(&job) != 0) {
        status = send_error(api, conn, ep, 500, "internal_error", "out of memory");
        goto done;
    }
    /* One size holds from the API to the socket: what no bridge would
     * deliver is refused here, before anything is published. */
    size_t largest = job_largest_message(api, &job, &payload);
    if (largest > (size_t)api->cfg.max_message_bytes) {
        char text[160];
        snprintf(text, sizeof text,
                 "a message of this push is %zu bytes as an envelope; the limit is %ld "
                 "(--max-message-bytes)",
                 largest, api->cfg.max_message_bytes);
        status = send_error(api, conn, ep, 413, "message_too_large", text);
        goto done;
    }
    job.connected = cp_bus_is_connected(api->bus);
    int64_t t0us = cp_mono_us();
    if (job_store(api, &job, &payload) != 0 ||
        (job.connected && !job.published_on_commit && job_publish(api, &job, &payload) != 0)) {
        status = send_error(api, conn, ep, 500, "internal_error", "out of memory");
        goto done;
    }
    if (job.batch) {
        /* Stored messages are accepted once handed to the bus; the others
         * wait for the broker's acknowledgement. */
        int64_t waited_ms = (cp_mono_us() - t0us) / 1000;
        int wait_ms = job_all_stored(&job) ? 0 : (int)(api->cfg.publish_timeout_ms - waited_ms);
        cp_pub_batch_wait(job.batch, wait_ms);
    }
    size_t accepted = 0;
    for (size_t i = 0; i < job.n; i++)
        accepted += job_accepted(&job, i);
    atomic_fetch_add(&api->messages_unconfirmed, job.n - accepted);
    status = job_answer(&job, ep, accepted, &out);
    if (out.failed) {
        status = send_error(api, conn, ep, 500, "internal_error", "out of memory");
        goto done;
    }
    send_body(conn, status, "application/json", out.data, out.len, NULL, NULL);
    count(api, ep, status);
done:
    cp_buf_free(&payload);
    cp_buf_free(&out);
    job_free(&job);
    return status;
}

static int on_push(struct mg_connection *conn, void *cbdata)
{
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    return handle_push(api, conn, (endpoint)(intptr_t)cbdata);
}

static int only_get(httpapi *api, struct mg_connection *conn, endpoint ep)
{
    const char *m = mg_get_request_info(conn)->request_method;
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
        return 0;
    static const char body[] =
        "{\"success\":false,\"code\":\"method_not_allowed\",\"msg\":\"use GET\",\"data\":null}";
    send_body(conn, 405, "application/json", body, sizeof body - 1, "Allow", "GET");
    count(api, ep, 405);
    return 405;
}

/* A GET answered with a fixed JSON body (the probes). */
static int fixed_json(struct mg_connection *conn, endpoint ep, const char *body)
{
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (only_get(api, conn, ep))
        return 405;
    send_body(conn, 200, "application/json", body, strlen(body), NULL, NULL);
    count(api, ep, 200);
    return 200;
}

static int on_healthz(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    return fixed_json(conn, EP_HEALTHZ, "{\"status\":\"ok\"}");
}

/* The process and its server are alive: a worker took the connection and
 * answers. Never depends on the broker or Redis (a liveness probe that did
 * would restart every instance during a broker outage). */
static int on_livez(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    return fixed_json(conn, EP_LIVEZ, "{\"status\":\"alive\"}");
}

/* Ready = pushes can be served now: the broker is connected. Redis only
 * adds the offline list and /api/v1/clients, so it is reported, not
 * required. */
static int on_readyz(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (only_get(api, conn, EP_READYZ))
        return 405;
    int mqtt = cp_bus_is_connected(api->bus);
    int redis = api->presence_enabled ? presence_ping(&api->presence) : 1;
    int up = mqtt;
    char body[128];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"mqtt\":%s,\"redis\":%s}",
                     up ? "ready" : "unavailable", mqtt ? "true" : "false",
                     !api->presence_enabled ? "null" : redis ? "true" : "false");
    int status = up ? 200 : 503;
    send_body(conn, status, "application/json", body, (size_t)n, NULL, NULL);
    count(api, EP_READYZ, status);
    return status;
}

/* The demo console asks which WebSocket URLs it may offer. */
static int on_config(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (only_get(api, conn, EP_CONFIG))
        return 405;
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "{\"bridges\":[");
    const char *item;
    size_t len;
    int first = 1;
    for (const char *p = api->cfg.console_bridges; cp_comma_next(&p, &item, &len);) {
        if (!first)
            cp_buf_putc(&b, ',');
        first = 0;
        cp_buf_json_string(&b, item, len);
    }
    cp_buf_puts(&b, "],\"balancer\":");
    if (api->cfg.console_balancer && *api->cfg.console_balancer)
        cp_buf_json_string(&b, api->cfg.console_balancer, strlen(api->cfg.console_balancer));
    else
        cp_buf_puts(&b, "null");
    pthread_rwlock_rdlock(&api->keys_lock); /* SIGHUP may be replacing the keys */
    int auth = api->key_count > 0;
    pthread_rwlock_unlock(&api->keys_lock);
    cp_buf_printf(&b, ",\"authRequired\":%s,\"devTokens\":%s}", auth ? "true" : "false",
                  *api->cfg.dev_token_secret ? "true" : "false");
    send_body(conn, 200, "application/json", b.data, b.len, NULL, NULL);
    cp_buf_free(&b);
    count(api, EP_CONFIG, 200);
    return 200;
}

static int on_metrics(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (only_get(api, conn, EP_METRICS))
        return 405;
    count(api, EP_METRICS, 200);
    cp_buf b;
    cp_buf_init(&b);
    cp_metric_family(&b, "cloudpush_httpapi_requests_total", "counter",
                     "HTTP requests by endpoint and status.");
    char labels[128];
    for (int e = 0; e < EP__COUNT; e++) {
        for (int s = 0; s < STATUS_SLOTS; s++) {
            uint64_t v = atomic_load(&api->requests[e][s]);
            if (!v)
                continue;
            if (s < STATUS_SLOTS - 1)
                snprintf(labels, sizeof labels, "endpoint=\"%s\",status=\"%d\"",
                         endpoint_names[e], status_codes[s]);
            else
                snprintf(labels, sizeof labels, "endpoint=\"%s\",status=\"other\"",
                         endpoint_names[e]);
            cp_metric_sample(&b, "cloudpush_httpapi_requests_total", labels, (double)v);
        }
    }
    cp_metric_simple(&b, "cloudpush_httpapi_messages_published_total", "counter",
                     "Messages the broker confirmed (QoS 1).",
                     (double)atomic_load(&api->messages_published));
    cp_metric_simple(&b, "cloudpush_httpapi_history_failures_total", "counter",
                     "Push requests whose messages Redis did not store (published with offset "
                     "null).",
                     (double)atomic_load(&api->history_failures));
    uint64_t pipelines, appends, lookups;
    group_commit_stats(&pipelines, &appends, &lookups);
    cp_metric_simple(&b, "cloudpush_httpapi_redis_pipelines_total", "counter",
                     "Redis pipelines of the push requests' appends and presence lookups (group "
                     "commit: many requests share one; (appends + lookups) / pipelines is the "
                     "mean batch).",
                     (double)pipelines);
    cp_metric_simple(&b, "cloudpush_httpapi_history_appends_total", "counter",
                     "History appends sent to Redis (those of a lost pipeline's retry again).",
                     (double)appends);
    cp_metric_simple(&b, "cloudpush_httpapi_presence_lookups_total", "counter",
                     "Recipients looked up in Redis for the answer's online/offline.",
                     (double)lookups);
    cp_metric_simple(&b, "cloudpush_httpapi_bus_batches_total", "counter",
                     "Delivery batches published on <prefix>/d/batch (--bus-batch).",
                     (double)atomic_load(&api->bus_batches));
    cp_metric_simple(&b, "cloudpush_httpapi_bus_batched_messages_total", "counter",
                     "Messages published inside delivery batches rather than one by one.",
                     (double)atomic_load(&api->bus_batched_messages));
    cp_metric_simple(&b, "cloudpush_httpapi_message_id_conflicts_total", "counter",
                     "Messages whose messageId another message (another sender or payload) used "
                     "on the recipient's stream before: stored under a derived id "
                     "(<id>~<fingerprint>, \"conflict\":true in the answer).",
                     (double)atomic_load(&api->message_id_conflicts));
    cp_metric_simple(&b, "cloudpush_httpapi_messages_unconfirmed_total", "counter",
                     "Messages reported as not confirmed to the caller (503).",
                     (double)atomic_load(&api->messages_unconfirmed));
    cp_histogram_render(&b, "cloudpush_httpapi_publish_seconds",
                        "Time from the first publish of a request to the broker's last "
                        "acknowledgement.",
                        &api->publish_latency);
    cp_metric_simple(&b, "cloudpush_httpapi_rate_limited_total", "counter",
                     "Push requests refused by the per-key rate limit (429).",
                     (double)atomic_load(&api->rate_limited));
    cp_metric_family(&b, "cloudpush_httpapi_refused_total", "counter",
                     "Requests refused before any handler or while reading the body, by "
                     "reason.");
    for (int r = 0; r < REFUSED__COUNT; r++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", refusal_names[r]);
        cp_metric_sample(&b, "cloudpush_httpapi_refused_total", labels,
                         (double)atomic_load(&api->refused[r]));
    }
    cp_metric_simple(&b, "cloudpush_httpapi_presence_failures_total", "counter",
                     "Presence lookups Redis did not answer.",
                     (double)atomic_load(&api->presence_failures));
    cp_metric_simple(&b, "cloudpush_httpapi_mqtt_connected", "gauge",
                     "1 while the MQTT broker connection is up.", cp_bus_is_connected(api->bus));
    cp_bus_stats st;
    cp_bus_get_stats(api->bus, &st);
    cp_metric_simple(&b, "cloudpush_httpapi_mqtt_connects_total", "counter",
                     "Successful MQTT (re)connections.", (double)st.connects);
    cp_metric_simple(&b, "cloudpush_httpapi_uptime_seconds", "gauge", "Seconds since start.",
                     (double)(cp_mono_ms() - api->started_ms) / 1000.0);
    cp_metrics_process(&b, "httpapi");
    send_body(conn, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL, NULL);
    cp_buf_free(&b);
    return 200;
}

/* GET /api/v1/clients/{channelId}: online flag and live sessions. */
static int on_client(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (only_get(api, conn, EP_CLIENTS))
        return 405;
    /* Who is online is the publishers' business: same key as a push. */
    if (api_key_match(api, mg_get_header(conn, "Authorization")) == -1)
        return send_error(api, conn, EP_CLIENTS, 401, "unauthorized",
                          "missing or wrong API key: send Authorization: Bearer <key>");
    const char *uri = mg_get_request_info(conn)->local_uri;
    static const char base[] = "/api/v1/clients/";
    const char *id = strncmp(uri, base, sizeof base - 1) == 0 ? uri + sizeof base - 1 : "";
    if (!cp_channel_id_valid(id, strlen(id)))
        return send_error(api, conn, EP_CLIENTS, 400, "invalid_channel_id",
                          "the path must be /api/v1/clients/<channelId>, a channel id of 1-128 "
                          "characters of [A-Za-z0-9._:@-]");
    if (!api->presence_enabled)
        return send_error(api, conn, EP_CLIENTS, 501, "presence_disabled",
                          "presence needs the bridge registry: start the API with --redis");
    cp_buf b;
    cp_buf_init(&b);
    int status;
    if (presence_client_json(&api->presence, id, &b) != 0 || b.failed) {
        atomic_fetch_add(&api->presence_failures, 1);
        status = send_error(api, conn, EP_CLIENTS, 503, "redis_unavailable",
                            "the registry (Redis) did not answer; retry shortly");
    } else {
        send_body(conn, 200, "application/json", b.data, b.len, NULL, NULL);
        count(api, EP_CLIENTS, 200);
        status = 200;
    }
    cp_buf_free(&b);
    return status;
}

/* GET /api/v1/openapi.json: the API described (httpapi/static/openapi.json,
 * read at start; tests/integration/test_openapi.py holds it to the code). */
static int on_openapi(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (only_get(api, conn, EP_OPENAPI))
        return 405;
    if (!api->openapi)
        return send_error(api, conn, EP_OPENAPI, 404, "not_found",
                          "openapi.json was not found in the --static directory");
    send_body(conn, 200, "application/json", api->openapi, api->openapi_len, NULL, NULL);
    count(api, EP_OPENAPI, 200);
    return 200;
}

/* POST /api/v1/dev/token?channelId=ID (development mode only). */
static int on_dev_token(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    httpapi *api = mg_get_user_data(mg_get_context(conn));
    if (!*api->cfg.dev_token_secret)
        return send_error(api, conn, EP_DEV_TOKEN, 404, "dev_tokens_disabled",
                          "token minting is only on with --dev-token-secret (development)");
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (strcmp(ri->request_method, "POST") != 0)
        return send_error(api, conn, EP_DEV_TOKEN, 405, "method_not_allowed", "use POST");
    char id[CP_CHANNEL_ID_MAX + 1];
    int n = ri->query_string ? mg_get_var(ri->query_string, strlen(ri->query_string), "channelId",
                                          id, sizeof id)
                             : -1;
    if (n <= 0 || !cp_channel_id_valid(id, (size_t)n))
        return send_error(api, conn, EP_DEV_TOKEN, 400, "invalid_channel_id",
                          "channelId must be 1-128 characters of [A-Za-z0-9._:@-]");
    int64_t now = cp_now_ms() / 1000, exp = now + api->cfg.dev_token_ttl_s;
    char token[512], body[700];
    int len = cp_jwt_sign_hs256(api->cfg.dev_token_secret, id, exp, now, token, sizeof token);
    if (len < 0)
        return send_error(api, conn, EP_DEV_TOKEN, 500, "internal_error", "cannot sign");
    int blen = snprintf(body, sizeof body, "{\"token\":\"%s\",\"channelId\":\"%s\",\"exp\":%lld}",
                        token, id, (long long)exp);
    send_body(conn, 200, "application/json", body, (size_t)blen, NULL, NULL);
    count(api, EP_DEV_TOKEN, 200);
    return 200;
}

/* ---- before any handler: framing, size and the per-address cap ---------- */

void api_connection_opened(httpapi *api, const struct mg_connection *conn)
{
    (void)api;
    (void)conn;
    /* The peer's address is not known to CivetWeb yet: the connection is
     * counted at its first request (api_begin_request). */
    memset(&this_conn, 0, sizeof this_conn);
}

void api_connection_closed(httpapi *api, const struct mg_connection *conn)
{
    (void)conn;
    if (this_conn.counted)
        addr_limit_close(api->conns, this_conn.address);
    this_conn.counted = 0;
}

/* Two Content-Length headers that disagree, or one next to a
 * Transfer-Encoding, make the body's end ambiguous (request smuggling
 * through a proxy that reads it the other way); CivetWeb uses the first. */
static const char *framing_problem(const struct mg_request_info *ri)
{
    const char *length = NULL;
    int chunked = 0;
    for (int i = 0; i < ri->num_headers; i++) {
        const char *name = ri->http_headers[i].name, *value = ri->http_headers[i].value;
        if (strcasecmp(name, "Transfer-Encoding") == 0) {
            chunked = 1;
        } else if (strcasecmp(name, "Content-Length") == 0) {
            if (length && strcmp(length, value) != 0)
                return "conflicting Content-Length headers";
            length = value;
        }
    }
    if (length && chunked)
        return "both Content-Length and Transfer-Encoding";
    return NULL;
}

/* Probes must answer while an address is over its cap. */
static int is_probe(const char *uri)
{
    return strcmp(uri, "/healthz") == 0 || strcmp(uri, "/livez") == 0 ||
           strcmp(uri, "/readyz") == 0 || strcmp(uri, "/metrics") == 0;
}

static int refuse(httpapi *api, struct mg_connection *conn, refusal why, int status,
                  const char *code, const char *msg)
{
    atomic_fetch_add(&api->refused[why], 1);
    this_conn.close = 1; /* a refused client does not keep its worker */
    send_error_body(conn, EP__COUNT, status, code, msg);
    return status;
}

int api_begin_request(httpapi *api, struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    this_conn.body_read = 0;
    this_conn.close = 0;
    if (api->conns && !this_conn.counted) {
        snprintf(this_conn.address, sizeof this_conn.address, "%s", ri->remote_addr);
        addr_limit_open(api->conns, this_conn.address);
        this_conn.counted = 1;
    }
    if (!atomic_load(&api->routes_ready)) {
        char body[96];
        int n = snprintf(body, sizeof body, "{\"status\":\"starting\",\"mqtt\":%s,\"redis\":null}",
                         cp_bus_is_connected(api->bus) ? "true" : "false");
        this_conn.close = 1;
        send_body(conn, 503, "application/json", body, (size_t)n, NULL, NULL);
        return 503;
    }
    const char *problem = framing_problem(ri);
    if (problem)
        return refuse(api, conn, REFUSED_FRAMING, 400, "invalid_request", problem);
    /* No handler reads a body larger than this: say so at once rather
     * than after reading (or CivetWeb discarding) what was announced. */
    if (ri->content_length > (long long)api->cfg.max_body_bytes)
        return refuse(api, conn, REFUSED_TOO_LARGE, 413, "body_too_large",
                      "the body is larger than allowed");
    if (api->conns && !is_probe(ri->local_uri) &&
        addr_limit_count(api->conns, this_conn.address) > (unsigned)api->cfg.max_connections_per_ip)
        return refuse(api, conn, REFUSED_ADDRESS_LIMIT, 429, "too_many_connections_from_address",
                      "this address holds more connections than allowed; reuse fewer "
                      "connections");
    return 0;
}

/* Says yes to every request of the routes below: they check their own
 * credentials. Without a handler CivetWeb looks for a .htpasswd file on
 * each request (a failing stat, one system call per push). */
static int routes_authorize(struct mg_connection *conn, void *cbdata)
{
    (void)conn;
    (void)cbdata;
    return 1;
}

void api_register(httpapi *api, struct mg_context *ctx)
{
    static const struct {
        const char *uri;
        mg_request_handler handler;
        intptr_t data;
    } routes[] = {
        {"/api/v1/push$", on_push, EP_PUSH},
        {"/message/send$", on_push, EP_MESSAGE_SEND},
        {"/portal/message/send$", on_push, EP_PORTAL_MESSAGE_SEND},
        {"/healthz$", on_healthz, 0},
        {"/livez$", on_livez, 0},
        {"/readyz$", on_readyz, 0},
        {"/metrics$", on_metrics, 0},
        {"/api/v1/config$", on_config, 0},
        {"/api/v1/clients/", on_client, 0},
        {"/api/v1/dev/token$", on_dev_token, 0},
        {"/api/v1/openapi.json$", on_openapi, 0},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        mg_set_request_handler(ctx, routes[i].uri, routes[i].handler, (void *)routes[i].data);
        mg_set_auth_handler(ctx, routes[i].uri, routes_authorize, NULL);
    }
    atomic_store(&api->routes_ready, 1);
}
