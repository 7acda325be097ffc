#include "metrics.h"

#include <math.h>
#include <stdatomic.h>

void cp_metric_family(cp_buf *b, const char *name, const char *type, const char *help)
{
    cp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void cp_metric_sample(cp_buf *b, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        cp_buf_printf(b, "%s{%s} ", name, labels);
    else
        cp_buf_printf(b, "%s ", name);
    if (value == floor(value) && fabs(value) < 9e15)
        cp_buf_printf(b, "%.0f\n", value);
    else
        cp_buf_printf(b, "%.15g\n", value);
}

void cp_metric_simple(cp_buf *b, const char *name, const char *type, const char *help,
                      double value)
{
    cp_metric_family(b, name, type, help);
    cp_metric_sample(b, name, NULL, value);
}

static const double bucket_bounds[CP_HISTOGRAM_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void cp_histogram_observe_us(cp_histogram *h, uint64_t micros)
{
    double s = (double)micros / 1e6;
    size_t i = 0;
    while (i < CP_HISTOGRAM_BUCKETS && s > bucket_bounds[i])
        i++;
    atomic_fetch_add(&h->counts[i], 1);
    atomic_fetch_add(&h->sum_us, micros);
    atomic_fetch_add(&h->total, 1);
}

void cp_histogram_render(cp_buf *b, const char *name, const char *help, cp_histogram *h)
{
    cp_metric_family(b, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= CP_HISTOGRAM_BUCKETS; i++) {
        cumulative += atomic_load(&h->counts[i]);
        if (i < CP_HISTOGRAM_BUCKETS)
            cp_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_bounds[i],
                          (unsigned long long)cumulative);
        else
            cp_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name,
                          (unsigned long long)cumulative);
    }
    cp_buf_printf(b, "%s_sum %.6f\n%s_count %llu\n", name,
                  (double)atomic_load(&h->sum_us) / 1e6, name,
                  (unsigned long long)atomic_load(&h->total));
}
