/* Identifiers: message ids, request ids, session ids, channel id checks. */
#ifndef CP_IDS_H
#define CP_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CP_MESSAGE_ID_LEN 32
#define CP_CHANNEL_ID_MAX 128

/* 32 lowercase hex characters plus NUL; random (thread-safe, no syscall). */
void cp_message_id(char out[CP_MESSAGE_ID_LEN + 1]);
/* 8-4-4-4-12 random UUID (version 4) plus NUL. */
void cp_uuid_dashed(char out[37]);
/* A random 64-bit value from the same generator. */
uint64_t cp_random_u64(void);

/* True when s is 1..128 characters of [A-Za-z0-9._:@-]: nothing that could
 * be an MQTT wildcard or topic level. */
bool cp_channel_id_valid(const char *s, size_t len);

/* <bridgeId>_<channelId>_<yyyyMMddHHmmss>-<seq>: the original shape, made
 * unique by a per-process sequence number. Returns the length written, or
 * -1 when it does not fit. */
int cp_session_id_format(char *out, size_t cap, const char *bridge_id, const char *channel_id,
                         time_t when, uint64_t seq);

/* Wall-clock milliseconds since the epoch. */
int64_t cp_now_ms(void);
/* Monotonic milliseconds. */
int64_t cp_mono_ms(void);
/* The same in microseconds (latency histograms). */
int64_t cp_mono_us(void);
/* CLOCK_REALTIME now + ms, for pthread_cond_timedwait deadlines. */
void cp_realtime_after_ms(struct timespec *out, int64_t ms);

#endif
