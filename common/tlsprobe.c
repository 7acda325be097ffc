#include "tlsprobe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"

static const char *nonempty_or_null(const char *s) { return s && *s ? s : NULL; }

/* host and port of scheme://host[:port][/path]; the port defaults to the
 * scheme's (8883 for MQTT over TLS, 443 for wss). */
static int parse_url(const char *url, char *host, size_t cap, int *port)
{
    const char *p = strstr(url, "://");
    if (!p)
        return -1;
    int wss = strncmp(url, "wss://", 6) == 0;
    p += 3;
    char authority[300];
    size_t n = strcspn(p, "/");
    if (n == 0 || n >= sizeof authority)
        return -1;
    memcpy(authority, p, n);
    authority[n] = '\0';
    const char *bracket = strrchr(authority, ']');
    if (strchr(bracket ? bracket : authority, ':'))
        return cp_config_split_hostport(authority, host, cap, port);
    if (n >= cap)
        return -1;
    memcpy(host, authority, n + 1);
    *port = wss ? 443 : 8883;
    return 0;
}

/* A blocking socket connected within timeout_ms, reads and writes bounded by
 * the same time; -1 with why filled in otherwise. */
static int connect_tcp(const char *host, int port, int timeout_ms, char *why, size_t cap)
{
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(why, cap, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof err;
            if (poll(&pfd, 1, timeout_ms) != 1)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
        }
        if (err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(why, cap, "cannot reach %s:%d: %s", host, port, strerror(err ? err : EINVAL));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* OpenSSL's reason for the first queued error, or fallback. */
static void openssl_reason(char *why, size_t cap, const char *fallback)
{
    unsigned long e = ERR_get_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    snprintf(why, cap, "%s", reason ? reason : fallback);
    ERR_clear_error();
}

static SSL_CTX *make_context(const cp_tls_probe_config *cfg, char *why, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_reason(why, cap, "cannot create a TLS context");
        return NULL;
    }
    const char *ca = nonempty_or_null(cfg->ca_file);
    const char *cert = nonempty_or_null(cfg->cert_file);
    const char *key = nonempty_or_null(cfg->key_file);
    int ok = ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1
                : SSL_CTX_set_default_verify_paths(ctx) == 1;
    if (!ok) {
        openssl_reason(why, cap, "cannot load the CA certificates");
    } else if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                        SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert,
                                                    SSL_FILETYPE_PEM) != 1)) {
        openssl_reason(why, cap, "cannot load the client certificate or its key");
        ok = 0;
    }
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

int cp_tls_probe(const cp_tls_probe_config *cfg, char *why, size_t cap)
{
    char host[256];
    int port = 0;
    if (parse_url(cfg->url, host, sizeof host, &port) != 0) {
        snprintf(why, cap, "cannot parse the URL");
        return -1;
    }
    SSL_CTX *ctx = make_context(cfg, why, cap);
    if (!ctx)
        return 1;
    int fd = connect_tcp(host, port, cfg->timeout_ms, why, cap);
    if (fd < 0) {
        SSL_CTX_free(ctx);
        return -1;
    }
    SSL *ssl = SSL_new(ctx);
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(param, host);
    } else {
        SSL_set_tlsext_host_name(ssl, host);
        SSL_set1_host(ssl, host);
    }
    SSL_set_fd(ssl, fd);
    int found = 1;
    ERR_clear_error();
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
            snprintf(why, cap, "%s", X509_verify_cert_error_string(v));
        else
            openssl_reason(why, cap,
                           "the TLS handshake failed (is the port a TLS listener?)");
    } else {
        /* With TLS 1.3 a broker that wants a client certificate says so only
         * after the handshake: wait briefly for its alert. */
        char byte;
        ERR_clear_error();
        int n = SSL_read(ssl, &byte, 1);
        if (n <= 0 && SSL_get_error(ssl, n) == SSL_ERROR_SSL)
            openssl_reason(why, cap, "TLS failure after the handshake");
        else
            found = 0;
    }
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    if (!found)
        snprintf(why, cap, "the TLS handshake and certificate checks pass");
    return found;
}
