/* The JSON envelope exchanged with clients and carried on the bus.
 *
 * Keys, in the order they are written (alphabetical, as the original's
 * fastjson output): activeTime, bepoch, boffset, broadcast, epoch, from,
 * messageId, msg, msgType, offset, recovered, requestId, resultMsg,
 * sessionId, to, trigger. Absent fields are omitted; the one null written is
 * "offset":null (a message that could not be stored, see protocol.md). */
#ifndef CP_ENVELOPE_H
#define CP_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"

typedef enum {
    CP_MSG_ERROR = -1,
    CP_MSG_CONNECTION = 0,
    CP_MSG_BUSINESS = 1,
    CP_MSG_BUSINESS_ACK = 2,
    CP_MSG_HEARTBEAT = 3,
    CP_MSG_HEARTBEAT_ACK = 4,
    CP_MSG_RECONNECT = 5, /* the bridge is draining: reconnect (with since/epoch) */
} cp_msg_type;
#define CP_MSG__LAST CP_MSG_RECONNECT
/* Number of msgTypes (ERROR .. RECONNECT), for tables by msgType + 1. */
#define CP_MSG__COUNT (CP_MSG__LAST - CP_MSG_ERROR + 1)

typedef enum {
    CP_TRIGGER_HTTP = 1,
    CP_TRIGGER_WEBSOCKET = 2,
    CP_TRIGGER_MQTT = 3,
} cp_trigger;

/* Presence bits for cp_envelope.fields. */
enum {
    CP_F_ACTIVE_TIME = 1u << 0,
    CP_F_FROM = 1u << 1,
    CP_F_MESSAGE_ID = 1u << 2,
    CP_F_MSG = 1u << 3,
    CP_F_MSG_TYPE = 1u << 4,
    CP_F_REQUEST_ID = 1u << 5,
    CP_F_RESULT_MSG = 1u << 6,
    CP_F_SESSION_ID = 1u << 7,
    CP_F_TO = 1u << 8,
    CP_F_TRIGGER = 1u << 9,
    CP_F_OFFSET = 1u << 10,    /* offset; offset < 0 is written as null */
    CP_F_EPOCH = 1u << 11,
    CP_F_BROADCAST = 1u << 12, /* "broadcast":true */
    CP_F_BOFFSET = 1u << 13,   /* CONNECTION: the broadcast stream's offset */
    CP_F_BEPOCH = 1u << 14,    /* CONNECTION: the broadcast stream's epoch */
    CP_F_RECOVERED = 1u << 15, /* CONNECTION: "recovered":true|false */
};

/* Longest messageId / requestId accepted from outside. */
#define CP_ENVELOPE_ID_MAX 128
/* Longest epoch accepted (ours are 16 hex digits; see redis.h). */
#define CP_ENVELOPE_EPOCH_MAX 64

typedef struct {
    unsigned fields;
    int64_t active_time;
    const char *from;
    const char *message_id;
    const cJSON *msg; /* a JSON object */
    /* or: its text, written in its place (cp_envelope_parse sets it to the
     * bytes the sender wrote, in data: keep data while env is used) */
    const char *msg_raw;
    size_t msg_raw_len;
    int msg_type;
    const char *request_id;
    const char *result_msg;
    const char *session_id;
    const cJSON *to;       /* parsed: array of strings */
    const char *to_single; /* written as a one-element array when to is NULL */
    int trigger;
    /* the stream position (docs/design-delivery.md): offset >= 1 when
     * stored, -1 for "offset":null (not stored) */
    int64_t offset;
    const char *epoch;
    int64_t boffset;
    const char *bepoch;
    int recovered; /* 0 or 1, with CP_F_RECOVERED */
} cp_envelope;

/* Deepest nesting of arrays and objects accepted in any JSON we read
 * (HTTP bodies, WebSocket messages, bus payloads, tokens). */
#define CP_JSON_MAX_DEPTH 64

/* Reasons cp_json_parse_strict gives that callers tell apart (compare the
 * pointers). */
#define CP_JSON_NOT_UTF8 cp_json_not_utf8
#define CP_JSON_TOO_DEEP cp_json_too_deep
extern const char cp_json_not_utf8[];
extern const char cp_json_too_deep[];

/* Parses exactly one JSON value: the bytes must be valid UTF-8, strings may
 * hold no control characters and no \u0000, arrays and objects nest at most
 * CP_JSON_MAX_DEPTH deep, and nothing but white space may follow the value.
 * NULL otherwise, with a short reason in *why when why is not NULL. */
cJSON *cp_json_parse_strict(const char *data, size_t len, const char **why);

/* Flags of the _flags variants. */
enum {
    /* The caller validated the bytes as UTF-8 already (the bridge: lws
     * checks every WebSocket text message and closes with 1007): skip that
     * pass. Everything else is still checked. */
    CP_PARSE_UTF8_CHECKED = 1u << 0,
};
cJSON *cp_json_parse_strict_flags(const char *data, size_t len, unsigned flags,
                                  const char **why);

/* Where the value of the top-level member named key lies in the parsed
 * text: off and len bytes. len 0: not found, not an object or array, not
 * told apart safely (the key written twice, or a top-level key with an
 * escape), or text that is not strict JSON (cJSON also takes 01, 1. and
 * control bytes as white space). Passing that text on keeps the value
 * exactly as its sender wrote it (numbers are not rounded through a double)
 * at the cost of a copy. */
typedef struct {
    const char *key;
    size_t off, len;
} cp_json_span;

/* cp_json_parse_strict_flags that also fills span (when not NULL). */
cJSON *cp_json_parse_strict_span(const char *data, size_t len, unsigned flags,
                                 cp_json_span *span, const char **why);

/* Parses and validates an envelope. On success returns the cJSON tree the
 * envelope's pointers borrow from (free it with cJSON_Delete) and fills env;
 * env->msg_raw points into data when msg's text can go on as written
 * (cp_json_parse_strict_span). On failure returns NULL and writes a short
 * reason into err. */
cJSON *cp_envelope_parse(const char *data, size_t len, cp_envelope *env, char *err,
                         size_t err_cap);
cJSON *cp_envelope_parse_flags(const char *data, size_t len, unsigned flags, cp_envelope *env,
                               char *err, size_t err_cap);

/* Fills what a sender may leave out, each only when absent: messageId (a
 * new random id written to id_buf, CP_MESSAGE_ID_LEN + 1 bytes; with id_buf
 * NULL an absent messageId stays absent), activeTime (now), from ("system")
 * and trigger. The one place these defaults are decided. */
void cp_envelope_fill_defaults(cp_envelope *env, cp_trigger trigger, char *id_buf);

/* Appends the envelope as compact JSON. When split is not NULL, sessionId
 * and to are left out and *split receives the offset (relative to the start
 * of this envelope in b) where a per-recipient fragment
 * ',"sessionId":...,"to":[...]' belongs; the envelope must then have a
 * msgType (CP_F_MSG_TYPE), so the part before the gap is never empty. Returns 0, or -1 if allocation
 * failed. */
int cp_envelope_write(cp_buf *b, const cp_envelope *env, size_t *split);

/* The largest position a stored message can carry: what an entry writes
 * in to know the most bytes its envelope takes as published (every bridge
 * checks that size against --max-message-bytes). Offsets stay JSON-safe
 * integers; epochs are 16 hex digits (redis.c). */
#define CP_ENVELOPE_LARGEST_OFFSET 9007199254740992LL
#define CP_ENVELOPE_LARGEST_EPOCH "ffffffffffffffff"

/* Appends ',"sessionId":"<sid>","to":["<channel>"]' for one recipient: the
 * fragment that goes into the gap cp_envelope_write leaves at *split (the
 * bridge builds each session's once). */
void cp_envelope_write_recipient(cp_buf *b, const char *session_id, const char *channel_id);

const char *cp_msg_type_name(int msg_type);

#endif
