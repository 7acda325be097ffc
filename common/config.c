#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "log.h"

#ifndef CLOUDPUSH_VERSION
#define CLOUDPUSH_VERSION "0.1.0"
#endif

void cp_config_env_name(const char *name, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "CLOUDPUSH_");
    for (const char *p = name; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n < cap ? n : cap - 1] = '\0';
}

static int parse_bool(const char *text, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int assign(const char *prog, const cp_option *o, const char *value, const char *origin)
{
    switch (o->type) {
    case CP_OPT_STRING:
        *(const char **)o->dest = value;
        return 0;
    case CP_OPT_BOOL:
        if (parse_bool(value, (int *)o->dest) == 0)
            return 0;
        fprintf(stderr, "%s: %s: expected true/false for %s, got '%s'\n", prog, origin, o->name,
                value);
        return -1;
    case CP_OPT_INT: {
        char *end = NULL;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end != '\0') {
            fprintf(stderr, "%s: %s: %s expects an integer, got '%s'\n", prog, origin, o->name,
                    value);
            return -1;
        }
        if (v < o->min || v > o->max) {
            fprintf(stderr, "%s: %s: %s must be between %ld and %ld, got %ld\n", prog, origin,
                    o->name, o->min, o->max, v);
            return -1;
        }
        *(long *)o->dest = v;
        return 0;
    }
    }
    return -1;
}

static void print_default(const cp_option *o)
{
    switch (o->type) {
    case CP_OPT_STRING: {
        const char *v = *(const char **)o->dest;
        if (o->secret)
            printf(" (default: %s)", v && *v ? "set" : "none");
        else
            printf(" (default: %s)", v && *v ? v : "none");
        break;
    }
    case CP_OPT_INT:
        printf(" (default: %ld)", *(long *)o->dest);
        break;
    case CP_OPT_BOOL:
        printf(" (default: %s)", *(int *)o->dest ? "true" : "false");
        break;
    }
}

static void print_help(const char *prog, const char *summary, const cp_option *opts, size_t count)
{
    printf("Usage: %s [OPTIONS]\n\n%s\n\nOptions (each also read from the environment variable "
           "shown):\n",
           prog, summary);
    for (size_t i = 0; i < count; i++) {
        const cp_option *o = &opts[i];
        char env[128];
        cp_config_env_name(o->name, env, sizeof env);
        if (o->type == CP_OPT_BOOL)
            printf("  --%s[=BOOL]\n", o->name);
        else
            printf("  --%s %s\n", o->name, o->metavar ? o->metavar : "VALUE");
        printf("      %s", o->help);
        print_default(o);
        printf("\n      env: %s\n", env);
    }
    printf("  --help\n      Print this help and exit.\n  --version\n      Print the version and "
           "exit.\n");
}

int cp_config_parse(const char *prog, const char *summary, const cp_option *opts, size_t count,
                    int argc, char **argv)
{
    for (size_t i = 0; i < count; i++) {
        char env[128];
        cp_config_env_name(opts[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v && assign(prog, &opts[i], v, env) != 0)
            return CP_CONFIG_ERROR;
    }

    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(prog, summary, opts, count);
            return CP_CONFIG_EXIT;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", prog, CLOUDPUSH_VERSION);
            return CP_CONFIG_EXIT;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, arg);
            return CP_CONFIG_ERROR;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const cp_option *o = NULL;
        for (size_t i = 0; i < count; i++) {
            if (strlen(opts[i].name) == name_len && strncmp(opts[i].name, name, name_len) == 0) {
                o = &opts[i];
                break;
            }
        }
        if (!o) {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", prog, arg);
            return CP_CONFIG_ERROR;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (o->type == CP_OPT_BOOL) {
            value = "true";
        } else if (a + 1 < argc) {
            value = argv[++a];
        } else {
            fprintf(stderr, "%s: option --%s needs a value\n", prog, o->name);
            return CP_CONFIG_ERROR;
        }
        if (assign(prog, o, value, "command line") != 0)
            return CP_CONFIG_ERROR;
    }
    return CP_CONFIG_OK;
}

int cp_config_split_hostport(const char *text, char *host, size_t host_cap, int *port)
{
    const char *colon = strrchr(text, ':');
    if (!colon)
        return -1;
    const char *h = text;
    size_t hlen = (size_t)(colon - text);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= host_cap)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

int cp_config_start(const char *prog, const char *component, const char *summary,
                    const cp_option *opts, size_t count, int argc, char **argv,
                    const char *const *log_level)
{
    cp_log_init(component, CP_LOG_INFO);
    int rc = cp_config_parse(prog, summary, opts, count, argc, argv);
    if (rc == CP_CONFIG_EXIT)
        return 0;
    if (rc != CP_CONFIG_OK)
        return 2;
    cp_log_level level;
    if (cp_log_parse_level(*log_level, &level) != 0) {
        fprintf(stderr, "%s: --log-level must be error, warn, info or debug\n", prog);
        return 2;
    }
    cp_log_set_level(level);
    return -1;
}

long cp_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return -1;
    return (long)rl.rlim_cur;
}

void cp_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}
