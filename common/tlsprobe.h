/* One TLS handshake made the way the bus client makes it (same CA, client
 * certificate and host name checks), only to say why a connection failed:
 * Paho reports a host name mismatch, or a broker that wants a client
 * certificate, as a bare "connect failure". Blocking: call it from a thread
 * of your own, never from the event loop. */
#ifndef CP_TLSPROBE_H
#define CP_TLSPROBE_H

#include <stddef.h>

typedef struct {
    const char *url;       /* ssl://host:port, mqtts://host:port, wss://host:port/... */
    const char *ca_file;   /* NULL or empty: the system trust store */
    const char *cert_file; /* NULL or empty: no client certificate */
    const char *key_file;  /* NULL or empty: in cert_file */
    int timeout_ms;        /* for the TCP connect and each read */
} cp_tls_probe_config;

/* Returns 1 when the handshake found a problem (described in why), 0 when it
 * found none (the failure lies elsewhere), -1 when the broker could not be
 * reached at all (why says how). */
int cp_tls_probe(const cp_tls_probe_config *cfg, char *why, size_t cap);

#endif
