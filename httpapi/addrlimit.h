/* Open connections per client address, for the HTTP API's per-address cap.
 * CivetWeb gives every connection a worker thread of its own, so one
 * address holding many connections holds that many workers; this table
 * lets the API refuse the excess. Thread-safe: CivetWeb workers call it. */
#ifndef HTTPAPI_ADDRLIMIT_H
#define HTTPAPI_ADDRLIMIT_H

typedef struct addr_limit addr_limit;

addr_limit *addr_limit_new(void);
void addr_limit_free(addr_limit *l);
/* A connection from address opened / closed. */
void addr_limit_open(addr_limit *l, const char *address);
void addr_limit_close(addr_limit *l, const char *address);
/* Connections open from address now. */
unsigned addr_limit_count(addr_limit *l, const char *address);

#endif
