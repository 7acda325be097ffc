#include "reload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

long cp_reload_read_file(const char *what, const char *path, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        log_error("%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    char *buf = malloc(CP_RELOAD_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        log_error("%s %s: out of memory", what, path);
        return -1;
    }
    size_t n = fread(buf, 1, CP_RELOAD_FILE_MAX + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || n > CP_RELOAD_FILE_MAX) {
        log_error("%s %s: %s", what, path,
                  failed ? "read error" : "larger than 64 KiB");
        free(buf);
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                     buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    *out = buf;
    return (long)n;
}

int cp_reload_log_level(const char *path)
{
    if (!path || !*path)
        return 0;
    char *text;
    if (cp_reload_read_file("--log-level-file", path, &text) < 0)
        return -1;
    const char *word = text + strspn(text, " \t\r\n");
    cp_log_level level;
    if (cp_log_parse_level(word, &level) != 0) {
        log_error("--log-level-file %s: '%.32s' is not error, warn, info or debug; the level "
                  "stays",
                  path, word);
        free(text);
        return -1;
    }
    free(text);
    static const char *const names[] = {"error", "warn", "info", "debug"};
    cp_log_level before = cp_log_get_level();
    if (before == level)
        return 0;
    /* Said at INFO under the more verbose of the two levels, so it shows
     * whenever either level shows INFO. */
    if (level > before)
        cp_log_set_level(level);
    log_info("reload: log level %s (was %s)", names[level], names[before]);
    cp_log_set_level(level);
    return 0;
}
