/* Prometheus text exposition helpers. */
#ifndef CP_METRICS_H
#define CP_METRICS_H

#include <stdint.h>

#include "buf.h"

/* Writes the # HELP and # TYPE lines of one metric family. */
void cp_metric_family(cp_buf *b, const char *name, const char *type, const char *help);
/* Writes one sample; labels is NULL or e.g. "type=\"business\"". */
void cp_metric_sample(cp_buf *b, const char *name, const char *labels, double value);
/* Shorthand: family + one unlabelled sample. */
void cp_metric_simple(cp_buf *b, const char *name, const char *type, const char *help,
                      double value);

/* A latency histogram with fixed buckets (seconds), safe to observe from
 * any thread. */
#define CP_HISTOGRAM_BUCKETS 14
typedef struct {
    _Atomic uint64_t counts[CP_HISTOGRAM_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t sum_us;
    _Atomic uint64_t total;
} cp_histogram;

void cp_histogram_observe_us(cp_histogram *h, uint64_t micros);
void cp_histogram_render(cp_buf *b, const char *name, const char *help, cp_histogram *h);

/* How samples of one metric combine across processes (cp_metrics_merge). */
typedef enum { CP_MERGE_SUM = 0, CP_MERGE_MAX, CP_MERGE_MIN } cp_merge_mode;

/* Appends to out the merge of n Prometheus texts rendered by processes of
 * one service (the bridge's workers): each sample (name and labels) once,
 * combined with mode(name) (NULL: all summed); # lines once; the order of
 * first appearance. Returns 0, or -1 when memory is short. */
int cp_metrics_merge(cp_buf *out, const char *const *texts, const size_t *lens, int n,
                     cp_merge_mode (*mode)(const char *name, size_t len));

#endif
