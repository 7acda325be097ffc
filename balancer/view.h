/* The balancer's picture of the live bridges, read from Redis by a thread
 * of its own every --refresh-ms, plus the cleanup of bridges that died. */
#ifndef BALANCER_VIEW_H
#define BALANCER_VIEW_H

#include <stddef.h>
#include <stdint.h>

#define VIEW_ID_MAX 64
#define VIEW_URL_MAX 512

typedef struct {
    char id[VIEW_ID_MAX + 1];
    char url[VIEW_URL_MAX];
    char addr[64]; /* the URL's host, resolved to a numeric address here,
                      because lws 4.1 on Debian resolves synchronously */
    unsigned connections;
    unsigned capacity;
    int draining;
    int not_ready; /* its record says it cannot take sessions now */
    int64_t started_ms;
    int64_t updated_ms;
} bridge_info;

typedef struct view view;

typedef struct {
    const char *redis_url;
    const char *prefix;
    long refresh_ms;
    long ttl_ms; /* a record older than this is dead (the bridges' TTL) */
} view_config;

view *view_start(const view_config *cfg, void (*on_refresh)(void *ud), void *ud);
/* Copies the current snapshot into out (up to cap entries); returns the
 * count and its generation (changes with every refresh). */
size_t view_snapshot(view *v, bridge_info *out, size_t cap, uint64_t *generation,
                     int *redis_ok);
uint64_t view_cleaned_bridges(view *v);
void view_stop(view *v);

#endif
