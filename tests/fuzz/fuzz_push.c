/* libFuzzer target for the HTTP push request parser (httpapi/push.c).
 *
 * push_request_parse runs with max_recipients = 100 on arbitrary bytes.
 * When it accepts the body:
 *   1. msg is a JSON object (the "msg" member of the parsed root), and the
 *      text kept for it (msg_text) parses to the same value;
 *   2. with sendToAll there are no recipients; otherwise there is at least
 *      one, at most 100 and at most as many as "to" has elements;
 *   3. every recipient passes cp_channel_id_valid and is distinct from all
 *      the others;
 *   4. request_id / from are NULL or 1..128 bytes.
 * When it refuses it: the status is 400 or 500, the code and message are not
 * empty and the request is left zeroed.
 * Any violation aborts, so libFuzzer saves the input as a crash artifact.
 * The request is always freed (ASan reports leaks).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "json_same.h"
#include "ids.h"
#include "push.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RECIPIENTS 100

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond))                                                                              \
            check_failed(#cond, __LINE__);                                                        \
    } while (0)

static void check_failed(const char *what, int line)
{
    fprintf(stderr, "fuzz_push.c:%d: check failed: %s\n", line, what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int optional_id_ok(const char *s)
{
    if (!s)
        return 1;
    size_t n = strlen(s);
    return n >= 1 && n <= CP_ENVELOPE_ID_MAX;
}

static void check_accepted(const push_request *req)
{
    CHECK(req->root != NULL);
    CHECK(cJSON_IsObject(req->root));
    CHECK(req->msg != NULL);
    CHECK(cJSON_IsObject(req->msg));
    CHECK(req->msg == cJSON_GetObjectItemCaseSensitive(req->root, "msg"));
    /* the text kept for msg (as written, or printed) is msg */
    CHECK(req->msg_text != NULL && strlen(req->msg_text) == req->msg_len);
    cJSON *again = cJSON_ParseWithLength(req->msg_text, req->msg_len);
    CHECK(again != NULL && json_same(again, req->msg));
    cJSON_Delete(again);
    CHECK(optional_id_ok(req->request_id));
    CHECK(optional_id_ok(req->from));

    if (req->send_to_all) {
        CHECK(req->recipients == NULL);
        CHECK(req->recipient_count == 0);
        return;
    }

    const cJSON *to = cJSON_GetObjectItemCaseSensitive(req->root, "to");
    CHECK(cJSON_IsArray(to));
    size_t n_to = (size_t)cJSON_GetArraySize(to);
    CHECK(req->recipients != NULL);
    CHECK(req->recipient_count >= 1);
    CHECK(req->recipient_count <= MAX_RECIPIENTS);
    CHECK(req->recipient_count <= n_to);
    for (size_t i = 0; i < req->recipient_count; i++) {
        const char *id = req->recipients[i];
        CHECK(id != NULL);
        CHECK(cp_channel_id_valid(id, strlen(id)));
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(req->recipients[j], id) != 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const push_limits limits = {.max_recipients = MAX_RECIPIENTS};
    push_request req;
    push_error err;
    memset(&req, 0xAB, sizeof req);
    memset(&err, 0, sizeof err);

    int rc = push_request_parse((const char *)data, size, &limits, &req, &err);
    if (rc == 0) {
        check_accepted(&req);
    } else {
        CHECK(rc == -1);
        CHECK(err.status == 400 || err.status == 500);
        CHECK(err.code != NULL && err.code[0] != '\0');
        CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL && err.msg[0] != '\0');
        CHECK(req.root == NULL && req.msg == NULL && req.recipients == NULL);
        CHECK(req.recipient_count == 0 && req.request_id == NULL && req.from == NULL);
    }
    push_request_free(&req);
    return 0;
}
