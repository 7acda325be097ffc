/* Command-line flags with CLOUDPUSH_* environment equivalents.
 *
 * Each binary declares a table of cp_option. Precedence: built-in default,
 * then the environment variable (CLOUDPUSH_ + upper-cased name, '-' -> '_'),
 * then the command-line flag. --help prints every option with its variable
 * and default. */
#ifndef CP_CONFIG_H
#define CP_CONFIG_H

#include <stddef.h>

typedef enum {
    CP_OPT_STRING, /* dest: const char ** */
    CP_OPT_INT,    /* dest: long *, checked against [min, max] */
    CP_OPT_BOOL,   /* dest: int *; "--flag" alone means true */
} cp_opt_type;

typedef struct {
    const char *name; /* long flag name without dashes, e.g. "listen" */
    cp_opt_type type;
    void *dest;
    const char *metavar; /* shown in --help, e.g. "HOST:PORT" */
    const char *help;
    long min, max; /* CP_OPT_INT only */
    int secret;    /* never print the value (passwords) */
} cp_option;

enum {
    CP_CONFIG_OK = 0,
    CP_CONFIG_EXIT = 1,   /* --help or --version printed; exit 0 */
    CP_CONFIG_ERROR = -1, /* message printed to stderr; exit 2 */
};

/* Parses environment then argv into the option destinations. */
int cp_config_parse(const char *prog, const char *summary, const cp_option *opts,
                    size_t count, int argc, char **argv);

/* The common start of every binary: logging for `component`, the options
 * parsed, and the level of *log_level (an option of the table) applied.
 * Returns -1 to go on, or the exit code (0 after --help, 2 on bad input). */
int cp_config_start(const char *prog, const char *component, const char *summary,
                    const cp_option *opts, size_t count, int argc, char **argv,
                    const char *const *log_level);

/* Raises the soft descriptor limit to the hard one (connections are fds). */
void cp_raise_fd_limit(void);
/* The soft descriptor limit now (-1: unlimited or unknown). */
long cp_fd_limit(void);

/* Writes CLOUDPUSH_NAME for an option name into out. */
void cp_config_env_name(const char *name, char *out, size_t cap);

/* Splits "host:port" (host may be empty or "[v6]"); returns 0 on success. */
int cp_config_split_hostport(const char *text, char *host, size_t host_cap, int *port);

#endif
