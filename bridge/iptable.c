/* The per-address table of a bridge with workers (workers.h): in the
 * shared region, under a process-shared robust mutex, open addressing with
 * linear probing. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bridge.h"
#include "ids.h"
#include "log.h"
#include "workers.h"

void workers_ip_lock(workers_shared *sh)
{
    if (pthread_mutex_lock(&sh->ip_lock) == EOWNERDEAD)
        pthread_mutex_consistent(&sh->ip_lock); /* the table stays usable: counts only */
}

void workers_ip_unlock(workers_shared *sh) { pthread_mutex_unlock(&sh->ip_lock); }

static size_t ip_slot(const char *ip)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = ip; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h % SHARED_IPS_MAX);
}

/* Under the lock: ip's entry, created when create; NULL when absent or the
 * table is full (the address is then not limited: fail open, logged once). */
static shared_ip *ip_find(workers_shared *sh, const char *ip, int create, double burst)
{
    size_t at = ip_slot(ip);
    for (size_t probe = 0; probe < SHARED_IPS_MAX; probe++) {
        shared_ip *e = &sh->ips[at];
        if (!e->used) {
            if (!create || sh->ips_used >= SHARED_IPS_MAX * 3 / 4) {
                static int warned;
                if (create && !warned++)
                    log_warn("per-address table full (%d addresses): new addresses are not "
                             "limited until it empties",
                             SHARED_IPS_MAX * 3 / 4);
                return NULL;
            }
            memset(e, 0, sizeof *e);
            e->used = 1;
            snprintf(e->ip, sizeof e->ip, "%s", ip);
            cp_bucket_init(&e->bucket, burst, cp_mono_ms());
            sh->ips_used++;
            return e;
        }
        if (strcmp(e->ip, ip) == 0)
            return e;
        at = (at + 1) % SHARED_IPS_MAX;
    }
    return NULL;
}

static uint32_t ip_sessions(const shared_ip *e, int n)
{
    uint32_t s = 0;
    for (int i = 0; i < n; i++)
        s += e->sessions[i];
    return s;
}

int workers_ip_admit(bridge *b, const char *ip, long max_sessions, double rate, double burst,
                     int *over_sessions)
{
    workers_shared *sh = b->shared;
    int ok = 1;
    *over_sessions = 0;
    workers_ip_lock(sh);
    shared_ip *e = ip_find(sh, ip, 1, burst);
    if (e && max_sessions && ip_sessions(e, sh->count) >= (uint32_t)max_sessions) {
        *over_sessions = 1;
        ok = 0;
    } else if (e && rate > 0 && !cp_bucket_take(&e->bucket, rate, burst, cp_mono_ms())) {
        ok = 0;
    }
    workers_ip_unlock(sh);
    return ok;
}

void workers_ip_attach(bridge *b, const char *ip)
{
    workers_shared *sh = b->shared;
    workers_ip_lock(sh);
    shared_ip *e = ip_find(sh, ip, 1, 0);
    if (e)
        e->sessions[b->worker - 1]++;
    workers_ip_unlock(sh);
}

void workers_ip_detach(bridge *b, const char *ip)
{
    workers_shared *sh = b->shared;
    workers_ip_lock(sh);
    shared_ip *e = ip_find(sh, ip, 0, 0);
    if (e && e->sessions[b->worker - 1])
        e->sessions[b->worker - 1]--;
    workers_ip_unlock(sh);
}

/* Removes idle addresses with a full bucket, keeping every probe chain
 * whole (backward-shift deletion). */
void workers_ip_prune(bridge *b, double rate, double burst)
{
    workers_shared *sh = b->shared;
    int64_t now = cp_mono_ms();
    workers_ip_lock(sh);
    for (size_t k = 0; k < SHARED_IPS_MAX; k++) {
        shared_ip *e = &sh->ips[k];
        if (!e->used || ip_sessions(e, sh->count))
            continue;
        cp_bucket_refill(&e->bucket, rate, burst, now);
        if (e->bucket.tokens < burst)
            continue;
        size_t hole = k;
        e->used = 0;
        sh->ips_used--;
        for (size_t j = (hole + 1) % SHARED_IPS_MAX; sh->ips[j].used;
             j = (j + 1) % SHARED_IPS_MAX) {
            size_t home = ip_slot(sh->ips[j].ip);
            /* j may move into the hole when its home is not in (hole, j]. */
            int between = hole < j ? (home > hole && home <= j) : (home > hole || home <= j);
            if (between)
                continue;
            sh->ips[hole] = sh->ips[j];
            sh->ips[j].used = 0;
            hole = j;
        }
        if (sh->ips[k].used)
            k--; /* an entry moved into k: look at it too */
    }
    workers_ip_unlock(sh);
}
