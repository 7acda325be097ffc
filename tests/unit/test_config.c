/* Unit tests for common/config.c: flags, CLOUDPUSH_* environment variables,
 * --help and host:port splitting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* ---- option table shared by the tests ---------------------------------- */

static const char *o_listen;
static long o_max_clients;
static int o_verbose;
static const char *o_password;
static long o_offset;

static const cp_option opts[] = {
    {"listen", CP_OPT_STRING, &o_listen, "HOST:PORT", "Address to listen on", 0, 0, 0},
    {"max-clients", CP_OPT_INT, &o_max_clients, "N", "Connection limit", 1, 100000, 0},
    {"verbose", CP_OPT_BOOL, &o_verbose, NULL, "Log more", 0, 0, 0},
    {"mqtt-password", CP_OPT_STRING, &o_password, "SECRET", "Broker password", 0, 0, 1},
    {"offset", CP_OPT_INT, &o_offset, NULL, "Signed value", -10, 10, 0},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char *const env_names[] = {"CLOUDPUSH_LISTEN", "CLOUDPUSH_MAX_CLIENTS",
                                        "CLOUDPUSH_VERBOSE", "CLOUDPUSH_MQTT_PASSWORD",
                                        "CLOUDPUSH_OFFSET"};

static int reset(void **state)
{
    (void)state;
    o_listen = "0.0.0.0:8080";
    o_max_clients = 1000;
    o_verbose = 0;
    o_password = NULL;
    o_offset = 0;
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
    return 0;
}

/* Output printed by the last parse(), stdout and stderr together. */
static char captured[65536];

/* Runs cp_config_parse with stdout and stderr captured into `captured`, so
 * --help and error messages neither clutter the test log nor get lost. */
static int parse_argv(int argc, char **argv)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
    assert_true(saved_out >= 0 && saved_err >= 0);
    dup2(fileno(f), STDOUT_FILENO);
    dup2(fileno(f), STDERR_FILENO);
    int rc = cp_config_parse("myprog", "Test program summary.", opts, NOPTS, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);
    rewind(f);
    size_t n = fread(captured, 1, sizeof captured - 1, f);
    captured[n] = '\0';
    fclose(f);
    return rc;
}

#define PARSE(...)                                                                                \
    parse_argv((int)(sizeof((char *[]){"myprog", __VA_ARGS__}) / sizeof(char *)),                 \
               (char *[]){"myprog", __VA_ARGS__})
#define PARSE_NONE() parse_argv(1, (char *[]){"myprog", NULL})

/* ---- env names ---------------------------------------------------------- */

static void test_env_name(void **state)
{
    (void)state;
    char out[128];
    cp_config_env_name("listen", out, sizeof out);
    assert_string_equal(out, "CLOUDPUSH_LISTEN");
    cp_config_env_name("max-clients", out, sizeof out);
    assert_string_equal(out, "CLOUDPUSH_MAX_CLIENTS");
    cp_config_env_name("mqtt-tls-ca-file", out, sizeof out);
    assert_string_equal(out, "CLOUDPUSH_MQTT_TLS_CA_FILE");
    cp_config_env_name("Mixed_case9", out, sizeof out);
    assert_string_equal(out, "CLOUDPUSH_MIXED_CASE9");
    /* Truncated to the buffer, always terminated. */
    cp_config_env_name("max-clients", out, 12);
    assert_string_equal(out, "CLOUDPUSH_M");
    cp_config_env_name("max-clients", out, 5);
    assert_string_equal(out, "CLOU");
}

/* ---- defaults, environment, flags -------------------------------------- */

static void test_defaults_kept(void **state)
{
    (void)state;
    assert_int_equal(PARSE_NONE(), CP_CONFIG_OK);
    assert_string_equal(o_listen, "0.0.0.0:8080");
    assert_int_equal(o_max_clients, 1000);
    assert_int_equal(o_verbose, 0);
    assert_null(o_password);
    assert_string_equal(captured, "");
}

static void test_env_values(void **state)
{
    (void)state;
    setenv("CLOUDPUSH_LISTEN", "127.0.0.1:9000", 1);
    setenv("CLOUDPUSH_MAX_CLIENTS", "42", 1);
    setenv("CLOUDPUSH_VERBOSE", "true", 1);
    setenv("CLOUDPUSH_MQTT_PASSWORD", "hunter2", 1);
    setenv("CLOUDPUSH_OFFSET", "-10", 1);
    assert_int_equal(PARSE_NONE(), CP_CONFIG_OK);
    assert_string_equal(o_listen, "127.0.0.1:9000");
    assert_int_equal(o_max_clients, 42);
    assert_int_equal(o_verbose, 1);
    assert_string_equal(o_password, "hunter2");
    assert_int_equal(o_offset, -10);
}

static void test_flag_overrides_env(void **state)
{
    (void)state;
    setenv("CLOUDPUSH_LISTEN", "env:1", 1);
    setenv("CLOUDPUSH_MAX_CLIENTS", "42", 1);
    setenv("CLOUDPUSH_VERBOSE", "true", 1);
    assert_int_equal(PARSE("--listen=flag:2", "--max-clients", "7", "--verbose=false"),
                     CP_CONFIG_OK);
    assert_string_equal(o_listen, "flag:2");
    assert_int_equal(o_max_clients, 7);
    assert_int_equal(o_verbose, 0);
}

static void test_equals_and_separate_forms(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--listen", "h:1", "--max-clients=99"), CP_CONFIG_OK);
    assert_string_equal(o_listen, "h:1");
    assert_int_equal(o_max_clients, 99);

    reset(NULL);
    assert_int_equal(PARSE("--listen=h:2", "--max-clients", "100000"), CP_CONFIG_OK);
    assert_string_equal(o_listen, "h:2");
    assert_int_equal(o_max_clients, 100000);

    /* Only the first '=' separates; the value may be empty. */
    reset(NULL);
    assert_int_equal(PARSE("--listen=a=b"), CP_CONFIG_OK);
    assert_string_equal(o_listen, "a=b");
    assert_int_equal(PARSE("--listen="), CP_CONFIG_OK);
    assert_string_equal(o_listen, "");

    /* The separate form takes the next argument even if it looks like a
     * flag or a negative number. */
    reset(NULL);
    assert_int_equal(PARSE("--offset", "-5"), CP_CONFIG_OK);
    assert_int_equal(o_offset, -5);
    assert_int_equal(PARSE("--listen", "--verbose"), CP_CONFIG_OK);
    assert_string_equal(o_listen, "--verbose");
    assert_int_equal(o_verbose, 0);

    /* The last occurrence wins. */
    assert_int_equal(PARSE("--listen=a", "--listen", "b"), CP_CONFIG_OK);
    assert_string_equal(o_listen, "b");
}

static void test_bool_forms(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--verbose"), CP_CONFIG_OK);
    assert_int_equal(o_verbose, 1);

    /* A bare bool flag does not consume the next argument. */
    reset(NULL);
    assert_int_equal(PARSE("--verbose", "--max-clients=3"), CP_CONFIG_OK);
    assert_int_equal(o_verbose, 1);
    assert_int_equal(o_max_clients, 3);

    static const struct {
        const char *text;
        int value;
    } forms[] = {{"1", 1},     {"true", 1}, {"TRUE", 1},  {"yes", 1}, {"On", 1},
                 {"0", 0},     {"false", 0}, {"FALSE", 0}, {"no", 0},  {"off", 0}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--verbose=%s", forms[i].text);
        o_verbose = !forms[i].value;
        assert_int_equal(PARSE(arg), CP_CONFIG_OK);
        assert_int_equal(o_verbose, forms[i].value);

        reset(NULL);
        o_verbose = !forms[i].value;
        setenv("CLOUDPUSH_VERBOSE", forms[i].text, 1);
        assert_int_equal(PARSE_NONE(), CP_CONFIG_OK);
        assert_int_equal(o_verbose, forms[i].value);
        reset(NULL);
    }

    /* env false, flag alone: true */
    setenv("CLOUDPUSH_VERBOSE", "false", 1);
    assert_int_equal(PARSE("--verbose"), CP_CONFIG_OK);
    assert_int_equal(o_verbose, 1);
}

static void test_bool_invalid(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--verbose=maybe"), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "verbose"));
    assert_int_equal(PARSE("--verbose="), CP_CONFIG_ERROR);
    setenv("CLOUDPUSH_VERBOSE", "2", 1);
    assert_int_equal(PARSE_NONE(), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "CLOUDPUSH_VERBOSE"));
    /* "--verbose false": false is a stray positional argument. */
    unsetenv("CLOUDPUSH_VERBOSE");
    assert_int_equal(PARSE("--verbose", "false"), CP_CONFIG_ERROR);
}

static void test_int_errors(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--max-clients=0"), CP_CONFIG_ERROR); /* below min 1 */
    assert_non_null(strstr(captured, "between 1 and 100000"));
    assert_int_equal(PARSE("--max-clients=100001"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--offset=-11"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--offset=11"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--max-clients=12abc"), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "integer"));
    assert_int_equal(PARSE("--max-clients=abc"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--max-clients="), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--max-clients=1.5"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--max-clients=99999999999999999999999"), CP_CONFIG_ERROR);
    /* Boundaries are inclusive. */
    assert_int_equal(PARSE("--max-clients=1"), CP_CONFIG_OK);
    assert_int_equal(o_max_clients, 1);
    assert_int_equal(PARSE("--offset=10"), CP_CONFIG_OK);
    assert_int_equal(o_offset, 10);
    /* A rejected value leaves the destination alone. */
    assert_int_equal(PARSE("--max-clients=0"), CP_CONFIG_ERROR);
    assert_int_equal(o_max_clients, 1);

    setenv("CLOUDPUSH_MAX_CLIENTS", "500000", 1);
    assert_int_equal(PARSE_NONE(), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "CLOUDPUSH_MAX_CLIENTS"));
    setenv("CLOUDPUSH_MAX_CLIENTS", "ten", 1);
    assert_int_equal(PARSE_NONE(), CP_CONFIG_ERROR);
}

static void test_missing_value(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--listen"), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "needs a value"));
    assert_int_equal(PARSE("--verbose", "--max-clients"), CP_CONFIG_ERROR);
}

static void test_unknown_and_positional(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--nope"), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "unknown option"));
    assert_int_equal(PARSE("--nope=1"), CP_CONFIG_ERROR);
    /* No prefix matching. */
    assert_int_equal(PARSE("--list=x"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--listenx=x"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--LISTEN=x"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--max_clients=3"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("--"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("-v"), CP_CONFIG_ERROR);
    assert_int_equal(PARSE("positional"), CP_CONFIG_ERROR);
    assert_non_null(strstr(captured, "unexpected argument"));
    /* An error stops parsing: later flags are not applied. */
    assert_int_equal(PARSE("--nope", "--listen=late"), CP_CONFIG_ERROR);
    assert_string_equal(o_listen, "0.0.0.0:8080");
}

static void test_help(void **state)
{
    (void)state;
    o_password = "hunter2";
    assert_int_equal(PARSE("--help"), CP_CONFIG_EXIT);
    assert_non_null(strstr(captured, "Usage: myprog [OPTIONS]"));
    assert_non_null(strstr(captured, "Test program summary."));
    assert_non_null(strstr(captured, "--listen HOST:PORT"));
    assert_non_null(strstr(captured, "(default: 0.0.0.0:8080)"));
    assert_non_null(strstr(captured, "env: CLOUDPUSH_LISTEN"));
    assert_non_null(strstr(captured, "--max-clients N"));
    assert_non_null(strstr(captured, "(default: 1000)"));
    assert_non_null(strstr(captured, "env: CLOUDPUSH_MAX_CLIENTS"));
    assert_non_null(strstr(captured, "--verbose[=BOOL]"));
    assert_non_null(strstr(captured, "(default: false)"));
    assert_non_null(strstr(captured, "--offset VALUE"));
    assert_non_null(strstr(captured, "env: CLOUDPUSH_MQTT_PASSWORD"));
    /* Secrets are never printed. */
    assert_null(strstr(captured, "hunter2"));
    assert_non_null(strstr(captured, "(default: set)"));
    assert_non_null(strstr(captured, "--help"));
    assert_non_null(strstr(captured, "--version"));

    /* Help shows the effective value, environment included. */
    setenv("CLOUDPUSH_MAX_CLIENTS", "77", 1);
    assert_int_equal(PARSE("-h"), CP_CONFIG_EXIT);
    assert_non_null(strstr(captured, "(default: 77)"));

    /* Help stops parsing, even before a bad flag. */
    assert_int_equal(PARSE("--help", "--nope"), CP_CONFIG_EXIT);
}

static void test_version(void **state)
{
    (void)state;
    assert_int_equal(PARSE("--version"), CP_CONFIG_EXIT);
    assert_memory_equal(captured, "myprog ", 7);
    assert_true(strlen(captured) > 8);
    assert_int_equal(captured[strlen(captured) - 1], '\n');
}

/* ---- host:port ------------------------------------------------------------ */

static void hp_ok(const char *text, const char *host, int port)
{
    char h[64];
    int p = -42;
    assert_int_equal(cp_config_split_hostport(text, h, sizeof h, &p), 0);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
}

static void hp_bad(const char *text)
{
    char h[64];
    int p = -42;
    assert_int_equal(cp_config_split_hostport(text, h, sizeof h, &p), -1);
    assert_int_equal(p, -42);
}

static void test_split_hostport(void **state)
{
    (void)state;
    hp_ok("localhost:8080", "localhost", 8080);
    hp_ok("127.0.0.1:1883", "127.0.0.1", 1883);
    hp_ok("[::1]:80", "::1", 80);
    hp_ok("[fe80::1%eth0]:9001", "fe80::1%eth0", 9001);
    hp_ok("[::]:0", "::", 0);
    hp_ok(":9001", "", 9001);
    hp_ok("0.0.0.0:65535", "0.0.0.0", 65535);

    hp_bad("localhost");
    hp_bad("");
    hp_bad("host:");
    hp_bad("host:abc");
    hp_bad("host:80x");
    hp_bad("host:65536");
    hp_bad("host:-1");
    hp_bad("host:99999999999999999999");
    hp_bad("[::1]");
    hp_bad(":");
}

static void test_split_hostport_host_too_long(void **state)
{
    (void)state;
    char h[5];
    int p = 0;
    assert_int_equal(cp_config_split_hostport("abcd:1", h, sizeof h, &p), 0);
    assert_string_equal(h, "abcd");
    assert_int_equal(cp_config_split_hostport("abcde:1", h, sizeof h, &p), -1);
    assert_int_equal(cp_config_split_hostport("[abcd]:1", h, sizeof h, &p), 0);
    assert_string_equal(h, "abcd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_name),
        cmocka_unit_test_setup(test_defaults_kept, reset),
        cmocka_unit_test_setup(test_env_values, reset),
        cmocka_unit_test_setup(test_flag_overrides_env, reset),
        cmocka_unit_test_setup(test_equals_and_separate_forms, reset),
        cmocka_unit_test_setup(test_bool_forms, reset),
        cmocka_unit_test_setup(test_bool_invalid, reset),
        cmocka_unit_test_setup(test_int_errors, reset),
        cmocka_unit_test_setup(test_missing_value, reset),
        cmocka_unit_test_setup(test_unknown_and_positional, reset),
        cmocka_unit_test_setup(test_help, reset),
        cmocka_unit_test_setup(test_version, reset),
        cmocka_unit_test(test_split_hostport),
        cmocka_unit_test(test_split_hostport_host_too_long),
    };
    int rc = cmocka_run_group_tests_name("config", tests, NULL, NULL);
    reset(NULL);
    return rc;
}
