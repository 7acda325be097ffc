/* cloudpush-bench: shared declarations of the load generator. */
#ifndef BENCH_BENCH_H
#define BENCH_BENCH_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"

#define MAX_PROCS 16
#define MAX_PIDS 16
#define MAX_URLS 8
#define MAX_STEPS 64
#define MAX_PCONNS 256
#define NCODES 16

enum sys { SYS_CLOUDPUSH, SYS_NCHAN, SYS_MOSQ };
enum workload { WL_CONNECT, WL_BROADCAST, WL_UNICAST, WL_MULTI };
enum pubmode { PUB_HTTP, PUB_MQTT };

typedef struct {
    char text[512];     /* as given */
    struct sockaddr_in addr;
    char hostport[64];  /* for the Host header */
    char path[448];     /* path and query; may hold {id} */
} url_t;

typedef struct {
    char name[32];
    int pid;
} server_pid;

typedef struct {
    enum sys sys;
    enum workload wl;
    enum pubmode pub;
    url_t ws[MAX_URLS];
    int n_ws;
    url_t pub_url;      /* http publish (cloudpush push API, nchan pub location) */
    url_t mqtt;         /* tcp MQTT broker for publishing */
    url_t status_url;   /* nchan stub status (readiness); optional */
    int have_pub_url, have_mqtt, have_status;
    int conns, procs, concurrency;
    double connect_timeout, hold, duration, drain, drain_idle, timeout;
    double rates[MAX_STEPS];
    int n_rates;
    double search_start, search_max, search_factor;
    int search, refine, half;
    double max_p99_ms, min_achieved, growth_ms, trace_slow_ms, gap, warmup, settle;
    double quiet_wait, quiet_pct;
    int keep_going;
    int pub_conns, window, batch, size;
    int src_ips;       /* loopback source addresses for subscribers (1: kernel's choice) */
    uint32_t src_base; /* host part of the first one: 127.0.0.<src_base>... */
    int shared_channel;    /* cloudpush: every connection uses one channelId */
    char id_prefix[64];
    char topic_prefix[64]; /* cloudpush bus prefix, or the mosquitto topic root */
    server_pid pids[MAX_PIDS];
    int n_pids;
    char json_path[512];
    char label[128];
    char command[4096];
    int quiet;
    uint64_t seed;
} options;

typedef struct {
    int code;
    uint64_t n;
} codecount;

/* Per process, per step. */
typedef struct {
    hist lat;
    uint64_t received, dups, stale, bad, misrouted, reorder;
    uint64_t lost, lost_conns, extra, closes, in_step;
    uint64_t cpu_ns, last_recv_ns;
    /* latency of messages sent in the first and the last third of the
     * publishing time: a growing backlog shows as last >> first */
    uint64_t first_sum, first_n, last_sum, last_n;
    codecount codes[NCODES];
} stepstat;

/* Per process, cumulative over connect rounds. */
typedef struct {
    hist lat; /* connect start -> ready */
    uint64_t attempted, ready, failed;
    uint64_t f_connect, f_status, f_proto, f_timeout, f_closed;
    codecount statuses[NCODES];
    uint64_t first_start_ns, last_ready_ns;
    uint64_t idle_closes; /* closes outside steps */
    codecount idle_codes[NCODES];
    char first_error[160];
} connstat;

typedef struct {
    stepstat st;
    connstat cs;
    _Atomic uint64_t recv_live;
    _Atomic uint64_t open_now;
    _Atomic int ack;
    _Atomic int alive;
} pstat;

enum cmd_kind { CMD_NONE, CMD_CONNECT, CMD_RESET, CMD_END, CMD_CLOSE, CMD_EXIT };

typedef struct {
    uint64_t t0;
    uint64_t run_tag;
    _Atomic int cmd;
    _Atomic int cmd_kind;
    _Atomic int step;
    _Atomic uint64_t published; /* broadcast: publishes sent in this step */
    _Atomic uint64_t step_start_rel, step_dur_ns; /* publishing window, ns after t0 */
    int nprocs;
    pstat p[MAX_PROCS];
    /* followed by: _Atomic uint32_t expected[conns]; uint8_t in_step[conns] */
} shm_t;

extern options O;
extern shm_t *S;
extern _Atomic uint32_t *EXPECTED;
extern _Atomic uint8_t *INSTEP;

uint64_t now_ns(void);
void codecount_add(codecount *t, int code, uint64_t n);

#endif

/* ---- loop.c: the epoll loop of one process ---- */

typedef struct {
    uint64_t planned, sent, answered, errors, timeouts, reconnects;
    double rate, duration;
    uint64_t t_start, t_last_send, t_last_answer;
    hist ack_lat;   /* request written -> answer (HTTP) or PUBACK (MQTT) */
    hist lag;       /* scheduled send time -> actual write */
    codecount statuses[NCODES];
    uint64_t targets;   /* connections addressed (unicast/multi) or in step (broadcast) */
    char first_error[200];
} pubstat;

void worker_init(int proc);
/* Serves sockets for at most timeout_us, then runs the per-tick work
 * (commands from the coordinator, connects, publishing). */
void loop_once(long timeout_us);
/* Publisher (process 0 only). */
int pub_setup(double timeout_s);
void pub_begin(double rate, double duration, int step, uint64_t n_targets);
int pub_busy(void);
void pub_abort(void);
pubstat *pub_stats(void);
void worker_free(void);
