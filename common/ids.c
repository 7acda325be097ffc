#include "ids.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

/* xoshiro256** seeded per thread from getrandom(): ids must be unique, not
 * secret, and generating them must not cost a syscall per message. */
static _Thread_local uint64_t rng_state[4];
static _Thread_local int rng_seeded;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void rng_seed(void)
{
    if (getrandom(rng_state, sizeof rng_state, 0) != (ssize_t)sizeof rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
        for (int i = 0; i < 4; i++) {
            x += 0x9E3779B97F4A7C15ULL;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
            rng_state[i] = z ^ (z >> 31);
        }
    }
    rng_seeded = 1;
}

uint64_t cp_random_u64(void)
{
    if (!rng_seeded)
        rng_seed();
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void hex64(char *out, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[v & 15];
        v >>= 4;
    }
}

void cp_message_id(char out[CP_MESSAGE_ID_LEN + 1])
{
    hex64(out, cp_random_u64());
    hex64(out + 16, cp_random_u64());
    out[32] = '\0';
}

void cp_uuid_dashed(char out[37])
{
    char h[32];
    hex64(h, cp_random_u64());
    hex64(h + 16, cp_random_u64());
    h[12] = '4';                               /* version 4 */
    h[16] = "89ab"[cp_random_u64() & 3];      /* RFC 4122 variant */
    memcpy(out, h, 8);
    out[8] = '-';
    memcpy(out + 9, h + 8, 4);
    out[13] = '-';
    memcpy(out + 14, h + 12, 4);
    out[18] = '-';
    memcpy(out + 19, h + 16, 4);
    out[23] = '-';
    memcpy(out + 24, h + 20, 12);
    out[36] = '\0';
}

bool cp_channel_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > CP_CHANNEL_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int cp_session_id_format(char *out, size_t cap, const char *bridge_id, const char *channel_id,
                         time_t when, uint64_t seq)
{
    struct tm tm;
    localtime_r(&when, &tm);
    /* The sequence has at least 10 digits (bridges seed it with 40 random
     * bits): a session id's length depends only on the bridge and channel
     * ids, so an envelope's size on the bus and on the socket differ by
     * no byte that chance decides. */
    int n = snprintf(out, cap, "%s_%s_%04d%02d%02d%02d%02d%02d-%010llx", bridge_id, channel_id,
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (unsigned long long)seq);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

int64_t cp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cp_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cp_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cp_realtime_after_ms(struct timespec *out, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, out);
    out->tv_sec += (time_t)(ms / 1000);
    out->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}
