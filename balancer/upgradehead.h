/* A first look at a request the balancer has accepted but libwebsockets has
 * not read yet (handover.c peeks at the socket right after accept): is it,
 * whole, a WebSocket upgrade a bridge on this host can be given untouched?
 *
 * Conservative on purpose: anything unusual answers "no", and lws then reads
 * the request as usual and the balancer's own checks run. A "yes" only skips
 * the balancer's parse; the bridge that adopts the socket parses the request
 * itself and applies the same rules to it as to a direct client. A pure core
 * (no I/O), unit-tested and fuzzed. */
#ifndef BALANCER_UPGRADEHEAD_H
#define BALANCER_UPGRADEHEAD_H

#include <stddef.h>

/* 1 when buf[0..n) starts with a complete HTTP/1.1 request head (through
 * its blank line) that is a GET of an origin-form target ("/...") of at
 * most max_target bytes, with no NUL, no folded header line and an Upgrade
 * header naming websocket; *head_len is then the head's length. 0 otherwise
 * (incomplete, another method or request, or anything odd). */
int upgrade_head_scan(const char *buf, size_t n, size_t max_target, size_t *head_len);

#endif
