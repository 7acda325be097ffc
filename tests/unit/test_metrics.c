/* Unit tests for common/metrics.c: Prometheus text exposition helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "procmetrics.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void test_family(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    cp_metric_family(&b, "cloudpush_connections", "gauge", "Open WebSocket connections.");
    assert_string_equal(cp_buf_cstr(&b), "# HELP cloudpush_connections Open WebSocket connections.\n"
                                         "# TYPE cloudpush_connections gauge\n");
    cp_buf_free(&b);
}

static void test_samples(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    cp_metric_sample(&b, "m", NULL, 0);
    cp_metric_sample(&b, "m", "", 42);
    cp_metric_sample(&b, "m", "type=\"business\"", 7);
    cp_metric_sample(&b, "m", NULL, -3);
    cp_metric_sample(&b, "m", NULL, 1.5);
    cp_metric_sample(&b, "m", NULL, 0.25);
    /* Large integral counters are printed in full, not in exponent form. */
    cp_metric_sample(&b, "m", NULL, 123456789012.0);
    cp_metric_sample(&b, "m", NULL, 8999999999999999.0);
    assert_string_equal(cp_buf_cstr(&b), "m 0\n"
                                         "m 42\n"
                                         "m{type=\"business\"} 7\n"
                                         "m -3\n"
                                         "m 1.5\n"
                                         "m 0.25\n"
                                         "m 123456789012\n"
                                         "m 8999999999999999\n");
    cp_buf_free(&b);
}

static void test_simple(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    cp_metric_simple(&b, "cloudpush_up", "gauge", "Always 1.", 1);
    assert_string_equal(cp_buf_cstr(&b), "# HELP cloudpush_up Always 1.\n"
                                         "# TYPE cloudpush_up gauge\n"
                                         "cloudpush_up 1\n");
    cp_buf_free(&b);
}

static void test_special_values_parse(void **state)
{
    (void)state;
    /* Whatever the spelling, special values must come out as something a
     * float parser reads back. */
    const double values[] = {INFINITY, -INFINITY, 1e20};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        cp_buf b;
        cp_buf_init(&b);
        cp_metric_sample(&b, "m", NULL, values[i]);
        const char *s = cp_buf_cstr(&b);
        assert_memory_equal(s, "m ", 2);
        char *end = NULL;
        double back = strtod(s + 2, &end);
        assert_string_equal(end, "\n");
        assert_true(back == values[i]);
        cp_buf_free(&b);
    }
}

static void test_histogram(void **state)
{
    (void)state;
    static cp_histogram h; /* zero-initialised */
    cp_histogram_observe_us(&h, 0);        /* 0 s        -> le 0.0005 */
    cp_histogram_observe_us(&h, 500);      /* 0.0005 s   -> le 0.0005 (inclusive) */
    cp_histogram_observe_us(&h, 501);      /* -> le 0.001 */
    cp_histogram_observe_us(&h, 100000);   /* 0.1 s      -> le 0.1 */
    cp_histogram_observe_us(&h, 1000000);  /* 1 s        -> le 1 */
    cp_histogram_observe_us(&h, 10000000); /* 10 s       -> le 10 */
    cp_histogram_observe_us(&h, 10000001); /* -> +Inf */
    cp_buf b;
    cp_buf_init(&b);
    cp_histogram_render(&b, "cp_lat_seconds", "Latency.", &h);
    assert_string_equal(cp_buf_cstr(&b), "# HELP cp_lat_seconds Latency.\n"
                                         "# TYPE cp_lat_seconds histogram\n"
                                         "cp_lat_seconds_bucket{le=\"0.0005\"} 2\n"
                                         "cp_lat_seconds_bucket{le=\"0.001\"} 3\n"
                                         "cp_lat_seconds_bucket{le=\"0.0025\"} 3\n"
                                         "cp_lat_seconds_bucket{le=\"0.005\"} 3\n"
                                         "cp_lat_seconds_bucket{le=\"0.01\"} 3\n"
                                         "cp_lat_seconds_bucket{le=\"0.025\"} 3\n"
                                         "cp_lat_seconds_bucket{le=\"0.05\"} 3\n"
                                         "cp_lat_seconds_bucket{le=\"0.1\"} 4\n"
                                         "cp_lat_seconds_bucket{le=\"0.25\"} 4\n"
                                         "cp_lat_seconds_bucket{le=\"0.5\"} 4\n"
                                         "cp_lat_seconds_bucket{le=\"1\"} 5\n"
                                         "cp_lat_seconds_bucket{le=\"2.5\"} 5\n"
                                         "cp_lat_seconds_bucket{le=\"5\"} 5\n"
                                         "cp_lat_seconds_bucket{le=\"10\"} 6\n"
                                         "cp_lat_seconds_bucket{le=\"+Inf\"} 7\n"
                                         "cp_lat_seconds_sum 21.101002\n"
                                         "cp_lat_seconds_count 7\n");
    cp_buf_free(&b);
}

static void test_histogram_empty(void **state)
{
    (void)state;
    static cp_histogram h;
    cp_buf b;
    cp_buf_init(&b);
    cp_histogram_render(&b, "h", "H.", &h);
    const char *s = cp_buf_cstr(&b);
    assert_non_null(strstr(s, "h_bucket{le=\"+Inf\"} 0\n"));
    assert_non_null(strstr(s, "h_sum 0.000000\nh_count 0\n"));
    cp_buf_free(&b);
}

/* Regression (fixed; common/metrics.c, cp_metric_sample, the "%.6g" branch):
 * non-integral values are printed with only 6 significant digits, so
 * e.g. a latency sum of 123456.789 s is exported as "123457" and
 * 1234567.5 as "1.23457e+06"; Prometheus rate() over such a series is
 * quantised. Expected: a representation that reads back as the same
 * double (e.g. "%.17g" or shortest round-trip form). */
static void test_regression_non_integral_precision(void **state)
{
    (void)state;
    const double values[] = {123456.789, 1234567.5, 0.1234567};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        cp_buf b;
        cp_buf_init(&b);
        cp_metric_sample(&b, "m", NULL, values[i]);
        const char *s = cp_buf_cstr(&b);
        double back = strtod(s + 2, NULL);
        if (back != values[i])
            print_error("%.17g exported as '%.*s'\n", values[i], (int)b.len - 1, s);
        cp_buf_free(&b);
        assert_true(back == values[i]);
    }
}

/* The value of an unlabelled sample "name value" in text; fails if absent. */
static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    if (!p)
        fail_msg("no sample %s in:\n%s", name, text);
    return strtod(p + strlen(key), NULL);
}

static void test_process_metrics(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    cp_metrics_process(&b, "bridge");
    assert_false(b.failed);
    assert_non_null(strstr(b.data, "cloudpush_build_info{program=\"bridge\",version=\""));
    assert_non_null(strstr(b.data, "# TYPE process_cpu_seconds_total counter\n"));
    double rss = sample(b.data, "process_resident_memory_bytes");
    double vsz = sample(b.data, "process_virtual_memory_bytes");
    assert_true(rss > 100 * 1024 && rss <= vsz);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(sample(b.data, "process_max_fds") == (double)rl.rlim_cur);
    /* Opening a descriptor is seen by the next scrape. */
    double fds = sample(b.data, "process_open_fds");
    assert_true(fds >= 3);
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    cp_buf_reset(&b);
    cp_metrics_process(&b, "bridge");
    assert_true(sample(b.data, "process_open_fds") == fds + 1);
    close(fd);
    /* Started within the last minute (this test process), not at boot. */
    double started = sample(b.data, "process_start_time_seconds");
    double now = (double)time(NULL);
    assert_true(started <= now + 1 && started > now - 60);
    assert_true(sample(b.data, "process_cpu_seconds_total") >= 0);
    cp_buf_free(&b);
}

static cp_merge_mode merge_mode(const char *name, size_t len)
{
    if (len == 6 && memcmp(name, "uptime", 6) == 0)
        return CP_MERGE_MAX;
    if (len == 2 && memcmp(name, "up", 2) == 0)
        return CP_MERGE_MIN;
    return CP_MERGE_SUM;
}

/* The workers' /metrics: samples summed by name and labels, # lines once,
 * the first text's order, per-metric max/min, a cut-off last line ignored. */
static void test_merge(void **state)
{
    (void)state;
    const char *a = "# HELP hits Hits.\n# TYPE hits counter\nhits{k=\"x\"} 3\nhits{k=\"y\"} 1\n"
                    "uptime 10.5\nup 1\n";
    const char *b = "# HELP hits Hits.\n# TYPE hits counter\nhits{k=\"x\"} 4\nhits{k=\"z\"} 2\n"
                    "uptime 7\nup 0\nhalf";
    const char *texts[] = {a, b};
    size_t lens[] = {strlen(a), strlen(b)};
    cp_buf out;
    cp_buf_init(&out);
    assert_int_equal(cp_metrics_merge(&out, texts, lens, 2, merge_mode), 0);
    assert_string_equal(cp_buf_cstr(&out), "# HELP hits Hits.\n# TYPE hits counter\n"
                                           "hits{k=\"x\"} 7\nhits{k=\"y\"} 1\n"
                                           "uptime 10.5\nup 0\nhits{k=\"z\"} 2\n");
    cp_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_process_metrics),
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_special_values_parse),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_histogram_empty),
        cmocka_unit_test(test_regression_non_integral_precision),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
