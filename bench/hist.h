/* Log-bucketed latency histogram: 16 sub-buckets per power of two, so a
 * reported percentile is at most 6.25 % above the true value (the upper
 * edge of its bucket, capped by the exact maximum). Values are ns. Plain
 * struct of counters so it can live in shared memory and be summed. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_BUCKETS 1024

typedef struct {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t b[HIST_BUCKETS];
} hist;

void hist_reset(hist *h);
void hist_add(hist *h, uint64_t v);
void hist_merge(hist *into, const hist *from);
/* q in [0,1]; 0 when empty. */
uint64_t hist_quantile(const hist *h, double q);
/* Bucket index and the bounds of a bucket (for the self-test). */
unsigned hist_index(uint64_t v);
uint64_t hist_upper(unsigned idx);

#endif
