/* One view of Redis for every worker thread (history.c, presence.c):
 * while it is unreachable, requests do not each pay a connect or command
 * timeout. The request that finds it unreachable closes the gate; from
 * then on requests skip Redis at once (offset null, no presence), and a
 * watcher thread PINGs it with the common backoff (common/backoff.h:
 * 200 ms doubling to 5 s) on a connection of its own until it answers,
 * which opens the gate again. */
#ifndef HTTPAPI_REDISGATE_H
#define HTTPAPI_REDISGATE_H

#include "redis.h"

/* Where the watcher connects. Before any worker thread runs. */
void redis_gate_init(const cp_redis_addr *addr, const char *prefix);
/* 1: try Redis now; 0: it is known to be unreachable, skip it. */
int redis_gate_open(void);
/* After a call that tried: ok 0 when Redis could not be reached
 * (connect failed, connection lost): closes the gate. */
void redis_gate_report(int ok);
/* Ends the watcher (at exit). */
void redis_gate_shutdown(void);

#endif
