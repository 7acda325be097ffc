#include "addrlimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

/* Longest textual address CivetWeb writes (IPv6 with scope fits). */
#define ADDR_MAX 64

typedef struct {
    char address[ADDR_MAX];
    unsigned open;
    UT_hash_handle hh;
} addr_entry;

struct addr_limit {
    pthread_mutex_t lock;
    addr_entry *by_address;
};

addr_limit *addr_limit_new(void)
{
    addr_limit *l = calloc(1, sizeof *l);
    if (l)
        pthread_mutex_init(&l->lock, NULL);
    return l;
}

void addr_limit_free(addr_limit *l)
{
    if (!l)
        return;
    addr_entry *e, *tmp;
    HASH_ITER(hh, l->by_address, e, tmp)
    {
        HASH_DEL(l->by_address, e);
        free(e);
    }
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static addr_entry *find(addr_limit *l, const char *address)
{
    addr_entry *e = NULL;
    HASH_FIND_STR(l->by_address, address, e);
    return e;
}

void addr_limit_open(addr_limit *l, const char *address)
{
    if (strlen(address) >= ADDR_MAX)
        return; /* cannot happen with CivetWeb's buffer; never count it */
    pthread_mutex_lock(&l->lock);
    addr_entry *e = find(l, address);
    if (!e && (e = calloc(1, sizeof *e)) != NULL) {
        strcpy(e->address, address);
        HASH_ADD_STR(l->by_address, address, e);
    }
    if (e)
        e->open++;
    pthread_mutex_unlock(&l->lock);
}

void addr_limit_close(addr_limit *l, const char *address)
{
    pthread_mutex_lock(&l->lock);
    addr_entry *e = find(l, address);
    if (e && --e->open == 0) {
        HASH_DEL(l->by_address, e);
        free(e);
    }
    pthread_mutex_unlock(&l->lock);
}

unsigned addr_limit_count(addr_limit *l, const char *address)
{
    pthread_mutex_lock(&l->lock);
    addr_entry *e = find(l, address);
    unsigned n = e ? e->open : 0;
    pthread_mutex_unlock(&l->lock);
    return n;
}
