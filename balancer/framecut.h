/* Where a bridge's byte stream stands, so that the byte relay can write a
 * close frame of its own to the client without cutting a frame in two.
 *
 * It reads only what it must: the HTTP answer's status line (is it 101?)
 * and its end, then each frame's header (opcode and length). Payloads are
 * skipped by count, never looked at, copied or reassembled. */
#ifndef BALANCER_FRAMECUT_H
#define BALANCER_FRAMECUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t phase;     /* FRAMECUT_HEAD, _FRAMES or _OPAQUE */
    uint8_t head_seen; /* bytes of the status line kept in status[] */
    uint8_t crlf;      /* how much of "\r\n\r\n" was just seen */
    uint8_t hlen;      /* bytes of the current frame header seen */
    uint8_t hneed;     /* header bytes this frame needs (2..14) */
    uint8_t close_seen; /* the bridge sent a close frame */
    char status[12];   /* "HTTP/1.1 101" */
    uint8_t hdr[14];
    uint64_t remaining; /* payload bytes of the current frame still to come */
} framecut;

enum {
    FRAMECUT_HEAD,   /* the HTTP answer, until its blank line */
    FRAMECUT_FRAMES, /* WebSocket frames (the answer was 101) */
    FRAMECUT_OPAQUE, /* another answer (a refusal): not frames */
};

void framecut_init(framecut *f);

/* Follows the next len bytes the bridge sent. */
void framecut_feed(framecut *f, const unsigned char *p, size_t len);

/* The answer was a 101 and the stream stands between two frames: a close
 * frame written now reaches the client whole and in order. */
static inline int framecut_at_boundary(const framecut *f)
{
    return f->phase == FRAMECUT_FRAMES && f->hlen == 0 && f->remaining == 0;
}

/* The bridge's answer head is complete (whatever its status). */
static inline int framecut_head_done(const framecut *f)
{
    return f->phase != FRAMECUT_HEAD;
}

/* Writes a server close frame (unmasked) with code and reason into out
 * (at least 2 + 2 + 123 bytes); returns its length. */
size_t framecut_close_frame(unsigned char *out, uint16_t code, const char *reason);

#endif
