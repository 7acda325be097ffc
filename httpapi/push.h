/* The push request body: parsing and validation, with no I/O so it can be
 * unit tested and fuzzed on its own.
 *
 * {"to":["id1","id2"],"msg":{...},"sendToAll":false,"requestId":"optional",
 *  "from":"optional","messageId":"optional","delay":0} */
#ifndef HTTPAPI_PUSH_H
#define HTTPAPI_PUSH_H

#include <stddef.h>

#include <cjson/cJSON.h>

typedef struct {
    size_t max_recipients;
} push_limits;

typedef struct {
    cJSON *root;               /* owns everything below */
    const cJSON *msg;          /* the payload object */
    char *msg_text;            /* ... as its sender wrote it (malloc'd, NUL-terminated) */
    size_t msg_len;
    int send_to_all;
    const char **recipients;   /* distinct ids, in request order (malloc'd) */
    size_t recipient_count;
    const char *request_id;    /* NULL: generate one */
    const char *from;          /* NULL: "system" */
    const char *message_id;    /* the publisher's, for every recipient (idempotent retries);
                                  NULL: one generated per recipient */
} push_request;

typedef struct {
    int status;       /* HTTP status */
    const char *code; /* stable machine-readable code */
    char msg[192];    /* human-readable */
} push_error;

/* Returns 0 and fills req (free with push_request_free), or -1 and fills
 * err. */
int push_request_parse(const char *body, size_t len, const push_limits *limits,
                       push_request *req, push_error *err);
void push_request_free(push_request *req);

#endif
