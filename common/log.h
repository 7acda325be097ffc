/* Levelled logging to stderr, shared by every cloudpush binary. */
#ifndef CP_LOG_H
#define CP_LOG_H

typedef enum {
    CP_LOG_ERROR = 0,
    CP_LOG_WARN = 1,
    CP_LOG_INFO = 2,
    CP_LOG_DEBUG = 3,
} cp_log_level;

/* Component name printed on every line ("bridge", "httpapi", ...). */
void cp_log_init(const char *component, cp_log_level level);
void cp_log_set_level(cp_log_level level);
cp_log_level cp_log_get_level(void);
/* Parses "error|warn|info|debug"; returns 0 on success, -1 otherwise. */
int cp_log_parse_level(const char *text, cp_log_level *out);
int cp_log_enabled(cp_log_level level);

void cp_log(cp_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) cp_log(CP_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) cp_log(CP_LOG_WARN, __VA_ARGS__)
#define log_info(...) cp_log(CP_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                         \
    do {                                                                       \
        if (cp_log_enabled(CP_LOG_DEBUG))                                      \
            cp_log(CP_LOG_DEBUG, __VA_ARGS__);                                 \
    } while (0)

#endif
