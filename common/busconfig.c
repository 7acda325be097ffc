#include "busconfig.h"

#include <string.h>
#include <unistd.h>

#include "log.h"

static int known_scheme(const char *url)
{
    static const char *const schemes[] = {"tcp://", "mqtt://", "ssl://", "mqtts://", "ws://",
                                          "wss://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i], strlen(schemes[i])) == 0)
            return 1;
    return 0;
}

/* Paho opens the files only when it connects, and a missing one then looks
 * like any failed connect, retried forever: say it once, at start. */
static int readable_or_empty(const char *flag, const char *path)
{
    if (!*path || access(path, R_OK) == 0)
        return 0;
    log_error("%s %s cannot be read", flag, path);
    return -1;
}

int cp_bus_settings_check(const cp_bus_settings *s)
{
    if (!known_scheme(s->url)) {
        log_error("--mqtt '%s': the URL must start with tcp://, mqtt://, ssl:// or mqtts:// "
                  "(ws:// or wss:// for MQTT over WebSocket)",
                  s->url);
        return -1;
    }
    int tls_files = *s->ca_file || *s->cert_file || *s->key_file;
    if (tls_files && !cp_bus_url_is_tls(s->url)) {
        log_error("--mqtt-ca, --mqtt-cert and --mqtt-key need a TLS broker URL (ssl://host:port "
                  "or mqtts://host:port), got '%s'",
                  s->url);
        return -1;
    }
    if (*s->key_file && !*s->cert_file) {
        log_error("--mqtt-key needs --mqtt-cert (the certificate it belongs to)");
        return -1;
    }
    if (readable_or_empty("--mqtt-ca", s->ca_file) != 0 ||
        readable_or_empty("--mqtt-cert", s->cert_file) != 0 ||
        readable_or_empty("--mqtt-key", s->key_file) != 0)
        return -1;
    return 0;
}

void cp_bus_settings_apply(const cp_bus_settings *s, cp_bus_options *o)
{
    o->url = s->url;
    o->username = s->user;
    o->password = s->password;
    o->tls_ca_file = s->ca_file;
    o->tls_cert_file = s->cert_file;
    o->tls_key_file = s->key_file;
}
