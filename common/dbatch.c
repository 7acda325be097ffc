#include "dbatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <MQTTAsync.h>

#define MAGIC_LEN (sizeof CP_DBATCH_MAGIC - 1)
/* A channel id is at most 128 characters; a length at most 10 digits. */
#define CHANNEL_MAX 128
#define LENGTH_DIGITS_MAX 10

int cp_dbatch_next(const char *payload, size_t len, size_t *at, cp_dbatch_item *out)
{
    size_t i = *at;
    if (i == 0) {
        if (len < MAGIC_LEN || memcmp(payload, CP_DBATCH_MAGIC, MAGIC_LEN) != 0)
            return -1;
        i = MAGIC_LEN;
    }
    if (i == len) {
        *at = i;
        return 0;
    }
    /* <channel> SP */
    size_t start = i;
    while (i < len && payload[i] != ' ' && i - start < CHANNEL_MAX)
        i++;
    if (i == len || payload[i] != ' ' || i == start)
        return -1;
    out->channel = payload + start;
    out->channel_len = i - start;
    i++;
    /* <length> LF */
    size_t n = 0, digits = 0;
    while (i < len && payload[i] >= '0' && payload[i] <= '9' && digits < LENGTH_DIGITS_MAX) {
        n = n * 10 + (size_t)(payload[i] - '0');
        i++;
        digits++;
    }
    if (!digits || i == len || payload[i] != '\n')
        return -1;
    i++;
    /* <envelope> LF */
    if (n > len - i || len - i - n < 1 || payload[i + n] != '\n')
        return -1;
    out->envelope = payload + i;
    out->len = n;
    *at = i + n + 1;
    return 1;
}

void cp_dbatch_init(cp_dbatch *d)
{
    memset(d, 0, sizeof *d);
    cp_buf_init(&d->payload);
}

void cp_dbatch_free(cp_dbatch *d)
{
    cp_buf_free(&d->payload);
    free(d->ops);
    memset(d, 0, sizeof *d);
}

int cp_dbatch_add(cp_dbatch *d, const char *channel, const char *envelope, size_t len,
                  cp_bus_op *op)
{
    if (op && d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        cp_bus_op **grown = realloc(d->ops, cap * sizeof *grown);
        if (!grown)
            return -1;
        d->ops = grown;
        d->cap = cap;
    }
    cp_buf *p = &d->payload;
    size_t mark = p->len;
    if (mark == 0)
        cp_buf_puts(p, CP_DBATCH_MAGIC);
    cp_buf_printf(p, "%s %zu\n", channel ? channel : "*", len);
    cp_buf_append(p, envelope, len);
    cp_buf_putc(p, '\n');
    if (p->failed) {
        p->len = mark;
        p->failed = 0;
        return -1;
    }
    if (op)
        d->ops[d->count++] = op;
    d->items++;
    return 0;
}

/* One publish completing many ops. */
typedef struct {
    cp_bus_op op; /* first: the bus hands this back */
    size_t count;
    cp_bus_op *ops[];
} batch_op;

static void complete_all(cp_bus_op **ops, size_t count, int ok, int code)
{
    for (size_t i = 0; i < count; i++)
        ops[i]->done(ops[i], ok, code);
}

static void batch_done(cp_bus_op *op, int ok, int code)
{
    batch_op *b = (batch_op *)op;
    complete_all(b->ops, b->count, ok, code);
    free(b);
}

static void empty(cp_dbatch *d)
{
    cp_buf_reset(&d->payload);
    d->count = 0;
    d->items = 0;
}

int cp_dbatch_publish(cp_dbatch *d, cp_bus *bus, const char *topic)
{
    if (d->payload.len == 0)
        return 0;
    batch_op *op = calloc(1, sizeof *op + d->count * sizeof op->ops[0]);
    if (!op)
        return MQTTASYNC_FAILURE;
    op->op.done = batch_done;
    op->count = d->count;
    if (d->count)
        memcpy(op->ops, d->ops, d->count * sizeof op->ops[0]);
    int rc = cp_bus_publish(bus, topic, d->payload.data, d->payload.len, 1, &op->op);
    if (rc != 0) {
        free(op);
        return rc;
    }
    empty(d);
    return 0;
}

void cp_dbatch_fail(cp_dbatch *d, int code)
{
    complete_all(d->ops, d->count, 0, code);
    empty(d);
}
