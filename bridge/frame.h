/* Outbound frames: one immutable, reference-counted JSON text shared by every
 * session it goes to. A personalised frame leaves a gap at `split` where the
 * recipient's ',"sessionId":...,"to":[...]' is inserted at write time, so a
 * broadcast is serialised once however many sessions receive it. */
#ifndef BRIDGE_FRAME_H
#define BRIDGE_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef struct out_frame {
    uint32_t refs;
    uint32_t len;   /* bytes in data */
    uint32_t split; /* where the recipient fragment goes, if personalised */
    uint8_t personalised;
    int8_t msg_type;        /* for per-type metrics */
    int64_t bus_arrived_us; /* monotonic arrival from the bus; 0: not from the bus */
    /* Where the messageId's JSON string content sits in data, found once
     * per frame on first use (frame_message_id): the ack window of every
     * ack=1 session the frame goes to keys on it. */
    uint32_t mid_off;
    uint16_t mid_len;
    uint8_t mid_state; /* FRAME_MID_* */
    uint8_t offset_known;  /* stream_offset was looked up (frame_stream_offset) */
    int64_t stream_offset; /* the channel stream's offset, -1: none */
    char data[];
} out_frame;

/* Returns NULL when out of memory. The caller holds the first reference. */
out_frame *frame_new(const char *json, size_t len, size_t split, int personalised, int msg_type);
static inline void frame_ref(out_frame *f) { f->refs++; }
void frame_unref(out_frame *f);

enum { FRAME_MID_UNKNOWN = 0, FRAME_MID_FOUND, FRAME_MID_NONE };
/* The frame's top-level messageId as written (JSON-escaped, without the
 * quotes), or NULL when it has none. The first call scans the head of the
 * frame; later calls return the cached position. */
const char *frame_message_id(out_frame *f, size_t *len);

/* The frame's top-level "offset" when it is a position in a channel's
 * stream: -1 when absent, null, or the frame is a broadcast (broadcast
 * offsets count another stream). Found once per frame, by walking the
 * top-level keys (the payload in msg may hold an "offset" of its own). */
int64_t frame_stream_offset(out_frame *f);

/* A bounded FIFO of frame references, allocated lazily and grown by
 * doubling up to its limit: an idle session costs no queue memory. */
typedef struct {
    out_frame **slots;
    uint32_t cap, head, count;
    size_t bytes;
} frame_queue;

/* Appends f (taking a new reference). Returns -1 when the message limit, or
 * for a queue that holds something the byte limit, would be exceeded, or
 * memory ran out; the queue is then unchanged. An empty queue takes one
 * frame of any size. */
int frame_queue_push(frame_queue *q, out_frame *f, size_t extra_bytes, uint32_t max_count,
                     size_t max_bytes);
/* Removes and returns the oldest frame (the caller owns that reference). */
out_frame *frame_queue_pop(frame_queue *q, size_t extra_bytes);
void frame_queue_clear(frame_queue *q);

#endif
