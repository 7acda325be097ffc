/* The broker settings every program on the MQTT bus shares (URL, user,
 * password, TLS files), declared once as command-line flags.
 *
 * A program embeds a cp_bus_settings in its configuration, initialises it
 * with CP_BUS_SETTINGS_DEFAULTS, lists CP_BUS_SETTINGS_OPTIONS(field) in its
 * cp_option table, checks it with cp_bus_settings_check() after parsing and
 * copies it into its cp_bus_options with cp_bus_settings_apply(). */
#ifndef CP_BUSCONFIG_H
#define CP_BUSCONFIG_H

#include "bus.h"
#include "config.h"

typedef struct {
    const char *url;      /* tcp:// or mqtt:// (plain), ssl:// or mqtts:// (TLS) */
    const char *user;     /* empty: anonymous */
    const char *password; /* secret */
    const char *ca_file;  /* TLS: CAs the broker's certificate must chain to; empty: the system's */
    const char *cert_file; /* TLS client certificate chain (PEM); empty: none */
    const char *key_file;  /* its private key (PEM); empty: in cert_file */
} cp_bus_settings;

#define CP_BUS_SETTINGS_DEFAULTS                                                                   \
    {                                                                                              \
        .url = "tcp://127.0.0.1:1883", .user = "", .password = "", .ca_file = "",                  \
        .cert_file = "", .key_file = "",                                                           \
    }

/* The cp_option entries of the bus flags (--mqtt, --mqtt-user,
 * --mqtt-password, --mqtt-ca, --mqtt-cert, --mqtt-key), writing into the
 * cp_bus_settings lvalue s. */
#define CP_BUS_SETTINGS_OPTIONS(s)                                                                 \
    {"mqtt", CP_OPT_STRING, &(s).url, "URL",                                                       \
     "MQTT broker URL: tcp://host:port (or mqtt://), or ssl://host:port (or mqtts://) for TLS, "   \
     "which always verifies the broker's certificate and host name.",                             \
     0, 0, 0},                                                                                     \
        {"mqtt-user", CP_OPT_STRING, &(s).user, "USER", "MQTT user name (empty: anonymous).", 0,   \
         0, 0},                                                                                    \
        {"mqtt-password", CP_OPT_STRING, &(s).password, "PASSWORD", "MQTT password.", 0, 0, 1},    \
        {"mqtt-ca", CP_OPT_STRING, &(s).ca_file, "PEM-FILE",                                       \
         "TLS: the CA certificates the broker's certificate must chain to (empty: the system's "   \
         "trust store).",                                                                          \
         0, 0, 0},                                                                                 \
        {"mqtt-cert", CP_OPT_STRING, &(s).cert_file, "PEM-FILE",                                   \
         "TLS: client certificate chain to present to the broker (for require_certificate).", 0,  \
         0, 0},                                                                                    \
        {"mqtt-key", CP_OPT_STRING, &(s).key_file, "PEM-FILE",                                     \
         "TLS: private key of --mqtt-cert (empty: the key is in that file).", 0, 0, 0}

/* Checks the settings before anything starts: a known URL scheme, TLS files
 * only with a TLS URL, every file readable. Logs why and returns -1 when
 * they cannot work. */
int cp_bus_settings_check(const cp_bus_settings *s);

/* Copies the broker URL, credentials and TLS files into o. */
void cp_bus_settings_apply(const cp_bus_settings *s, cp_bus_options *o);

#endif
