#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *log_component = "cloudpush";
static atomic_int log_level = CP_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void cp_log_init(const char *component, cp_log_level level)
{
    log_component = component;
    atomic_store(&log_level, (int)level);
}

void cp_log_set_level(cp_log_level level) { atomic_store(&log_level, (int)level); }

cp_log_level cp_log_get_level(void) { return (cp_log_level)atomic_load(&log_level); }

int cp_log_enabled(cp_log_level level) { return (int)level <= atomic_load(&log_level); }

int cp_log_parse_level(const char *text, cp_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, names[i]) == 0) {
            *out = (cp_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *out = CP_LOG_WARN;
        return 0;
    }
    return -1;
}

void cp_log(cp_log_level level, const char *fmt, ...)
{
    if (!cp_log_enabled(level))
        return;

    /* One line is formatted first and written with a single fputs so lines
     * from different threads never interleave. */
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_component, level_names[level]);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    while (len > 0 && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';
    line[len] = '\0';
    fputs(line, stderr);
}
