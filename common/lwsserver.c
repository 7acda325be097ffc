#include "lwsserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "log.h"
#include "lwshttp.h"
#include "service.h"
#include "reload.h"

/* The one server of this process, for the signal handler. */
static cp_lws_server *signal_target;

static void on_signal(int sig)
{
    cp_lws_server *s = signal_target;
    /* 1: SIGTERM, stop gracefully; 2: SIGINT or a second SIGTERM, now. */
    int level = sig == SIGINT || atomic_load(&s->stop_requested) ? 2 : 1;
    atomic_store(&s->stop_requested, level);
    if (s->ctx)
        lws_cancel_service(s->ctx);
}

static void lws_log_to_ours(int level, const char *line)
{
    /* lws 4.1 reports every adopted socket (a balancer's hand-over) as an
     * error ("adopt_socket_readbuf: calling service"): it is routine. */
    if (strncmp(line, "adopt_socket_readbuf: ", 22) == 0)
        level = LLL_DEBUG;
    cp_log(level == LLL_ERR ? CP_LOG_ERROR : level == LLL_WARN ? CP_LOG_WARN : CP_LOG_DEBUG,
           "lws: %s", line);
}

/* lws 4.1 ignores a numeric address in info.iface and listens everywhere,
 * but honours an interface name and binds that interface's first address.
 * So find the interface that owns the address, and insist that it is the
 * interface's first one of its family, or we would bind something else.
 * Empty ifname for 0.0.0.0/::/empty: all interfaces. */
static int iface_for(const char *host, char *ifname, size_t cap)
{
    if (!*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0 ||
        strcmp(host, "::") == 0) {
        ifname[0] = '\0';
        return 0;
    }
    struct addrinfo hints = {.ai_flags = AI_ADDRCONFIG}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        log_error("--listen: cannot resolve '%s'", host);
        return -1;
    }
    int family = res->ai_family;
    unsigned char want[16];
    size_t want_len = family == AF_INET6 ? 16 : 4;
    if (family == AF_INET6)
        memcpy(want, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, 16);
    else
        memcpy(want, &((struct sockaddr_in *)res->ai_addr)->sin_addr, 4);
    freeaddrinfo(res);

    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        log_error("--listen: getifaddrs: %s", strerror(errno));
        return -1;
    }
    int found = 0, first_of_iface = 0;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != family)
            continue;
        const void *a = family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if (memcmp(a, want, want_len) != 0)
            continue;
        snprintf(ifname, cap, "%s", i->ifa_name);
        found = 1;
        /* Is it the first address of this family on that interface? */
        for (struct ifaddrs *j = ifs; j; j = j->ifa_next) {
            if (!j->ifa_addr || j->ifa_addr->sa_family != family ||
                strcmp(j->ifa_name, i->ifa_name) != 0)
                continue;
            first_of_iface = j == i;
            break;
        }
        break;
    }
    freeifaddrs(ifs);
    if (!found) {
        log_error("--listen: %s is not an address of this host", host);
        return -1;
    }
    if (!first_of_iface) {
        log_error("--listen: %s is a secondary address of %s; libwebsockets 4.1 can only bind "
                  "an interface's first address (or use 0.0.0.0)",
                  host, ifname);
        return -1;
    }
    return 0;
}

/* Turns on TLS when cert is set (key required then). */
static int tls_setup(struct lws_context_creation_info *info, const char *cert, const char *key)
{
    /* The global init is also what lets relay clients speak wss://. */
    info->options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (!cert || !*cert) {
        if (key && *key) {
            log_error("--tls-key needs --tls-cert");
            return -1;
        }
        return 0;
    }
    if (!key || !*key) {
        log_error("--tls-cert needs --tls-key");
        return -1;
    }
    FILE *f = fopen(cert, "r");
    FILE *g = fopen(key, "r");
    if (!f || !g) {
        log_error("cannot read %s", !f ? cert : key);
        if (f)
            fclose(f);
        if (g)
            fclose(g);
        return -1;
    }
    fclose(f);
    fclose(g);
    info->ssl_cert_filepath = cert;
    info->ssl_private_key_filepath = key;
    return 0;
}

/* A verifier from the configured keys, the secret file read now. NULL
 * after logging when they are unusable. */
static cp_jwt_verifier *build_verifier(const cp_lws_server_config *cfg)
{
    char *from_file = NULL;
    const char *secret = cfg->jwt_secret;
    if (cfg->jwt_secret_file && *cfg->jwt_secret_file) {
        if (cp_reload_read_file("--jwt-secret-file", cfg->jwt_secret_file, &from_file) < 0)
            return NULL;
        secret = from_file;
    }
    char err[256];
    cp_jwt_verifier *v =
        cp_jwt_verifier_new(secret, cfg->jwt_public_key, cfg->jwt_leeway_s, err, sizeof err);
    if (from_file) {
        explicit_bzero(from_file, strlen(from_file));
        free(from_file);
    }
    if (!v)
        log_error("client authentication: %s", err);
    return v;
}

static int jwt_configured(const cp_lws_server_config *cfg)
{
    return *cfg->jwt_secret || *cfg->jwt_public_key ||
           (cfg->jwt_secret_file && *cfg->jwt_secret_file);
}

int cp_lws_server_prepare(cp_lws_server *s, const cp_lws_server_config *cfg)
{
    memset(&s->info, 0, sizeof s->info);
    s->ctx = NULL;
    s->jwt = NULL;
    s->on_reload = NULL;
    s->cfg = *cfg;
    atomic_store(&s->stop_requested, 0);
    s->listen = cfg->listen;
    /* Until the loop watches SIGHUP (listen), one must not kill us. */
    signal(SIGHUP, SIG_IGN);
    if (cp_reload_log_level(cfg->log_level_file) != 0)
        return -1;
    if (*cfg->jwt_secret && cfg->jwt_secret_file && *cfg->jwt_secret_file) {
        log_error("--jwt-secret and --jwt-secret-file: give one");
        return -1;
    }
    if (jwt_configured(cfg) && !(s->jwt = build_verifier(cfg)))
        return -1;
    if (iface_for(cfg->host, s->ifname, sizeof s->ifname) != 0 ||
        tls_setup(&s->info, cfg->tls_cert, cfg->tls_key) != 0) {
        cp_jwt_verifier_free(s->jwt);
        s->jwt = NULL;
        return -1;
    }
    s->info.port = cfg->port;
    s->info.iface = s->ifname[0] ? s->ifname : NULL;
    s->info.options |= LWS_SERVER_OPTION_VALIDATE_UTF8;
    s->info.timeout_secs = 10;
    /* Room for a token-sized query, so that an over-long one is answered
     * 431 by cp_lws_check_upgrade rather than dropped by lws (default
     * 4096: lws closes a longer request head without a word). */
    s->info.max_http_header_data = CP_LWS_MAX_REQUEST_HEAD;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);

    cp_raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    signal_target = s;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    return 0;
}

static void reload_jwt(cp_lws_server *s)
{
    const cp_lws_server_config *c = &s->cfg;
    int from_files = (c->jwt_secret_file && *c->jwt_secret_file) || *c->jwt_public_key;
    if (!s->jwt || !from_files)
        return;
    cp_jwt_verifier *v = build_verifier(c);
    if (!v) {
        log_error("reload: client token keys unusable; the previous ones stay in use");
        return;
    }
    /* Only the service thread verifies tokens, and it is here. */
    cp_jwt_verifier_free(s->jwt);
    s->jwt = v;
    log_info("reload: client token keys re-read (%s%s%s)",
             c->jwt_secret_file && *c->jwt_secret_file ? c->jwt_secret_file : "",
             c->jwt_secret_file && *c->jwt_secret_file && *c->jwt_public_key ? ", " : "",
             c->jwt_public_key);
}

/* Whether cert (a PEM chain) and key load and belong together. lws would
 * install a broken pair as far as it gets, and every new handshake would
 * then fail, so a pair is checked on a scratch SSL_CTX first. */
static int tls_pair_usable(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    int ok = ctx && SSL_CTX_use_certificate_chain_file(ctx, cert) == 1 &&
             SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 &&
             SSL_CTX_check_private_key(ctx) == 1;
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

static void reload_tls(cp_lws_server *s)
{
    const cp_lws_server_config *c = &s->cfg;
    if (!c->tls_cert || !*c->tls_cert)
        return;
    if (!tls_pair_usable(c->tls_cert, c->tls_key)) {
        log_error("reload: %s and %s are not a usable certificate and key; the certificate in "
                  "use stays",
                  c->tls_cert, c->tls_key);
        return;
    }
    /* lws loads the pair into the vhost's SSL_CTX that new handshakes use;
     * connections already open keep the certificate they started with. */
    if (lws_tls_cert_updated(s->ctx, c->tls_cert, c->tls_key, NULL, 0, NULL, 0) != 0) {
        log_error("reload: the TLS certificate could not be replaced; restart to change it");
        return;
    }
    log_info("reload: TLS certificate %s and key %s re-read for new connections", c->tls_cert,
             c->tls_key);
}

void cp_lws_server_reload(cp_lws_server *s)
{
    log_info("SIGHUP: reloading the settings that come from files");
    cp_reload_log_level(s->cfg.log_level_file);
    reload_jwt(s);
    reload_tls(s);
    if (s->on_reload)
        s->on_reload(s->on_reload_ud);
}

void cp_lws_server_on_reload(cp_lws_server *s, void (*fn)(void *ud), void *ud)
{
    s->on_reload = fn;
    s->on_reload_ud = ud;
}

/* libev delivers the signal here, on the loop thread, after the handler
 * it installed has returned: a safe place to read files and swap keys. */
static void on_hangup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    cp_lws_server *s = (cp_lws_server *)((char *)w - offsetof(cp_lws_server, hangup));
    cp_lws_server_reload(s);
}

int cp_lws_server_listen(cp_lws_server *s)
{
    if (cp_lws_loop_init(&s->loop) != 0)
        return -1;
    s->ctx = cp_lws_loop_create_context(&s->loop, &s->info);
    if (!s->ctx) {
        log_error("cannot listen on %s (address in use or not permitted?)", s->listen);
        cp_lws_loop_destroy(&s->loop, NULL);
        return -1;
    }
    ev_signal_init(&s->hangup, on_hangup, SIGHUP);
    ev_signal_start(s->loop.ev, &s->hangup);
    /* The watcher must not keep the loop running on its own. */
    ev_unref(s->loop.ev);
    return 0;
}

int cp_lws_server_stop_requested(cp_lws_server *s)
{
    return atomic_load(&s->stop_requested);
}

void cp_lws_server_run(cp_lws_server *s)
{
    cp_service_ready();
    cp_lws_loop_run(&s->loop);
    cp_service_stopping();
}

void cp_lws_server_destroy(cp_lws_server *s)
{
    struct lws_context *ctx = s->ctx;
    s->ctx = NULL; /* the signal handler must not wake a destroyed context */
    if (s->loop.ev) {
        ev_ref(s->loop.ev);
        ev_signal_stop(s->loop.ev, &s->hangup);
        /* libev restored the default action (exit): keep ignoring it. */
        signal(SIGHUP, SIG_IGN);
    }
    cp_lws_loop_destroy(&s->loop, ctx);
    cp_jwt_verifier_free(s->jwt);
    s->jwt = NULL;
}
