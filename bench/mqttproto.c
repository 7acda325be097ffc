#include "mqttproto.h"

#include <string.h>

static size_t put_varint(uint8_t *out, size_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        if (v)
            b |= 0x80;
        out[n++] = b;
    } while (v);
    return n;
}

static size_t put_str(uint8_t *out, const char *s, size_t l)
{
    out[0] = (uint8_t)(l >> 8);
    out[1] = (uint8_t)l;
    memcpy(out + 2, s, l);
    return l + 2;
}

/* Writes the fixed header then moves the body (built at out + 5) in place. */
static size_t finish(uint8_t *out, uint8_t b0, size_t body_len)
{
    uint8_t hdr[5];
    hdr[0] = b0;
    size_t h = 1 + put_varint(hdr + 1, body_len);
    memmove(out + h, out + 5, body_len);
    memcpy(out, hdr, h);
    return h + body_len;
}

size_t mqtt_connect(uint8_t *out, const char *client_id, uint16_t keepalive, int clean)
{
    size_t cl = strlen(client_id);
    if (cl > 65535)
        return 0;
    uint8_t *b = out + 5;
    size_t n = put_str(b, "MQTT", 4);
    b[n++] = 4; /* 3.1.1 */
    b[n++] = clean ? 0x02 : 0x00;
    b[n++] = (uint8_t)(keepalive >> 8);
    b[n++] = (uint8_t)keepalive;
    n += put_str(b + n, client_id, cl);
    return finish(out, MQTT_CONNECT << 4, n);
}

size_t mqtt_subscribe(uint8_t *out, uint16_t pid, const char *topic, int qos)
{
    size_t tl = strlen(topic);
    if (tl > 65535)
        return 0;
    uint8_t *b = out + 5;
    size_t n = 0;
    b[n++] = (uint8_t)(pid >> 8);
    b[n++] = (uint8_t)pid;
    n += put_str(b + n, topic, tl);
    b[n++] = (uint8_t)qos;
    return finish(out, MQTT_SUBSCRIBE << 4 | 0x02, n);
}

size_t mqtt_publish(uint8_t *out, const char *topic, size_t topic_len, int qos, uint16_t pid,
                    const uint8_t *payload, size_t plen)
{
    if (topic_len > 65535 || plen > 200000000)
        return 0;
    uint8_t *b = out + 5;
    size_t n = put_str(b, topic, topic_len);
    if (qos > 0) {
        b[n++] = (uint8_t)(pid >> 8);
        b[n++] = (uint8_t)pid;
    }
    memcpy(b + n, payload, plen);
    n += plen;
    return finish(out, (uint8_t)(MQTT_PUBLISH << 4 | (qos & 3) << 1), n);
}

size_t mqtt_puback(uint8_t *out, uint16_t pid)
{
    out[0] = MQTT_PUBACK << 4;
    out[1] = 2;
    out[2] = (uint8_t)(pid >> 8);
    out[3] = (uint8_t)pid;
    return 4;
}

int mqtt_parse(const uint8_t *buf, size_t len, mqtt_packet *p)
{
    if (len < 2)
        return 0;
    size_t rl = 0, mult = 1, i = 1;
    for (;;) {
        if (i >= len)
            return 0;
        uint8_t c = buf[i++];
        rl += (size_t)(c & 0x7F) * mult;
        if (!(c & 0x80))
            break;
        mult *= 128;
        if (i > 4)
            return -1;
    }
    if (len - i < rl)
        return 0;
    p->type = buf[0] >> 4;
    p->flags = buf[0] & 0x0F;
    p->body = buf + i;
    p->body_len = rl;
    p->total = i + rl;
    return 1;
}

int mqtt_publish_fields(const mqtt_packet *p, const uint8_t **topic, size_t *topic_len,
                        uint16_t *pid, const uint8_t **payload, size_t *plen)
{
    if (p->body_len < 2)
        return -1;
    size_t tl = (size_t)p->body[0] << 8 | p->body[1];
    size_t off = 2 + tl;
    int qos = (p->flags >> 1) & 3;
    if (qos == 3)
        return -1;
    if (off + (qos ? 2 : 0) > p->body_len)
        return -1;
    *topic = p->body + 2;
    *topic_len = tl;
    *pid = 0;
    if (qos) {
        *pid = (uint16_t)(p->body[off] << 8 | p->body[off + 1]);
        off += 2;
    }
    *payload = p->body + off;
    *plen = p->body_len - off;
    return 0;
}
