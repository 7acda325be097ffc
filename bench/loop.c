/* The epoll loop of one generator process: its share of the subscriber
 * WebSocket connections and, in process 0, the publisher connections (HTTP
 * keep-alive or MQTT over TCP). Everything is non-blocking; nothing here
 * sleeps except in epoll_pwait2. */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "mqttproto.h"
#include "wsproto.h"

#define GBUF_SIZE (256 * 1024)
#define MAX_MSG (1u << 20)
#define MAX_HEAD 16384
#define CLOSE_GRACE_NS (5ull * 1000000000ull)
#define PUB_TIMEOUT_NS (10ull * 1000000000ull)
#define MAX_SEQ (1u << 26)

enum { K_SUB = 1, K_HTTP, K_MQTT };
enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_READY, ST_CLOSING, ST_CLOSED, ST_FAILED };

typedef struct {
    uint8_t kind; /* first: epoll data points at a conn or a pconn */
    uint8_t state;
    uint8_t close_sent;
    uint8_t frag_op;
    uint8_t in_step;
    uint8_t want_out;
    uint8_t attempt;
    uint16_t close_code;
    int fd;
    uint32_t gidx;
    uint32_t recv;
    uint32_t max_seq;
    uint32_t bits_words;
    uint64_t t_start;
    uint64_t *bits;
    uint8_t *rbuf;
    uint32_t rlen, rcap;
    uint8_t *wbuf;
    uint32_t wlen, woff;
    uint8_t *frag;
    uint32_t fraglen;
    uint8_t *mbuf; /* MQTT byte stream carried in WebSocket messages */
    uint32_t mlen;
} conn;

typedef struct {
    uint8_t kind;
    uint8_t state;
    uint8_t want_out;
    int fd;
    int idx;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    int busy; /* HTTP: a request is outstanding */
    uint64_t t_sent;
    uint64_t t_used; /* HTTP: connected or last answered */
    uint32_t inflight; /* MQTT QoS 1 publishes without PUBACK */
    uint16_t next_pid;
    uint64_t *pid_ts;
} pconn;

static int P;
static int EP = -1;
static conn *C;
static uint32_t NC;
static uint8_t *GBUF;
static int last_cmd;
static int cur_step = -1;
static int step_on;
static uint64_t step_cpu0;
static uint64_t rng_state;

static struct {
    int active;
    uint32_t next, inflight, per_proc;
} CONN_RUN;

static struct {
    int active;
    uint64_t deadline;
    uint32_t n_closing;
} CLOSE_RUN;

static uint64_t last_scan_ns;

/* Publisher state (process 0). */
static pconn PC[MAX_PCONNS];
static int NPC;
static pubstat PS;
static struct {
    int active;
    int blocked; /* behind schedule with every connection busy: wait for answers */
    int step;
    uint32_t *targets;
    uint64_t n_targets;
} PUB;
static uint8_t *PBUF; /* request / packet under construction */
static size_t PBUF_CAP;

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_self_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void codecount_add(codecount *t, int code, uint64_t n)
{
    for (int i = 0; i < NCODES; i++) {
        if (t[i].n && t[i].code == code) {
            t[i].n += n;
            return;
        }
        if (!t[i].n) {
            t[i].code = code;
            t[i].n = n;
            return;
        }
    }
    t[NCODES - 1].n += n; /* overflow bucket */
}

static pstat *me(void)
{
    return &S->p[P];
}

/* ---------------------------------------------------------------- names */

/* The channel a connection subscribes to. */
static int chan_name(uint32_t gidx, char *out, size_t cap)
{
    int shared = O.shared_channel || (O.wl == WL_BROADCAST && O.sys != SYS_CLOUDPUSH);
    int n = shared ? snprintf(out, cap, "%sall", O.id_prefix)
                   : snprintf(out, cap, "%s%u", O.id_prefix, gidx);
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

/* Copies tmpl into out with the first {id} replaced by id. */
static int subst_id(const char *tmpl, const char *id, char *out, size_t cap)
{
    const char *m = strstr(tmpl, "{id}");
    int n = m ? snprintf(out, cap, "%.*s%s%s", (int)(m - tmpl), tmpl, id, m + 4)
              : snprintf(out, cap, "%s", tmpl);
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

static void conn_key(const conn *c, char key[25])
{
    uint8_t nonce[16];
    uint64_t a = splitmix(S->run_tag ^ ((uint64_t)c->gidx << 8) ^ c->attempt);
    uint64_t b = splitmix(a);
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    ws_make_key(nonce, key);
}

/* ---------------------------------------------------------------- epoll */

static void ep_set(int fd, void *ptr, uint32_t events, int add)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(EP, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0) {
        fprintf(stderr, "bench: epoll_ctl: %s\n", strerror(errno));
        exit(3);
    }
}

/* src: 0 for the kernel's choice, else a loopback source address index.
 * Spreading many connections over several source addresses keeps the
 * kernel's ephemeral port search short: with ~19k connections from one
 * address to one server port, __inet_hash_connect/__inet_check_established
 * took 70 % of the generator's CPU and connects slowed down 3x. */
static int tcp_connect(const struct sockaddr_in *addr, uint32_t src, int *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (src) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(0x7F000000u | (O.src_base + src - 1));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            *err = errno;
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

static int so_error(int fd)
{
    int e = 0;
    socklen_t l = sizeof e;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0)
        return errno;
    return e;
}

/* ------------------------------------------------------ subscriber conns */

static void conn_free_bufs(conn *c)
{
    free(c->rbuf);
    free(c->wbuf);
    free(c->frag);
    free(c->mbuf);
    free(c->bits);
    c->rbuf = c->wbuf = c->frag = c->mbuf = NULL;
    c->bits = NULL;
    c->rlen = c->rcap = c->wlen = c->woff = c->fraglen = c->mlen = c->bits_words = 0;
}

static void conn_close_fd(conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    conn_free_bufs(c);
}

static void set_first_error(const char *fmt_what, const char *detail)
{
    connstat *cs = &me()->cs;
    if (!cs->first_error[0])
        snprintf(cs->first_error, sizeof cs->first_error, "%s%s", fmt_what, detail);
}

/* A connection attempt that did not reach READY. */
static void conn_fail(conn *c, uint64_t *counter, const char *why)
{
    int was_pending = c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_OPEN;
    conn_close_fd(c);
    c->state = ST_FAILED;
    if (was_pending) {
        connstat *cs = &me()->cs;
        cs->failed++;
        (*counter)++;
        set_first_error("", why);
        if (CONN_RUN.inflight)
            CONN_RUN.inflight--;
    }
}

static void conn_ready(conn *c)
{
    uint64_t t = now_ns();
    connstat *cs = &me()->cs;
    c->state = ST_READY;
    cs->ready++;
    hist_add(&cs->lat, t - c->t_start);
    if (t > cs->last_ready_ns)
        cs->last_ready_ns = t;
    if (CONN_RUN.inflight)
        CONN_RUN.inflight--;
    atomic_fetch_add(&me()->open_now, 1);
}

/* The server closed (or the socket broke) a connection that was READY. */
static void conn_lost(conn *c, int code)
{
    if (c->state == ST_READY) {
        atomic_fetch_sub(&me()->open_now, 1);
        if (step_on && c->in_step) {
            me()->st.closes++;
            codecount_add(me()->st.codes, code, 1);
        } else {
            me()->cs.idle_closes++;
            codecount_add(me()->cs.idle_codes, code, 1);
        }
        conn_close_fd(c);
        c->state = ST_CLOSED;
    } else if (c->state == ST_CLOSING) {
        conn_close_fd(c);
        c->state = ST_CLOSED;
        if (CLOSE_RUN.n_closing)
            CLOSE_RUN.n_closing--;
    } else {
        char why[48];
        snprintf(why, sizeof why, "closed before ready (code %d)", code);
        conn_fail(c, &me()->cs.f_closed, why);
    }
}

static void conn_want_out(conn *c, int on)
{
    if (c->want_out == on)
        return;
    c->want_out = (uint8_t)on;
    ep_set(c->fd, c, EPOLLIN | (on ? EPOLLOUT : 0), 0);
}

static int conn_send(conn *c, const void *data, size_t n)
{
    const uint8_t *d = data;
    if (c->fd < 0)
        return -1;
    if (c->wlen == c->woff) {
        ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            w = 0;
        }
        if ((size_t)w == n)
            return 0;
        d += w;
        n -= (size_t)w;
        free(c->wbuf);
        c->wbuf = NULL;
        c->wlen = c->woff = 0;
    }
    uint8_t *nb = realloc(c->wbuf, c->wlen + n);
    if (!nb)
        return -1;
    memcpy(nb + c->wlen, d, n);
    c->wbuf = nb;
    c->wlen += (uint32_t)n;
    conn_want_out(c, 1);
    return 0;
}

static int conn_flush(conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->woff += (uint32_t)w;
    }
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = c->woff = 0;
    conn_want_out(c, 0);
    return 0;
}

static int ws_send(conn *c, int op, const void *payload, size_t n)
{
    uint8_t stackbuf[512];
    uint8_t *out = n + 14 <= sizeof stackbuf ? stackbuf : malloc(n + 14);
    if (!out)
        return -1;
    size_t fl = ws_build_frame(out, op, payload, n, (uint32_t)rnd());
    int r = conn_send(c, out, fl);
    if (out != stackbuf)
        free(out);
    return r;
}

static void ws_send_close(conn *c, int code)
{
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    c->close_sent = 1;
    ws_send(c, WS_OP_CLOSE, p, code ? 2 : 0);
}

static int conn_start(conn *c)
{
    connstat *cs = &me()->cs;
    conn_free_bufs(c);
    c->close_sent = 0;
    c->frag_op = 0;
    c->want_out = 1;
    c->close_code = 0;
    c->attempt++;
    c->t_start = now_ns();
    if (!cs->first_start_ns || c->t_start < cs->first_start_ns)
        cs->first_start_ns = c->t_start;
    cs->attempted++;
    int err = 0;
    const url_t *u = &O.ws[c->gidx % (uint32_t)O.n_ws];
    c->fd = tcp_connect(&u->addr, O.src_ips > 1 ? 1 + c->gidx % (uint32_t)O.src_ips : 0, &err);
    c->state = ST_CONNECTING;
    if (c->fd < 0) {
        conn_fail(c, &cs->f_connect, strerror(err));
        return -1;
    }
    ep_set(c->fd, c, EPOLLOUT | EPOLLIN, 1);
    return 0;
}

static void mqtt_sub_send(conn *c, const uint8_t *pkt, size_t n)
{
    ws_send(c, WS_OP_BINARY, pkt, n);
}

/* The opening handshake is done. */
static void conn_open(conn *c)
{
    c->state = ST_OPEN;
    if (O.sys == SYS_NCHAN) {
        conn_ready(c);
    } else if (O.sys == SYS_MOSQ) {
        char id[96];
        uint8_t pkt[256];
        snprintf(id, sizeof id, "%ss%u-%llx", O.id_prefix, c->gidx,
                 (unsigned long long)(S->run_tag & 0xffffff));
        size_t n = mqtt_connect(pkt, id, 0, 1);
        mqtt_sub_send(c, pkt, n);
    }
    /* cloudpush: READY when the CONNECTION envelope (msgType 0) arrives. */
}

static int parse_num(const uint8_t *p, size_t n, const char *key, long long *out)
{
    size_t kl = strlen(key);
    const uint8_t *k = memmem(p, n, key, kl);
    if (!k)
        return -1;
    const uint8_t *q = k + kl, *e = p + n;
    while (q < e && (*q == ' '))
        q++;
    int neg = 0;
    if (q < e && *q == '-') {
        neg = 1;
        q++;
    }
    if (q >= e || *q < '0' || *q > '9')
        return -1;
    long long v = 0;
    while (q < e && *q >= '0' && *q <= '9')
        v = v * 10 + (*q++ - '0');
    *out = neg ? -v : v;
    return 0;
}

/* A message carrying a benchmark payload. */
static void on_business(conn *c, const uint8_t *p, size_t n)
{
    stepstat *st = &me()->st;
    long long seq, step, ts, to;
    /* The fields follow "bseq" in the payload object: search from there. */
    const uint8_t *b = memmem(p, n, "\"bseq\":", 7);
    if (b) {
        n -= (size_t)(b - p);
        p = b;
    }
    if (!b || parse_num(p, n, "\"bseq\":", &seq) || parse_num(p, n, "\"bstep\":", &step) ||
        parse_num(p, n, "\"bts\":", &ts) || parse_num(p, n, "\"bto\":", &to) || seq < 0 ||
        seq >= MAX_SEQ || ts < 0) {
        st->bad++;
        return;
    }
    uint64_t t = now_ns();
    if (!step_on || step != cur_step || !c->in_step) {
        st->stale++;
        return;
    }
    if (to >= 0 && (uint64_t)to != c->gidx)
        st->misrouted++;
    uint32_t s = (uint32_t)seq;
    uint32_t w = s / 64;
    if (w >= c->bits_words) {
        uint32_t nw = c->bits_words ? c->bits_words : 4;
        while (nw <= w)
            nw *= 2;
        uint64_t *nb = realloc(c->bits, (size_t)nw * 8);
        if (!nb) {
            st->bad++;
            return;
        }
        memset(nb + c->bits_words, 0, (size_t)(nw - c->bits_words) * 8);
        c->bits = nb;
        c->bits_words = nw;
    }
    uint64_t m = 1ull << (s % 64);
    if (c->bits[w] & m) {
        st->dups++;
        return;
    }
    c->bits[w] |= m;
    if (c->recv && s < c->max_seq)
        st->reorder++;
    if (s > c->max_seq)
        c->max_seq = s;
    c->recv++;
    st->received++;
    atomic_fetch_add_explicit(&me()->recv_live, 1, memory_order_relaxed);
    uint64_t sent = S->t0 + (uint64_t)ts;
    uint64_t lat = t > sent ? t - sent : 0;
    hist_add(&st->lat, lat);
    uint64_t s0 = atomic_load_explicit(&S->step_start_rel, memory_order_relaxed);
    uint64_t dur = atomic_load_explicit(&S->step_dur_ns, memory_order_relaxed);
    static int traced;
    if (O.trace_slow_ms > 0 && lat > (uint64_t)(O.trace_slow_ms * 1e6) && traced < 50) {
        traced++;
        fprintf(stderr, "  slow: step %d conn %u seq %lld sent at +%.3f s, latency %.3f ms\n",
                cur_step, c->gidx, seq, ((double)(uint64_t)ts - (double)s0) / 1e9, (double)lat / 1e6);
    }
    if ((uint64_t)ts < s0 + dur / 3) {
        st->first_sum += lat;
        st->first_n++;
    } else if ((uint64_t)ts >= s0 + dur - dur / 3) {
        st->last_sum += lat;
        st->last_n++;
    }
    if (t > st->last_recv_ns)
        st->last_recv_ns = t;
}

/* MQTT packets from mosquitto inside WebSocket binary messages. */
static size_t mqtt_sub_packets(conn *c, const uint8_t *d, size_t n)
{
    size_t off = 0;
    while (off < n && c->fd >= 0) {
        mqtt_packet pk;
        int r = mqtt_parse(d + off, n - off, &pk);
        if (r == 0)
            break;
        if (r < 0) {
            conn_fail(c, &me()->cs.f_proto, "malformed MQTT packet");
            return n;
        }
        off += pk.total;
        if (pk.type == MQTT_CONNACK) {
            if (pk.body_len < 2 || pk.body[1] != 0) {
                conn_fail(c, &me()->cs.f_status, "CONNACK refused");
                return n;
            }
            char topic[256], ch[160];
            uint8_t pkt[320];
            chan_name(c->gidx, ch, sizeof ch);
            snprintf(topic, sizeof topic, "%s/%s", O.topic_prefix, ch);
            size_t pl = mqtt_subscribe(pkt, 1, topic, 0);
            mqtt_sub_send(c, pkt, pl);
        } else if (pk.type == MQTT_SUBACK) {
            if (pk.body_len < 3 || pk.body[2] == 0x80) {
                conn_fail(c, &me()->cs.f_status, "SUBACK refused");
                return n;
            }
            if (c->state == ST_OPEN)
                conn_ready(c);
        } else if (pk.type == MQTT_PUBLISH) {
            const uint8_t *topic, *payload;
            size_t tl, pl;
            uint16_t pid;
            if (mqtt_publish_fields(&pk, &topic, &tl, &pid, &payload, &pl) != 0) {
                me()->st.bad++;
                continue;
            }
            if ((pk.flags >> 1 & 3) == 1) {
                uint8_t ack[4];
                mqtt_sub_send(c, ack, mqtt_puback(ack, pid));
            }
            on_business(c, payload, pl);
        }
    }
    return off;
}

static void on_mqtt_bytes(conn *c, const uint8_t *d, size_t n)
{
    if (c->mlen == 0) {
        size_t used = mqtt_sub_packets(c, d, n);
        if (c->fd < 0 || used == n)
            return;
        c->mbuf = malloc(n - used);
        if (!c->mbuf)
            return;
        memcpy(c->mbuf, d + used, n - used);
        c->mlen = (uint32_t)(n - used);
        return;
    }
    uint8_t *nb = realloc(c->mbuf, c->mlen + n);
    if (!nb)
        return;
    memcpy(nb + c->mlen, d, n);
    c->mbuf = nb;
    c->mlen += (uint32_t)n;
    size_t used = mqtt_sub_packets(c, c->mbuf, c->mlen);
    if (c->fd < 0)
        return;
    memmove(c->mbuf, c->mbuf + used, c->mlen - used);
    c->mlen -= (uint32_t)used;
    if (!c->mlen) {
        free(c->mbuf);
        c->mbuf = NULL;
    }
}

/* A whole data message. */
static void on_message(conn *c, int op, const uint8_t *p, size_t n)
{
    if (op == WS_OP_TEXT && !ws_utf8_valid(p, n)) {
        ws_send_close(c, 1007);
        conn_lost(c, 1007);
        return;
    }
    switch (O.sys) {
    case SYS_CLOUDPUSH:
        if (c->state == ST_OPEN) {
            if (memmem(p, n, "\"msgType\":0", 11))
                conn_ready(c);
            else
                set_first_error("first message was not msgType 0: ", "");
            return;
        }
        on_business(c, p, n);
        break;
    case SYS_NCHAN:
        on_business(c, p, n);
        break;
    case SYS_MOSQ:
        if (op == WS_OP_BINARY)
            on_mqtt_bytes(c, p, n);
        else
            me()->st.bad++;
        break;
    }
}

static void on_frame(conn *c, const ws_frame *f, const uint8_t *p)
{
    size_t n = (size_t)f->len;
    switch (f->opcode) {
    case WS_OP_PING:
        ws_send(c, WS_OP_PONG, p, n);
        return;
    case WS_OP_PONG:
        return;
    case WS_OP_CLOSE: {
        int code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
        c->close_code = (uint16_t)code;
        if (!c->close_sent)
            ws_send_close(c, n >= 2 ? code : 0);
        conn_lost(c, code);
        return;
    }
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (c->frag_op) {
            ws_send_close(c, 1002);
            conn_lost(c, 1002);
            return;
        }
        if (f->fin) {
            on_message(c, f->opcode, p, n);
            return;
        }
        c->frag_op = (uint8_t)f->opcode;
        c->frag = malloc(n ? n : 1);
        if (!c->frag) {
            conn_lost(c, 1011);
            return;
        }
        memcpy(c->frag, p, n);
        c->fraglen = (uint32_t)n;
        return;
    case WS_OP_CONT: {
        if (!c->frag_op) {
            ws_send_close(c, 1002);
            conn_lost(c, 1002);
            return;
        }
        if (c->fraglen + n > MAX_MSG) {
            ws_send_close(c, 1009);
            conn_lost(c, 1009);
            return;
        }
        uint8_t *nb = realloc(c->frag, c->fraglen + n + 1);
        if (!nb) {
            conn_lost(c, 1011);
            return;
        }
        memcpy(nb + c->fraglen, p, n);
        c->frag = nb;
        c->fraglen += (uint32_t)n;
        if (f->fin) {
            int op = c->frag_op;
            uint8_t *m = c->frag;
            uint32_t ml = c->fraglen;
            c->frag = NULL;
            c->fraglen = 0;
            c->frag_op = 0;
            on_message(c, op, m, ml);
            free(m);
        }
        return;
    }
    }
}

/* Consumes what it can of d; returns the bytes used. */
static size_t conn_process(conn *c, const uint8_t *d, size_t n)
{
    size_t off = 0;
    if (c->state == ST_HANDSHAKE) {
        const uint8_t *e = memmem(d, n, "\r\n\r\n", 4);
        if (!e) {
            if (n > MAX_HEAD)
                conn_fail(c, &me()->cs.f_proto, "response head too long");
            return c->fd < 0 ? n : 0;
        }
        size_t hl = (size_t)(e - d) + 4;
        char key[25], why[96];
        int status = 0;
        conn_key(c, key);
        if (ws_check_response((const char *)d, hl, key, O.sys == SYS_MOSQ ? "mqtt" : NULL,
                              &status, why, sizeof why) != 0) {
            if (status && status != 101) {
                codecount_add(me()->cs.statuses, status, 1);
                conn_fail(c, &me()->cs.f_status, why);
            } else {
                conn_fail(c, &me()->cs.f_proto, why);
            }
            return n;
        }
        off = hl;
        conn_open(c);
    }
    while (off < n && c->fd >= 0) {
        ws_frame f;
        const char *why = NULL;
        int r = ws_parse_frame(d + off, n - off, &f, &why);
        if (r < 0) {
            set_first_error("protocol error: ", why);
            ws_send_close(c, 1002);
            conn_lost(c, 1002);
            return n;
        }
        if (r == 0) {
            if (f.hdr_len && f.len > MAX_MSG) {
                ws_send_close(c, 1009);
                conn_lost(c, 1009);
                return n;
            }
            break;
        }
        on_frame(c, &f, d + off + f.hdr_len);
        off += f.hdr_len + (size_t)f.len;
    }
    return c->fd < 0 ? n : off;
}

static void conn_readable(conn *c)
{
    for (int rounds = 0; rounds < 4 && c->fd >= 0; rounds++) {
        ssize_t r = recv(c->fd, GBUF, GBUF_SIZE, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (c->state == ST_READY || c->state == ST_CLOSING)
                conn_lost(c, 1006);
            else
                conn_fail(c, &me()->cs.f_closed, strerror(errno));
            return;
        }
        if (r == 0) {
            if (c->state == ST_READY || c->state == ST_CLOSING)
                conn_lost(c, 1006);
            else
                conn_fail(c, &me()->cs.f_closed, "connection closed during the handshake");
            return;
        }
        const uint8_t *d;
        size_t n;
        if (c->rlen) {
            if (c->rlen + (size_t)r > c->rcap) {
                size_t cap = c->rcap * 2;
                while (cap < c->rlen + (size_t)r)
                    cap *= 2;
                uint8_t *nb = realloc(c->rbuf, cap);
                if (!nb) {
                    conn_lost(c, 1011);
                    return;
                }
                c->rbuf = nb;
                c->rcap = (uint32_t)cap;
            }
            memcpy(c->rbuf + c->rlen, GBUF, (size_t)r);
            c->rlen += (uint32_t)r;
            d = c->rbuf;
            n = c->rlen;
        } else {
            d = GBUF;
            n = (size_t)r;
        }
        size_t used = conn_process(c, d, n);
        if (c->fd < 0)
            return;
        size_t left = n - used;
        if (left == 0) {
            free(c->rbuf);
            c->rbuf = NULL;
            c->rlen = c->rcap = 0;
        } else if (d == c->rbuf) {
            memmove(c->rbuf, c->rbuf + used, left);
            c->rlen = (uint32_t)left;
        } else {
            size_t cap = left < 1024 ? 1024 : left * 2;
            c->rbuf = malloc(cap);
            if (!c->rbuf) {
                conn_lost(c, 1011);
                return;
            }
            memcpy(c->rbuf, d + used, left);
            c->rlen = (uint32_t)left;
            c->rcap = (uint32_t)cap;
        }
        if ((size_t)r < GBUF_SIZE)
            return;
    }
}

static void conn_event(conn *c, uint32_t ev)
{
    if (c->state == ST_CONNECTING) {
        int e = so_error(c->fd);
        if (e) {
            conn_fail(c, &me()->cs.f_connect, strerror(e));
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        char id[160], path[640], req[1024], key[25];
        const url_t *u = &O.ws[c->gidx % (uint32_t)O.n_ws];
        chan_name(c->gidx, id, sizeof id);
        conn_key(c, key);
        int n = -1;
        if (subst_id(u->path, id, path, sizeof path) > 0)
            n = ws_build_request(req, sizeof req, u->hostport, path, key,
                                 O.sys == SYS_MOSQ ? "mqtt" : NULL);
        if (n < 0) {
            conn_fail(c, &me()->cs.f_proto, "request too long");
            return;
        }
        c->state = ST_HANDSHAKE;
        c->want_out = 1;
        conn_want_out(c, 0);
        if (conn_send(c, req, (size_t)n) != 0)
            conn_fail(c, &me()->cs.f_connect, "send failed");
        return;
    }
    if ((ev & EPOLLOUT) && c->wlen) {
        if (conn_flush(c) != 0) {
            conn_lost(c, 1006);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_readable(c);
}

/* ------------------------------------------------------ publisher conns */

static int pconn_send(pconn *pc, const uint8_t *d, size_t n)
{
    if (pc->wlen == pc->woff) {
        pc->wlen = pc->woff = 0;
        ssize_t w = send(pc->fd, d, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            w = 0;
        }
        if ((size_t)w == n)
            return 0;
        d += w;
        n -= (size_t)w;
    }
    if (pc->wlen + n > pc->wcap) {
        size_t cap = pc->wcap ? pc->wcap : 65536;
        while (cap < pc->wlen + n)
            cap *= 2;
        uint8_t *nb = realloc(pc->wbuf, cap);
        if (!nb)
            return -1;
        pc->wbuf = nb;
        pc->wcap = cap;
    }
    memcpy(pc->wbuf + pc->wlen, d, n);
    pc->wlen += n;
    if (!pc->want_out) {
        pc->want_out = 1;
        ep_set(pc->fd, pc, EPOLLIN | EPOLLOUT, 0);
    }
    return 0;
}

static void pub_error(int status, const char *what, const uint8_t *body, size_t bl)
{
    PS.errors++;
    codecount_add(PS.statuses, status, 1);
    if (!PS.first_error[0])
        snprintf(PS.first_error, sizeof PS.first_error, "%s %d: %.*s", what, status,
                 (int)(bl > 120 ? 120 : bl), body ? (const char *)body : "");
}

static void pconn_drop(pconn *pc, const char *why)
{
    if (pc->fd >= 0) {
        close(pc->fd);
        pc->fd = -1;
    }
    if (pc->busy) {
        pub_error(0, why, NULL, 0);
        pc->busy = 0;
    }
    if (pc->inflight) {
        PS.errors += pc->inflight;
        if (!PS.first_error[0])
            snprintf(PS.first_error, sizeof PS.first_error, "%s with %u MQTT publishes unacked",
                     why, pc->inflight);
        pc->inflight = 0;
    }
    pc->rlen = 0;
    pc->wlen = pc->woff = 0;
    pc->want_out = 0;
    pc->state = ST_IDLE;
}

static void pconn_connect(pconn *pc)
{
    int err = 0;
    const url_t *u = pc->kind == K_HTTP ? &O.pub_url : &O.mqtt;
    pc->t_used = now_ns();
    pc->fd = tcp_connect(&u->addr, 0, &err);
    if (pc->fd < 0) {
        pc->state = ST_FAILED;
        if (!PS.first_error[0])
            snprintf(PS.first_error, sizeof PS.first_error, "publisher connect: %s",
                     strerror(err));
        return;
    }
    pc->state = ST_CONNECTING;
    pc->want_out = 1;
    ep_set(pc->fd, pc, EPOLLIN | EPOLLOUT, 1);
}

/* Parses one HTTP response at b. 1 complete, 0 more needed, -1 bad. */
static int http_response(const uint8_t *b, size_t n, size_t *consumed, int *status, int *cclose,
                         const uint8_t **body, size_t *body_len)
{
    const uint8_t *e = memmem(b, n, "\r\n\r\n", 4);
    if (!e)
        return n > MAX_HEAD ? -1 : 0;
    size_t hl = (size_t)(e - b) + 4;
    if (hl < 12 || memcmp(b, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi((const char *)b + 9);
    *cclose = memcmp(b, "HTTP/1.0", 8) == 0;
    long long clen = -1;
    int chunked = 0;
    const uint8_t *p = memchr(b, '\n', hl) + 1;
    while (p < b + hl - 2) {
        const uint8_t *eol = memchr(p, '\n', (size_t)(b + hl - p));
        size_t ll = (size_t)(eol - p);
        if (ll > 15 && strncasecmp((const char *)p, "content-length:", 15) == 0)
            clen = atoll((const char *)p + 15);
        else if (ll > 18 && strncasecmp((const char *)p, "transfer-encoding:", 18) == 0 &&
                 memmem(p, ll, "chunked", 7))
            chunked = 1;
        else if (ll > 11 && strncasecmp((const char *)p, "connection:", 11) == 0) {
            if (memmem(p, ll, "close", 5))
                *cclose = 1;
            else if (memmem(p, ll, "eep-alive", 9))
                *cclose = 0;
        }
        p = eol + 1;
    }
    if (chunked) {
        size_t off = hl;
        for (;;) {
            const uint8_t *le = memmem(b + off, n - off, "\r\n", 2);
            if (!le)
                return 0;
            unsigned long sz = strtoul((const char *)b + off, NULL, 16);
            size_t data = (size_t)(le - b) + 2;
            if (sz == 0) {
                /* trailers end with an empty line */
                const uint8_t *te = memmem(b + data - 2, n - (data - 2), "\r\n\r\n", 4);
                if (!te)
                    return 0;
                *consumed = (size_t)(te - b) + 4;
                *body = b + hl;
                *body_len = 0;
                return 1;
            }
            if (n < data + sz + 2)
                return 0;
            off = data + sz + 2;
        }
    }
    if (clen < 0)
        clen = 0; /* no body (204/304 or a server that closes: not expected here) */
    if (n - hl < (size_t)clen)
        return 0;
    *consumed = hl + (size_t)clen;
    *body = b + hl;
    *body_len = (size_t)clen;
    return 1;
}

static void pconn_handle(pconn *pc)
{
    size_t off = 0;
    while (off < pc->rlen && pc->fd >= 0) {
        if (pc->kind == K_HTTP) {
            size_t used;
            int status, cclose;
            const uint8_t *body;
            size_t bl;
            int r = http_response(pc->rbuf + off, pc->rlen - off, &used, &status, &cclose, &body,
                                  &bl);
            if (r == 0)
                break;
            if (r < 0) {
                pconn_drop(pc, "bad HTTP response");
                return;
            }
            off += used;
            uint64_t t = now_ns();
            if (pc->busy) {
                pc->busy = 0;
                pc->t_used = t;
                PS.answered++;
                PS.t_last_answer = t;
                hist_add(&PS.ack_lat, t - pc->t_sent);
                if (status < 200 || status > 299)
                    pub_error(status, "HTTP", body, bl);
            }
            if (cclose) {
                pconn_drop(pc, "server closed the keep-alive connection");
                PS.reconnects++;
                return;
            }
        } else {
            mqtt_packet pk;
            int r = mqtt_parse(pc->rbuf + off, pc->rlen - off, &pk);
            if (r == 0)
                break;
            if (r < 0) {
                pconn_drop(pc, "malformed MQTT from the broker");
                return;
            }
            off += pk.total;
            if (pk.type == MQTT_CONNACK) {
                if (pk.body_len >= 2 && pk.body[1] == 0) {
                    pc->state = ST_READY;
                } else {
                    pconn_drop(pc, "CONNACK refused");
                    pc->state = ST_FAILED;
                    return;
                }
            } else if (pk.type == MQTT_PUBACK && pk.body_len >= 2) {
                uint16_t pid = (uint16_t)(pk.body[0] << 8 | pk.body[1]);
                uint64_t t = now_ns();
                if (pc->inflight)
                    pc->inflight--;
                PS.answered++;
                PS.t_last_answer = t;
                if (pc->pid_ts[pid])
                    hist_add(&PS.ack_lat, t - pc->pid_ts[pid]);
                pc->pid_ts[pid] = 0;
            }
        }
    }
    if (pc->fd < 0)
        return;
    memmove(pc->rbuf, pc->rbuf + off, pc->rlen - off);
    pc->rlen -= off;
}

static void pconn_event(pconn *pc, uint32_t ev)
{
    if (pc->state == ST_CONNECTING) {
        int e = so_error(pc->fd);
        if (e) {
            if (!PS.first_error[0])
                snprintf(PS.first_error, sizeof PS.first_error, "publisher connect: %s",
                         strerror(e));
            pconn_drop(pc, "connect failed");
            pc->state = ST_FAILED;
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        pc->want_out = 0;
        ep_set(pc->fd, pc, EPOLLIN, 0);
        if (pc->kind == K_HTTP) {
            pc->state = ST_READY;
        } else {
            char id[96];
            uint8_t pkt[160];
            snprintf(id, sizeof id, "%sp%d-%llx", O.id_prefix, pc->idx,
                     (unsigned long long)(S->run_tag & 0xffffff));
            size_t n = mqtt_connect(pkt, id, 0, 1);
            pc->state = ST_OPEN;
            if (pconn_send(pc, pkt, n) != 0)
                pconn_drop(pc, "send failed");
        }
        return;
    }
    if ((ev & EPOLLOUT) && pc->wlen > pc->woff) {
        while (pc->woff < pc->wlen) {
            ssize_t w = send(pc->fd, pc->wbuf + pc->woff, pc->wlen - pc->woff, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                pconn_drop(pc, "send failed");
                return;
            }
            pc->woff += (size_t)w;
        }
        if (pc->woff == pc->wlen) {
            pc->wlen = pc->woff = 0;
            pc->want_out = 0;
            ep_set(pc->fd, pc, EPOLLIN, 0);
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            if (pc->rcap - pc->rlen < 4096) {
                size_t cap = pc->rcap ? pc->rcap * 2 : 65536;
                uint8_t *nb = realloc(pc->rbuf, cap);
                if (!nb) {
                    pconn_drop(pc, "out of memory");
                    return;
                }
                pc->rbuf = nb;
                pc->rcap = cap;
            }
            ssize_t r = recv(pc->fd, pc->rbuf + pc->rlen, pc->rcap - pc->rlen, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                pconn_drop(pc, strerror(errno));
                PS.reconnects++;
                return;
            }
            if (r == 0) {
                pconn_drop(pc, "publisher connection closed by the server");
                PS.reconnects++;
                return;
            }
            pc->rlen += (size_t)r;
            pconn_handle(pc);
            if (pc->fd < 0 || (size_t)r < 4096)
                break;
        }
    }
}

/* An HTTP keep-alive connection idle this long is not reused: the server
 * may be closing it just as a request goes out (the HTTP API's idle
 * timeout is 5 s), and that request would be counted lost. HTTP clients
 * keep their idle timeout below the server's for the same reason. */
#define PCONN_IDLE_REUSE_NS (2ULL * 1000000000ULL)

static int pconn_usable(pconn *pc)
{
    if (pc->kind == K_HTTP && pc->state == ST_READY && !pc->busy &&
        now_ns() - pc->t_used > PCONN_IDLE_REUSE_NS) {
        pconn_drop(pc, "idle"); /* not busy: no error counted */
    }
    if (pc->state == ST_IDLE) /* dropped keep-alive: reconnect lazily */
        pconn_connect(pc);
    if (pc->state != ST_READY)
        return 0;
    if (pc->kind == K_HTTP)
        return !pc->busy;
    return pc->inflight < (uint32_t)O.window;
}

static void pbuf_need(size_t n)
{
    if (n <= PBUF_CAP)
        return;
    size_t cap = PBUF_CAP ? PBUF_CAP : 65536;
    while (cap < n)
        cap *= 2;
    uint8_t *nb = realloc(PBUF, cap);
    if (!nb) {
        fprintf(stderr, "bench: out of memory\n");
        exit(3);
    }
    PBUF = nb;
    PBUF_CAP = cap;
}

/* Publishes operation k of the step on pc. */
static void publish_one(pconn *pc, uint64_t k, uint64_t sched)
{
    char payload[512 + 4096];
    char ch[160];
    long long to = -1;
    uint64_t seq = k;
    uint32_t *ids = NULL;
    uint32_t nids = 0;
    if (O.wl == WL_UNICAST) {
        uint32_t g = PUB.targets[rnd() % PUB.n_targets];
        seq = atomic_fetch_add_explicit(&EXPECTED[g], 1, memory_order_relaxed);
        to = g;
        chan_name(g, ch, sizeof ch);
    } else if (O.wl == WL_MULTI) {
        uint64_t nb = PUB.n_targets / (uint64_t)O.batch;
        uint64_t b = k % nb;
        seq = k / nb;
        ids = &PUB.targets[b * (uint64_t)O.batch];
        nids = (uint32_t)O.batch;
        for (uint32_t i = 0; i < nids; i++)
            atomic_fetch_add_explicit(&EXPECTED[ids[i]], 1, memory_order_relaxed);
    } else {
        chan_name(0, ch, sizeof ch); /* the shared channel, when there is one */
    }
    uint64_t t = now_ns();
    hist_add(&PS.lag, t > sched ? t - sched : 0);
    int pl = snprintf(payload, 512, "{\"bseq\":%llu,\"bstep\":%d,\"bto\":%lld,\"bts\":%llu",
                      (unsigned long long)seq, PUB.step, to, (unsigned long long)(t - S->t0));
    if (O.size > pl + 1) {
        int pad = O.size - pl - 11;
        if (pad > 4000)
            pad = 4000;
        if (pad > 0) {
            memcpy(payload + pl, ",\"bpad\":\"", 9);
            memset(payload + pl + 9, 'x', (size_t)pad);
            pl += 9 + pad;
            payload[pl++] = '"';
        }
    }
    payload[pl++] = '}';
    payload[pl] = '\0';

    size_t n = 0;
    if (pc->kind == K_HTTP) {
        char path[640];
        size_t body_max = (size_t)pl + 64 + (size_t)nids * 160;
        pbuf_need(body_max + 1024);
        char *body = (char *)PBUF + 1024;
        size_t bl = 0;
        if (O.sys == SYS_NCHAN) {
            memcpy(body, payload, (size_t)pl);
            bl = (size_t)pl;
        } else if (O.wl == WL_MULTI) {
            bl += (size_t)sprintf(body, "{\"to\":[");
            for (uint32_t i = 0; i < nids; i++) {
                chan_name(ids[i], ch, sizeof ch);
                bl += (size_t)sprintf(body + bl, "%s\"%s\"", i ? "," : "", ch);
            }
            bl += (size_t)sprintf(body + bl, "],\"msg\":%s}", payload);
        } else if (O.wl == WL_BROADCAST && !O.shared_channel) {
            bl = (size_t)sprintf(body, "{\"sendToAll\":true,\"msg\":%s}", payload);
        } else {
            bl = (size_t)sprintf(body, "{\"to\":[\"%s\"],\"msg\":%s}", ch, payload);
        }
        if (subst_id(O.pub_url.path, ch, path, sizeof path) < 0)
            path[0] = '\0';
        char head[1024];
        int hl = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          path, O.pub_url.hostport, bl);
        /* head goes right before the body in PBUF */
        memcpy(PBUF + 1024 - (size_t)hl, head, (size_t)hl);
        n = (size_t)hl + bl;
        pc->busy = 1;
        pc->t_sent = t;
        if (pconn_send(pc, PBUF + 1024 - (size_t)hl, n) != 0)
            pconn_drop(pc, "send failed");
    } else {
        char topic[256];
        const char *pfx = O.topic_prefix;
        int tl;
        if (O.sys == SYS_CLOUDPUSH) {
            if (O.wl == WL_BROADCAST && !O.shared_channel)
                tl = snprintf(topic, sizeof topic, "%s/broadcast", pfx);
            else
                tl = snprintf(topic, sizeof topic, "%s/client/%s", pfx, ch);
        } else {
            tl = snprintf(topic, sizeof topic, "%s/%s", pfx, ch);
        }
        char body[4096 + 600];
        int bl = O.sys == SYS_CLOUDPUSH ? snprintf(body, sizeof body, "{\"msg\":%s}", payload)
                                        : snprintf(body, sizeof body, "%s", payload);
        uint16_t pid = pc->next_pid;
        pc->next_pid = (uint16_t)(pc->next_pid == 65535 ? 1 : pc->next_pid + 1);
        pbuf_need((size_t)tl + (size_t)bl + 32);
        n = mqtt_publish(PBUF, topic, (size_t)tl, 1, pid, (const uint8_t *)body, (size_t)bl);
        pc->inflight++;
        pc->pid_ts[pid] = t;
        if (pconn_send(pc, PBUF, n) != 0)
            pconn_drop(pc, "send failed");
    }
    PS.sent++;
    PS.t_last_send = t;
    if (O.wl == WL_BROADCAST)
        atomic_store(&S->published, PS.sent);
}

static void pub_tick(void)
{
    uint64_t t = now_ns();
    /* Requests nobody answered. */
    for (int i = 0; i < NPC; i++) {
        pconn *pc = &PC[i];
        if (pc->busy && t - pc->t_sent > PUB_TIMEOUT_NS) {
            PS.timeouts++;
            pconn_drop(pc, "no answer in 10 s");
        }
    }
    if (!PUB.active)
        return;
    double el = (double)(t - PS.t_start) / 1e9;
    uint64_t due = (uint64_t)(el * PS.rate) + 1;
    if (due > PS.planned)
        due = PS.planned;
    int rr = (int)(PS.sent % (uint64_t)NPC);
    PUB.blocked = 0;
    while (PS.sent < due) {
        pconn *pc = NULL;
        for (int i = 0; i < NPC; i++) {
            pconn *q = &PC[(rr + i) % NPC];
            if (pconn_usable(q)) {
                pc = q;
                rr = (rr + i + 1) % NPC;
                break;
            }
        }
        if (!pc) {
            PUB.blocked = 1;
            break;
        }
        uint64_t sched = PS.t_start + (uint64_t)((double)PS.sent * 1e9 / PS.rate);
        publish_one(pc, PS.sent, sched);
    }
    if (PS.sent >= PS.planned)
        PUB.active = 0;
}

int pub_setup(double timeout_s)
{
    if (O.wl == WL_CONNECT)
        return 0;
    NPC = O.pub_conns;
    for (int i = 0; i < NPC; i++) {
        pconn *pc = &PC[i];
        memset(pc, 0, sizeof *pc);
        pc->kind = O.pub == PUB_HTTP ? K_HTTP : K_MQTT;
        pc->fd = -1;
        pc->idx = i;
        pc->next_pid = 1;
        if (pc->kind == K_MQTT) {
            pc->pid_ts = calloc(65536, sizeof(uint64_t));
            if (!pc->pid_ts)
                return -1;
        }
        pconn_connect(pc);
    }
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        int ready = 0, failed = 0;
        for (int i = 0; i < NPC; i++) {
            ready += PC[i].state == ST_READY;
            failed += PC[i].state == ST_FAILED || PC[i].state == ST_IDLE;
        }
        if (ready == NPC)
            return 0;
        if (failed || now_ns() > deadline)
            return -1;
        loop_once(5000);
    }
}

void pub_begin(double rate, double duration, int step, uint64_t n_targets)
{
    memset(&PS, 0, sizeof PS);
    PS.rate = rate;
    PS.duration = duration;
    PS.planned = (uint64_t)(rate * duration + 0.5);
    if (PS.planned < 1)
        PS.planned = 1;
    PS.targets = n_targets;
    PUB.step = step;
    free(PUB.targets);
    PUB.targets = NULL;
    PUB.n_targets = 0;
    if (O.wl == WL_UNICAST || O.wl == WL_MULTI) {
        PUB.targets = malloc(sizeof(uint32_t) * (size_t)(O.conns ? O.conns : 1));
        for (uint32_t g = 0; g < (uint32_t)O.conns; g++)
            if (atomic_load_explicit(&INSTEP[g], memory_order_relaxed))
                PUB.targets[PUB.n_targets++] = g;
        PS.targets = PUB.n_targets;
        if (PUB.n_targets == 0 || (O.wl == WL_MULTI && PUB.n_targets < (uint64_t)O.batch)) {
            snprintf(PS.first_error, sizeof PS.first_error, "no (or too few) target connections");
            return;
        }
    }
    atomic_store(&S->published, 0);
    PS.t_start = now_ns();
    atomic_store(&S->step_start_rel, PS.t_start - S->t0);
    atomic_store(&S->step_dur_ns, (uint64_t)(duration * 1e9));
    PUB.active = 1;
}

int pub_busy(void)
{
    if (PUB.active)
        return 1;
    for (int i = 0; i < NPC; i++)
        if (PC[i].busy || PC[i].inflight)
            return 1;
    return 0;
}

void pub_abort(void)
{
    PUB.active = 0;
}

pubstat *pub_stats(void)
{
    return &PS;
}

/* ---------------------------------------------------------- commands */

static void ack(int cmd)
{
    atomic_store(&me()->ack, cmd);
}

static void cmd_connect(void)
{
    CONN_RUN.active = 1;
    CONN_RUN.next = 0;
    CONN_RUN.inflight = 0;
    CONN_RUN.per_proc = (uint32_t)(O.concurrency / O.procs);
    if (CONN_RUN.per_proc < 1)
        CONN_RUN.per_proc = 1;
}

static void connect_more(void)
{
    while (CONN_RUN.inflight < CONN_RUN.per_proc && CONN_RUN.next < NC) {
        conn *c = &C[CONN_RUN.next++];
        if (c->state == ST_READY)
            continue;
        if (conn_start(c) == 0)
            CONN_RUN.inflight++;
    }
    if (CONN_RUN.next >= NC && CONN_RUN.inflight == 0) {
        CONN_RUN.active = 0;
        ack(last_cmd);
    }
}

static void scan_timeouts(void)
{
    uint64_t t = now_ns();
    uint64_t limit = (uint64_t)(O.connect_timeout * 1e9);
    for (uint32_t i = 0; i < NC; i++) {
        conn *c = &C[i];
        if ((c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_OPEN) &&
            t - c->t_start > limit)
            conn_fail(c, &me()->cs.f_timeout, "not ready within --connect-timeout");
    }
}

static void cmd_reset(int cmd)
{
    stepstat *st = &me()->st;
    memset(st, 0, sizeof *st);
    atomic_store(&me()->recv_live, 0);
    cur_step = atomic_load(&S->step);
    for (uint32_t i = 0; i < NC; i++) {
        conn *c = &C[i];
        c->recv = 0;
        c->max_seq = 0;
        free(c->bits);
        c->bits = NULL;
        c->bits_words = 0;
        c->in_step = c->state == ST_READY;
        atomic_store_explicit(&INSTEP[c->gidx], c->in_step, memory_order_relaxed);
        atomic_store_explicit(&EXPECTED[c->gidx], 0, memory_order_relaxed);
        st->in_step += c->in_step;
    }
    step_on = 1;
    step_cpu0 = cpu_self_ns();
    ack(cmd);
}

static void cmd_end(int cmd)
{
    stepstat *st = &me()->st;
    uint64_t pub = atomic_load(&S->published);
    for (uint32_t i = 0; i < NC; i++) {
        conn *c = &C[i];
        if (!c->in_step)
            continue;
        uint64_t exp = O.wl == WL_BROADCAST
                           ? pub
                           : atomic_load_explicit(&EXPECTED[c->gidx], memory_order_relaxed);
        if (c->recv < exp) {
            st->lost += exp - c->recv;
            st->lost_conns++;
        } else if (c->recv > exp) {
            st->extra += c->recv - exp;
        }
    }
    st->cpu_ns = cpu_self_ns() - step_cpu0;
    step_on = 0;
    ack(cmd);
}

static void cmd_close(void)
{
    CLOSE_RUN.active = 1;
    CLOSE_RUN.deadline = now_ns() + CLOSE_GRACE_NS;
    CLOSE_RUN.n_closing = 0;
    step_on = 0;
    for (uint32_t i = 0; i < NC; i++) {
        conn *c = &C[i];
        if (c->state == ST_READY) {
            atomic_fetch_sub(&me()->open_now, 1);
            if (O.sys == SYS_MOSQ) {
                uint8_t d[2] = {MQTT_DISCONNECT << 4, 0};
                mqtt_sub_send(c, d, 2);
            }
            ws_send_close(c, 1000);
            if (c->fd >= 0) {
                c->state = ST_CLOSING;
                CLOSE_RUN.n_closing++;
            } else {
                c->state = ST_CLOSED;
            }
        } else if (c->fd >= 0) {
            conn_close_fd(c);
            c->state = ST_CLOSED;
        }
    }
    for (int i = 0; i < NPC; i++)
        if (PC[i].fd >= 0) {
            if (PC[i].kind == K_MQTT) {
                uint8_t d[2] = {MQTT_DISCONNECT << 4, 0};
                pconn_send(&PC[i], d, 2);
            }
            close(PC[i].fd);
            PC[i].fd = -1;
        }
}

static void close_check(void)
{
    if (CLOSE_RUN.n_closing && now_ns() < CLOSE_RUN.deadline)
        return;
    for (uint32_t i = 0; i < NC; i++) {
        if (C[i].fd >= 0)
            conn_close_fd(&C[i]);
        C[i].state = ST_CLOSED;
    }
    CLOSE_RUN.active = 0;
    ack(last_cmd);
}

static void tick(void)
{
    int cmd = atomic_load(&S->cmd);
    if (cmd != last_cmd) {
        last_cmd = cmd;
        switch (atomic_load(&S->cmd_kind)) {
        case CMD_CONNECT:
            cmd_connect();
            break;
        case CMD_RESET:
            cmd_reset(cmd);
            break;
        case CMD_END:
            cmd_end(cmd);
            break;
        case CMD_CLOSE:
            cmd_close();
            break;
        case CMD_EXIT:
            if (P != 0) {
                worker_free();
                _exit(0);
            }
            ack(cmd);
            break;
        default:
            break;
        }
    }
    uint64_t t = now_ns();
    if (CONN_RUN.active) {
        if (t - last_scan_ns > 100000000ull) {
            last_scan_ns = t;
            scan_timeouts();
        }
        connect_more();
    }
    if (CLOSE_RUN.active)
        close_check();
    if (P == 0)
        pub_tick();
}

static int have_pwait2 = 1;

void loop_once(long timeout_us)
{
    struct epoll_event evs[512];
    if (P == 0 && PUB.active && !PUB.blocked && PS.rate > 0) {
        /* Wake up in time for the next publish. */
        uint64_t next = PS.t_start + (uint64_t)((double)PS.sent * 1e9 / PS.rate);
        uint64_t t = now_ns();
        long us = next > t ? (long)((next - t) / 1000) : 0;
        if (us < timeout_us)
            timeout_us = us;
    }
    int n;
    if (have_pwait2) {
        struct timespec ts = {.tv_sec = timeout_us / 1000000, .tv_nsec = (timeout_us % 1000000) * 1000};
        n = epoll_pwait2(EP, evs, 512, &ts, NULL);
        if (n < 0 && errno == ENOSYS) {
            have_pwait2 = 0;
            n = 0;
        }
    } else {
        n = epoll_wait(EP, evs, 512, (int)((timeout_us + 999) / 1000));
    }
    for (int i = 0; i < n; i++) {
        uint8_t kind = *(uint8_t *)evs[i].data.ptr;
        if (kind == K_SUB) {
            conn *c = evs[i].data.ptr;
            if (c->fd >= 0)
                conn_event(c, evs[i].events);
        } else {
            pconn *pc = evs[i].data.ptr;
            if (pc->fd >= 0)
                pconn_event(pc, evs[i].events);
        }
    }
    tick();
}

void worker_init(int proc)
{
    P = proc;
    EP = epoll_create1(EPOLL_CLOEXEC);
    if (EP < 0) {
        perror("epoll_create1");
        exit(3);
    }
    GBUF = malloc(GBUF_SIZE);
    rng_state = splitmix(O.seed ^ (uint64_t)(proc + 1) * 0x1234567ull) | 1;
    NC = 0;
    for (uint32_t g = (uint32_t)proc; g < (uint32_t)O.conns; g += (uint32_t)O.procs)
        NC++;
    C = calloc(NC ? NC : 1, sizeof *C);
    if (!C || !GBUF) {
        fprintf(stderr, "bench: out of memory\n");
        exit(3);
    }
    for (uint32_t i = 0; i < NC; i++) {
        C[i].kind = K_SUB;
        C[i].fd = -1;
        C[i].state = ST_IDLE;
        C[i].gidx = (uint32_t)proc + i * (uint32_t)O.procs;
    }
    last_cmd = atomic_load(&S->cmd);
    atomic_store(&me()->alive, 1);
}

void worker_free(void)
{
    for (uint32_t i = 0; i < NC; i++)
        conn_close_fd(&C[i]);
    free(C);
    C = NULL;
    for (int i = 0; i < NPC; i++) {
        if (PC[i].fd >= 0)
            close(PC[i].fd);
        free(PC[i].rbuf);
        free(PC[i].wbuf);
        free(PC[i].pid_ts);
    }
    NPC = 0;
    free(PUB.targets);
    PUB.targets = NULL;
    free(PBUF);
    PBUF = NULL;
    free(GBUF);
    GBUF = NULL;
    if (EP >= 0)
        close(EP);
    EP = -1;
}
