/* The few MQTT 3.1.1 packets the generator needs, encoded and parsed by
 * hand (it speaks MQTT inside its own epoll loop, over TCP or inside
 * WebSocket binary messages). */
#ifndef BENCH_MQTTPROTO_H
#define BENCH_MQTTPROTO_H

#include <stddef.h>
#include <stdint.h>

enum {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* Each returns the packet length written into out (which must be large
 * enough: the sizes of the inputs + 16), or 0 when an input is too long. */
size_t mqtt_connect(uint8_t *out, const char *client_id, uint16_t keepalive, int clean);
size_t mqtt_subscribe(uint8_t *out, uint16_t pid, const char *topic, int qos);
size_t mqtt_publish(uint8_t *out, const char *topic, size_t topic_len, int qos, uint16_t pid,
                    const uint8_t *payload, size_t plen);
size_t mqtt_puback(uint8_t *out, uint16_t pid);

/* A parsed packet: type, flags (low nibble of byte 0), body = variable
 * header + payload. */
typedef struct {
    int type;
    int flags;
    const uint8_t *body;
    size_t body_len;
    size_t total; /* bytes of the whole packet */
} mqtt_packet;

/* 1: a whole packet at buf; 0: need more; -1: malformed. */
int mqtt_parse(const uint8_t *buf, size_t len, mqtt_packet *p);

/* For a PUBLISH body: topic and payload. 0 or -1. */
int mqtt_publish_fields(const mqtt_packet *p, const uint8_t **topic, size_t *topic_len,
                        uint16_t *pid, const uint8_t **payload, size_t *plen);

#endif
