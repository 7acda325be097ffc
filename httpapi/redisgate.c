#include "redisgate.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backoff.h"
#include "ids.h"
#include "log.h"

static cp_redis_addr gate_addr;
static const char *gate_prefix = "";
static atomic_int closed;   /* Redis is known to be unreachable */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_t watcher;
static int started;  /* under lock: a watcher was started and not joined yet */
static int stopping; /* under lock */

void redis_gate_init(const cp_redis_addr *addr, const char *prefix)
{
    gate_addr = *addr;
    gate_prefix = prefix;
}

int redis_gate_open(void) { return !atomic_load(&closed); }

/* PINGs until Redis answers (or the stop), waiting the common backoff
 * between attempts; then opens the gate. */
static void *watch(void *arg)
{
    (void)arg;
    cp_redis_options opt = {.prefix = gate_prefix, .who = "redis-watch", .timeout_ms = 1000};
    cp_redis *r = cp_redis_open(&gate_addr, &opt);
    cp_backoff b;
    cp_backoff_reset(&b);
    pthread_mutex_lock(&lock);
    while (!stopping) {
        struct timespec until;
        cp_realtime_after_ms(&until, cp_backoff_next(&b));
        while (!stopping && pthread_cond_timedwait(&wake, &lock, &until) == 0)
            ;
        if (stopping)
            break;
        pthread_mutex_unlock(&lock);
        int up = r && cp_redis_connect(r) != CP_REDIS_DOWN && cp_redis_ping(r) == CP_REDIS_OK;
        if (r)
            cp_redis_disconnect(r);
        pthread_mutex_lock(&lock);
        if (up) {
            atomic_store(&closed, 0);
            log_info("httpapi: Redis answers again: pushes are stored again");
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    cp_redis_close(r);
    return NULL;
}

void redis_gate_report(int ok)
{
    if (ok)
        return; /* the watcher alone opens the gate: one request's luck proves little */
    pthread_mutex_lock(&lock);
    if (!atomic_load(&closed) && !stopping) {
        atomic_store(&closed, 1);
        log_warn("httpapi: Redis unreachable: pushes go out unstored (offset null) until it "
                 "answers again");
        /* An earlier watcher opened the gate and left (it takes the lock no
         * more once it has): reap it. */
        if (started)
            pthread_join(watcher, NULL);
        started = pthread_create(&watcher, NULL, watch, NULL) == 0;
        if (!started)
            atomic_store(&closed, 0); /* cannot watch: let requests try */
    }
    pthread_mutex_unlock(&lock);
}

void redis_gate_shutdown(void)
{
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_broadcast(&wake);
    int join = started;
    started = 0;
    pthread_mutex_unlock(&lock);
    if (join)
        pthread_join(watcher, NULL);
}
