#include "ratelimit.h"

void cp_bucket_init(cp_bucket *b, double burst, int64_t now_ms)
{
    b->tokens = burst;
    b->at_ms = now_ms;
}

void cp_bucket_refill(cp_bucket *b, double rate, double burst, int64_t now_ms)
{
    b->tokens += (double)(now_ms - b->at_ms) * rate / 1000.0;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at_ms = now_ms;
}

int cp_bucket_take(cp_bucket *b, double rate, double burst, int64_t now_ms)
{
    cp_bucket_refill(b, rate, burst, now_ms);
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}
