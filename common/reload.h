/* What SIGHUP re-reads. Flags and the environment cannot change in a
 * running process, so what is meant to change without a restart comes from
 * files (--log-level-file, --api-key-file, --jwt-secret-file,
 * --jwt-public-key, --tls-cert/--tls-key); SIGHUP re-reads them. Each
 * binary catches SIGHUP and runs its reload on an ordinary thread (the lws
 * service thread, or the HTTP API's sigwait loop), never in a signal
 * handler, and never exits on it. These helpers read and apply; they log
 * what changed and keep the old value when the new one is unusable. */
#ifndef CP_RELOAD_H
#define CP_RELOAD_H

#include <stddef.h>

/* Largest file read here (keys, secrets, a level name). */
#define CP_RELOAD_FILE_MAX 65536

/* Reads path into a new NUL-terminated buffer (*out, to free), trailing
 * whitespace removed. Returns the length, or -1 after logging why (what:
 * the option name, for the message). */
long cp_reload_read_file(const char *what, const char *path, char **out);

/* Applies the level named in path (empty path: nothing to do). Returns 0
 * when applied (logged when it changed), -1 when the file was unusable
 * (logged; the level stays). */
int cp_reload_log_level(const char *path);

#endif
