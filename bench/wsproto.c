#include "wsproto.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = B64[v >> 6 & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = B64[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

void ws_make_key(const uint8_t nonce[16], char key[25])
{
    b64_encode(nonce, 16, key);
}

int ws_accept_for(const char *key, char accept[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char cat[128];
    size_t kl = strlen(key);
    if (kl + sizeof guid > sizeof cat)
        return -1;
    memcpy(cat, key, kl);
    memcpy(cat + kl, guid, sizeof guid - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(cat, kl + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return -1;
    b64_encode(md, 20, accept);
    return 0;
}

int ws_build_request(char *out, size_t cap, const char *host, const char *path, const char *key,
                     const char *protocol)
{
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s%s%s"
                     "\r\n",
                     path, host, key, protocol ? "Sec-WebSocket-Protocol: " : "",
                     protocol ? protocol : "", protocol ? "\r\n" : "");
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

/* Finds header name (case-insensitive) in the head; returns a pointer to its
 * trimmed value and its length via vlen, or NULL. */
static const char *find_header(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len); /* skip the status line */
    const char *end = head + len;
    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        size_t ll = (size_t)(eol - line);
        if (ll > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

/* Is token (case-insensitive) one of the comma-separated values? */
static int has_token(const char *v, size_t vl, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < vl) {
        while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < vl && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

int ws_check_response(const char *head, size_t len, const char *key, const char *protocol,
                      int *status, char *why, size_t why_len)
{
    *status = 0;
    if (len < 12 || strncmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ') {
        snprintf(why, why_len, "not an HTTP/1.x response");
        return -1;
    }
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (head[i] < '0' || head[i] > '9') {
            snprintf(why, why_len, "bad status line");
            return -1;
        }
        st = st * 10 + (head[i] - '0');
    }
    *status = st;
    if (st != 101) {
        snprintf(why, why_len, "status %d", st);
        return -1;
    }
    if (head[7] != '1') {
        snprintf(why, why_len, "101 in an HTTP/1.0 response");
        return -1;
    }
    size_t vl;
    const char *v = find_header(head, len, "Upgrade", &vl);
    if (!v || !has_token(v, vl, "websocket")) {
        snprintf(why, why_len, "no Upgrade: websocket");
        return -1;
    }
    v = find_header(head, len, "Connection", &vl);
    if (!v || !has_token(v, vl, "upgrade")) {
        snprintf(why, why_len, "no Connection: Upgrade");
        return -1;
    }
    char want[29];
    if (ws_accept_for(key, want) != 0) {
        snprintf(why, why_len, "sha1 failed");
        return -1;
    }
    v = find_header(head, len, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != 28 || memcmp(v, want, 28) != 0) {
        snprintf(why, why_len, "Sec-WebSocket-Accept missing or wrong");
        return -1;
    }
    if (find_header(head, len, "Sec-WebSocket-Extensions", &vl)) {
        snprintf(why, why_len, "server enabled an extension that was not offered");
        return -1;
    }
    v = find_header(head, len, "Sec-WebSocket-Protocol", &vl);
    if (protocol) {
        if (!v || vl != strlen(protocol) || strncmp(v, protocol, vl) != 0) {
            snprintf(why, why_len, "subprotocol %s not accepted", protocol);
            return -1;
        }
    } else if (v) {
        snprintf(why, why_len, "server chose a subprotocol that was not offered");
        return -1;
    }
    return 0;
}

int ws_parse_frame(const uint8_t *buf, size_t len, ws_frame *f, const char **why)
{
    f->hdr_len = 0;
    f->len = 0;
    if (len < 2)
        return 0;
    uint8_t b0 = buf[0], b1 = buf[1];
    f->fin = (b0 & 0x80) != 0;
    f->opcode = b0 & 0x0F;
    if (b0 & 0x70) {
        *why = "RSV bits set without an extension";
        return -1;
    }
    if (b1 & 0x80) {
        *why = "masked frame from the server";
        return -1;
    }
    switch (f->opcode) {
    case WS_OP_CONT:
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        break;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!f->fin) {
            *why = "fragmented control frame";
            return -1;
        }
        if ((b1 & 0x7F) > 125) {
            *why = "control frame over 125 bytes";
            return -1;
        }
        break;
    default:
        *why = "reserved opcode";
        return -1;
    }
    uint64_t pl = b1 & 0x7F;
    size_t h = 2;
    if (pl == 126) {
        if (len < 4)
            return 0;
        pl = (uint64_t)buf[2] << 8 | buf[3];
        h = 4;
        if (pl < 126) {
            *why = "non-minimal length";
            return -1;
        }
    } else if (pl == 127) {
        if (len < 10)
            return 0;
        pl = 0;
        for (int i = 0; i < 8; i++)
            pl = pl << 8 | buf[2 + i];
        h = 10;
        if (pl >> 63) {
            *why = "length with the top bit set";
            return -1;
        }
        if (pl <= 0xFFFF) {
            *why = "non-minimal length";
            return -1;
        }
    }
    f->hdr_len = h;
    f->len = pl;
    return (uint64_t)(len - h) >= pl ? 1 : 0;
}

size_t ws_build_frame(uint8_t *out, int opcode, const uint8_t *payload, size_t plen, uint32_t mask)
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (plen < 126) {
        out[h++] = (uint8_t)(0x80 | plen);
    } else if (plen <= 0xFFFF) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(plen >> 8);
        out[h++] = (uint8_t)plen;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)plen >> (8 * i));
    }
    uint8_t m[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                    (uint8_t)mask};
    memcpy(out + h, m, 4);
    h += 4;
    for (size_t i = 0; i < plen; i++)
        out[h + i] = payload[i] ^ m[i & 3];
    return h + plen;
}

int ws_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path, 8 bytes at a time. */
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n >= len)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}
