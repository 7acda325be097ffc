/* Minimal client side of RFC 6455: the opening handshake (Sec-WebSocket-Key
 * and the Accept check), masked client frames, parsing of (unmasked) server
 * frames. No extensions are offered, so RSV bits must be 0. */
#ifndef BENCH_WSPROTO_H
#define BENCH_WSPROTO_H

#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* 16 random bytes -> the 24-character base64 key (plus NUL). */
void ws_make_key(const uint8_t nonce[16], char key[25]);
/* The Sec-WebSocket-Accept value a server must answer for key (28 + NUL). */
int ws_accept_for(const char *key, char accept[29]);

/* Writes the upgrade request into out; returns its length or -1 if it does
 * not fit. protocol may be NULL. */
int ws_build_request(char *out, size_t cap, const char *host, const char *path, const char *key,
                     const char *protocol);

/* Checks a complete response head (up to and including the blank line).
 * Returns 0 when it is a valid 101 for key (and protocol, when not NULL);
 * otherwise -1 with a reason in why, and *status set to the status code. */
int ws_check_response(const char *head, size_t len, const char *key, const char *protocol,
                      int *status, char *why, size_t why_len);

/* A parsed frame header. */
typedef struct {
    int fin;
    int opcode;
    uint64_t len;   /* payload length */
    size_t hdr_len; /* bytes of header before the payload */
} ws_frame;

/* Parses a server frame header from buf. Returns 1 when a whole frame
 * (header and payload) is available, 0 when more bytes are needed (hdr_len
 * and len are set once the header itself is complete), -1 on a protocol
 * error (why says which). */
int ws_parse_frame(const uint8_t *buf, size_t len, ws_frame *f, const char **why);

/* Writes a masked client frame (FIN set) into out, which must have room for
 * plen + 14 bytes. Returns the frame length. */
size_t ws_build_frame(uint8_t *out, int opcode, const uint8_t *payload, size_t plen,
                      uint32_t mask);

/* RFC 3629 UTF-8 validity (no overlongs, no surrogates, <= U+10FFFF). */
int ws_utf8_valid(const uint8_t *s, size_t len);

#endif
