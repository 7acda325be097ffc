#include "metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

/* One line of the merge: a # line or a sample with its running value. */
typedef struct {
    const char *key; /* the line (# lines) or "name{labels}" */
    size_t key_len;
    double value;
    int sample;
    cp_merge_mode mode;
} merge_line;

static int merge_find(merge_line *lines, size_t n, size_t *index, size_t cap,
                      const char *key, size_t key_len)
{
    /* Open addressing over an index of line numbers + 1 (cap is a power of two). */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    size_t at = (size_t)h & (cap - 1);
    for (;;) {
        size_t v = index[at];
        if (!v) {
            index[at] = n + 1;
            return -1 - (int)at;
        }
        if (lines[v - 1].key_len == key_len && memcmp(lines[v - 1].key, key, key_len) == 0)
            return (int)(v - 1);
        at = (at + 1) & (cap - 1);
    }
}

int cp_metrics_merge(cp_buf *out, const char *const *texts, const size_t *lens, int n,
                     cp_merge_mode (*mode)(const char *name, size_t len))
{
    size_t total_lines = 0;
    for (int t = 0; t < n; t++)
        for (size_t i = 0; i < lens[t]; i++)
            total_lines += texts[t][i] == '\n';
    size_t cap = 16;
    while (cap < 2 * total_lines + 2)
        cap <<= 1;
    merge_line *lines = calloc(total_lines + 1, sizeof *lines);
    size_t *index = calloc(cap, sizeof *index);
    if (!lines || !index) {
        free(lines);
        free(index);
        return -1;
    }
    size_t count = 0;
    for (int t = 0; t < n; t++) {
        const char *p = texts[t], *end = texts[t] + lens[t];
        while (p < end) {
            const char *eol = memchr(p, '\n', (size_t)(end - p));
            if (!eol)
                break; /* a cut-off last line */
            size_t len = (size_t)(eol - p);
            const char *line = p;
            p = eol + 1;
            if (!len)
                continue;
            size_t key_len = len;
            double value = 0;
            int sample = line[0] != '#';
            if (sample) {
                const char *sp = memrchr(line, ' ', len);
                if (!sp)
                    continue;
                key_len = (size_t)(sp - line);
                char num[64];
                size_t nl = len - key_len - 1;
                if (nl >= sizeof num)
                    continue;
                memcpy(num, sp + 1, nl);
                num[nl] = '\0';
                value = strtod(num, NULL);
            }
            int at = merge_find(lines, count, index, cap, line, key_len);
            if (at < 0) {
                merge_line *m = &lines[count++];
                m->key = line;
                m->key_len = key_len;
                m->value = value;
                m->sample = sample;
                if (sample && mode) {
                    size_t name_len = 0;
                    while (name_len < key_len && line[name_len] != '{')
                        name_len++;
                    m->mode = mode(line, name_len);
                }
                continue;
            }
            merge_line *m = &lines[at];
            if (!m->sample)
                continue;
            if (m->mode == CP_MERGE_MAX)
                m->value = value > m->value ? value : m->value;
            else if (m->mode == CP_MERGE_MIN)
                m->value = value < m->value ? value : m->value;
            else
                m->value += value;
        }
    }
    for (size_t i = 0; i < count; i++) {
        merge_line *m = &lines[i];
        cp_buf_append(out, m->key, m->key_len);
        if (m->sample) {
            if (m->value == floor(m->value) && fabs(m->value) < 9e15)
                cp_buf_printf(out, " %.0f", m->value);
            else
                cp_buf_printf(out, " %.15g", m->value);
        }
        cp_buf_putc(out, '\n');
    }
    free(lines);
    free(index);
    return 0;
}
