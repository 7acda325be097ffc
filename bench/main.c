/* cloudpush-bench: a load generator for WebSocket push gateways.
 *
 * Process 0 coordinates: it forks --procs - 1 workers, tells every process
 * (itself included) what to do through a shared-memory command word, runs
 * the publisher and writes the report. Each process owns connections
 * gidx % procs == its index and serves them in one epoll loop. */
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "mqttproto.h"
#include "wsproto.h"

options O;
shm_t *S;
_Atomic uint32_t *EXPECTED;
_Atomic uint8_t *INSTEP;

static pid_t children[MAX_PROCS];
static uint64_t run_deadline;

/* ------------------------------------------------------------- options */

static void usage(FILE *f)
{
    fputs(
        "Usage: cloudpush-bench --system SYS --workload WL [options]\n"
        "\n"
        "Load generator for WebSocket push gateways (loopback only). One epoll loop\n"
        "per process; --procs forks more. Reports its own CPU time with every result.\n"
        "\n"
        "  --system cloudpush|nchan|mosquitto-ws\n"
        "  --workload connect|broadcast|unicast|multi\n"
        "  --ws URL            subscriber URL, {id} is replaced by the channel; repeat to\n"
        "                      spread connections round-robin (e.g. two bridges)\n"
        "                      cloudpush: ws://127.0.0.1:19001/ws?channelId={id}\n"
        "                      nchan:     ws://127.0.0.1:18090/sub/{id}\n"
        "                      mosquitto-ws: ws://127.0.0.1:19883/mqtt (topic <prefix>/{id})\n"
        "  --publish http|mqtt publish through HTTP (--pub-url) or MQTT over TCP (--mqtt)\n"
        "  --pub-url URL       cloudpush: http://127.0.0.1:18080/api/v1/push\n"
        "                      nchan: http://127.0.0.1:18090/pub/{id}\n"
        "  --mqtt URL          tcp://127.0.0.1:11883\n"
        "  --status-url URL    nchan stub status; wait until it counts every subscriber\n"
        "  --conns N           subscriber connections (default 1000)\n"
        "  --procs N           generator processes (default 1)\n"
        "  --concurrency N     connection attempts in flight (default 500)\n"
        "  --connect-timeout S one attempt must be ready within S (default 20)\n"
        "  --hold S            connect: keep the connections idle S seconds (default 2)\n"
        "  --rates R,R,...     fixed publish rates (operations/s), one step each\n"
        "  --search LO:HI      then raise the rate from LO (x --search-factor, default 2)\n"
        "                      until a step fails, bisect --refine times (default 2)\n"
        "  --half              then one step at half the best passing rate\n"
        "  --duration S        publishing time per step (default 5)\n"
        "  --drain S           wait at most S after the last publish for deliveries (30)\n"
        "  --drain-idle S      ... or until nothing arrived for S (default 2); what is\n"
        "                      still missing then is counted lost\n"
        "  --max-p99-ms MS     a step with a higher p99 fails (default 1000)\n"
        "  --min-achieved F    a step publishing, or delivering, slower than F x the\n"
        "                      offered rate fails (default 0.95)\n"
        "  --growth-ms MS      a step whose messages sent in its last third wait longer\n"
        "                      than 2 x those of its first third + MS fails (default 50)\n"
        "  --pub-conns N       publisher connections (default 16)\n"
        "  --window N          MQTT: QoS 1 publishes in flight per connection (default 1000)\n"
        "  --batch N           multi: recipients per request (default 100)\n"
        "  --size BYTES        pad the payload to about this size\n"
        "  --shared-channel    cloudpush: every connection uses one channelId\n"
        "  --id-prefix P       channel id prefix ([A-Za-z0-9], default random)\n"
        "  --topic-prefix P    cloudpush bus prefix (cloudpush) / mosquitto topic root (bench)\n"
        "  --pid NAME=PID      server process to watch (RSS, CPU); repeatable\n"
        "  --json FILE         write the result as JSON\n"
        "  --label TEXT        a name for the run in the report\n"
        "  --timeout S         hard limit for the whole run (default 900)\n"
"  --quiet-wait S      before connecting and before each step, wait up to S\n"
        "                      (default 30) until the machine is at most --quiet-pct\n"
        "                      (default 25) percent busy: a shared machine skews results\n"
        "  --keep-going        run every step even after one left messages undelivered\n"
        "                      (by default the run stops there: the servers may hold a backlog)\n"
        "  --src-ips N         spread subscribers over N loopback source addresses\n"
        "                      127.0.0.10... (default: one per 2000 connections)\n"
        "  --warmup S          an unjudged first step of S seconds at min(first rate, 100)\n"
        "                      (default 1; 0: none)\n"
        "  --gap S             idle S seconds before each step (default 0)\n"
        "  --settle S          idle S seconds after connecting, before the hold or the\n"
        "                      first step (default 1)\n"
        "  --trace-slow MS     print (up to 50) deliveries slower than MS\n"
        "  --seed N, --quiet, --selftest, --help\n",
        f);
}

static int parse_url(const char *s, url_t *u, const char *const *schemes, int default_port)
{
    memset(u, 0, sizeof *u);
    snprintf(u->text, sizeof u->text, "%s", s);
    const char *p = NULL;
    for (int i = 0; schemes[i]; i++) {
        size_t l = strlen(schemes[i]);
        if (strncmp(s, schemes[i], l) == 0) {
            p = s + l;
            break;
        }
    }
    if (!p)
        return -1;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    char host[64];
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, p, hl);
    host[hl] = '\0';
    snprintf(u->hostport, sizeof u->hostport, "%s", host);
    int port = default_port;
    char *colon = strchr(host, ':');
    if (colon) {
        *colon = '\0';
        port = atoi(colon + 1);
        if (port <= 0 || port > 65535)
            return -1;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return -1;
    if ((ntohl(a.s_addr) >> 24) != 127) {
        fprintf(stderr, "cloudpush-bench: %s is not a loopback address (127.0.0.0/8 only)\n",
                host);
        return -1;
    }
    u->addr.sin_family = AF_INET;
    u->addr.sin_port = htons((uint16_t)port);
    u->addr.sin_addr = a;
    snprintf(u->path, sizeof u->path, "%s", slash ? slash : "/");
    return 0;
}

static int parse_rates(const char *s)
{
    O.n_rates = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (O.n_rates >= MAX_STEPS) {
            free(dup);
            return -1;
        }
        double r = atof(t);
        if (r <= 0) {
            free(dup);
            return -1;
        }
        O.rates[O.n_rates++] = r;
    }
    free(dup);
    return 0;
}

static int selftest(void);

static void parse_options(int argc, char **argv)
{
    static const char *const ws_s[] = {"ws://", NULL};
    static const char *const http_s[] = {"http://", NULL};
    static const char *const mqtt_s[] = {"tcp://", "mqtt://", NULL};
    enum {
        OPT_SYSTEM = 256, OPT_WORKLOAD, OPT_WS, OPT_PUBLISH, OPT_PUBURL, OPT_MQTT, OPT_STATUS,
        OPT_CONNS, OPT_PROCS, OPT_CONC, OPT_CTIMEOUT, OPT_HOLD, OPT_RATES, OPT_SEARCH,
        OPT_FACTOR, OPT_REFINE, OPT_HALF, OPT_DURATION, OPT_DRAIN, OPT_DRAIN_IDLE, OPT_P99, OPT_GROWTH, OPT_ACHIEVED,
        OPT_PUBCONNS, OPT_WINDOW, OPT_BATCH, OPT_SIZE, OPT_SHARED, OPT_IDPREFIX, OPT_TOPIC,
        OPT_PID, OPT_JSON, OPT_LABEL, OPT_TIMEOUT, OPT_SEED, OPT_TRACE, OPT_GAP, OPT_SETTLE, OPT_WARMUP, OPT_SRCIPS, OPT_QWAIT, OPT_QPCT, OPT_KEEPGOING, OPT_QUIET, OPT_SELFTEST, OPT_HELP
    };
    static const struct option lo[] = {
        {"system", 1, 0, OPT_SYSTEM},         {"workload", 1, 0, OPT_WORKLOAD},
        {"ws", 1, 0, OPT_WS},                 {"publish", 1, 0, OPT_PUBLISH},
        {"pub-url", 1, 0, OPT_PUBURL},        {"mqtt", 1, 0, OPT_MQTT},
        {"status-url", 1, 0, OPT_STATUS},     {"conns", 1, 0, OPT_CONNS},
        {"procs", 1, 0, OPT_PROCS},           {"concurrency", 1, 0, OPT_CONC},
        {"connect-timeout", 1, 0, OPT_CTIMEOUT}, {"hold", 1, 0, OPT_HOLD},
        {"rates", 1, 0, OPT_RATES},           {"search", 1, 0, OPT_SEARCH},
        {"search-factor", 1, 0, OPT_FACTOR},  {"refine", 1, 0, OPT_REFINE},
        {"half", 0, 0, OPT_HALF},             {"duration", 1, 0, OPT_DURATION},
        {"drain", 1, 0, OPT_DRAIN},           {"drain-idle", 1, 0, OPT_DRAIN_IDLE},           {"max-p99-ms", 1, 0, OPT_P99},
        {"min-achieved", 1, 0, OPT_ACHIEVED}, {"growth-ms", 1, 0, OPT_GROWTH}, {"pub-conns", 1, 0, OPT_PUBCONNS},
        {"window", 1, 0, OPT_WINDOW},         {"batch", 1, 0, OPT_BATCH},
        {"size", 1, 0, OPT_SIZE},             {"shared-channel", 0, 0, OPT_SHARED},
        {"id-prefix", 1, 0, OPT_IDPREFIX},    {"topic-prefix", 1, 0, OPT_TOPIC},
        {"pid", 1, 0, OPT_PID},               {"json", 1, 0, OPT_JSON},
        {"label", 1, 0, OPT_LABEL},           {"timeout", 1, 0, OPT_TIMEOUT},
        {"seed", 1, 0, OPT_SEED},             {"quiet-wait", 1, 0, OPT_QWAIT},
        {"quiet-pct", 1, 0, OPT_QPCT},        {"keep-going", 0, 0, OPT_KEEPGOING},             {"src-ips", 1, 0, OPT_SRCIPS},             {"warmup", 1, 0, OPT_WARMUP},             {"gap", 1, 0, OPT_GAP},             {"settle", 1, 0, OPT_SETTLE},             {"trace-slow", 1, 0, OPT_TRACE},             {"quiet", 0, 0, OPT_QUIET},
        {"selftest", 0, 0, OPT_SELFTEST},     {"help", 0, 0, OPT_HELP},
        {0, 0, 0, 0}};

    O.sys = SYS_CLOUDPUSH;
    O.wl = WL_CONNECT;
    O.pub = PUB_HTTP;
    O.conns = 1000;
    O.procs = 1;
    O.concurrency = 500;
    O.connect_timeout = 20;
    O.hold = 2;
    O.duration = 5;
    O.drain = 30;
    O.drain_idle = 2;
    O.timeout = 900;
    O.search_factor = 2;
    O.refine = 2;
    O.max_p99_ms = 1000;
    O.min_achieved = 0.95;
    O.growth_ms = 50;
    O.warmup = 1;
    O.settle = 1;
    O.quiet_wait = 30;
    O.quiet_pct = 25;
    O.pub_conns = 16;
    O.window = 1000;
    O.batch = 100;
    const char *topic = NULL;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)time(NULL) ^ (uint64_t)getpid();
    O.seed = rnd;
    snprintf(O.id_prefix, sizeof O.id_prefix, "bk%04xn", (unsigned)(rnd >> 48));

    size_t cl = 0;
    for (int i = 0; i < argc && cl + 4 < sizeof O.command; i++) {
        /* Quote what a shell would otherwise split or expand. */
        int plain = argv[i][0] != '\0';
        for (const char *q = argv[i]; *q; q++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=,@%+-",
                        *q))
                plain = 0;
        int n = snprintf(O.command + cl, sizeof O.command - cl, plain ? "%s%s" : "%s'%s'",
                         i ? " " : "", argv[i]);
        if (n < 0)
            break;
        cl += (size_t)n;
        if (cl >= sizeof O.command)
            cl = sizeof O.command - 1;
    }

    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case OPT_SYSTEM:
            if (!strcmp(optarg, "cloudpush"))
                O.sys = SYS_CLOUDPUSH;
            else if (!strcmp(optarg, "nchan"))
                O.sys = SYS_NCHAN;
            else if (!strcmp(optarg, "mosquitto-ws"))
                O.sys = SYS_MOSQ;
            else
                goto bad;
            break;
        case OPT_WORKLOAD:
            if (!strcmp(optarg, "connect"))
                O.wl = WL_CONNECT;
            else if (!strcmp(optarg, "broadcast"))
                O.wl = WL_BROADCAST;
            else if (!strcmp(optarg, "unicast"))
                O.wl = WL_UNICAST;
            else if (!strcmp(optarg, "multi"))
                O.wl = WL_MULTI;
            else
                goto bad;
            break;
        case OPT_WS:
            if (O.n_ws >= MAX_URLS || parse_url(optarg, &O.ws[O.n_ws], ws_s, 80) != 0)
                goto bad;
            O.n_ws++;
            break;
        case OPT_PUBLISH:
            if (!strcmp(optarg, "http"))
                O.pub = PUB_HTTP;
            else if (!strcmp(optarg, "mqtt"))
                O.pub = PUB_MQTT;
            else
                goto bad;
            break;
        case OPT_PUBURL:
            if (parse_url(optarg, &O.pub_url, http_s, 80) != 0)
                goto bad;
            O.have_pub_url = 1;
            break;
        case OPT_MQTT:
            if (parse_url(optarg, &O.mqtt, mqtt_s, 1883) != 0)
                goto bad;
            O.have_mqtt = 1;
            break;
        case OPT_STATUS:
            if (parse_url(optarg, &O.status_url, http_s, 80) != 0)
                goto bad;
            O.have_status = 1;
            break;
        case OPT_CONNS:
            O.conns = atoi(optarg);
            break;
        case OPT_PROCS:
            O.procs = atoi(optarg);
            break;
        case OPT_CONC:
            O.concurrency = atoi(optarg);
            break;
        case OPT_CTIMEOUT:
            O.connect_timeout = atof(optarg);
            break;
        case OPT_HOLD:
            O.hold = atof(optarg);
            break;
        case OPT_RATES:
            if (parse_rates(optarg) != 0)
                goto bad;
            break;
        case OPT_SEARCH:
            if (sscanf(optarg, "%lf:%lf", &O.search_start, &O.search_max) != 2 ||
                O.search_start <= 0 || O.search_max < O.search_start)
                goto bad;
            O.search = 1;
            break;
        case OPT_FACTOR:
            O.search_factor = atof(optarg);
            break;
        case OPT_REFINE:
            O.refine = atoi(optarg);
            break;
        case OPT_HALF:
            O.half = 1;
            break;
        case OPT_DURATION:
            O.duration = atof(optarg);
            break;
        case OPT_DRAIN:
            O.drain = atof(optarg);
            break;
        case OPT_DRAIN_IDLE:
            O.drain_idle = atof(optarg);
            break;
        case OPT_P99:
            O.max_p99_ms = atof(optarg);
            break;
        case OPT_GROWTH:
            O.growth_ms = atof(optarg);
            break;
        case OPT_ACHIEVED:
            O.min_achieved = atof(optarg);
            break;
        case OPT_PUBCONNS:
            O.pub_conns = atoi(optarg);
            break;
        case OPT_WINDOW:
            O.window = atoi(optarg);
            break;
        case OPT_BATCH:
            O.batch = atoi(optarg);
            break;
        case OPT_SIZE:
            O.size = atoi(optarg);
            break;
        case OPT_SHARED:
            O.shared_channel = 1;
            break;
        case OPT_IDPREFIX:
            for (const char *q = optarg; *q; q++)
                if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                      (*q >= '0' && *q <= '9')))
                    goto bad;
            snprintf(O.id_prefix, sizeof O.id_prefix, "%s", optarg);
            break;
        case OPT_TOPIC:
            topic = optarg;
            break;
        case OPT_PID: {
            const char *eq = strchr(optarg, '=');
            if (!eq || O.n_pids >= MAX_PIDS || eq - optarg >= 32 || atoi(eq + 1) <= 0)
                goto bad;
            snprintf(O.pids[O.n_pids].name, sizeof O.pids[O.n_pids].name, "%.*s",
                     (int)(eq - optarg), optarg);
            O.pids[O.n_pids].pid = atoi(eq + 1);
            O.n_pids++;
            break;
        }
        case OPT_JSON:
            snprintf(O.json_path, sizeof O.json_path, "%s", optarg);
            break;
        case OPT_LABEL:
            snprintf(O.label, sizeof O.label, "%s", optarg);
            break;
        case OPT_TIMEOUT:
            O.timeout = atof(optarg);
            break;
        case OPT_SEED:
            O.seed = strtoull(optarg, NULL, 0);
            break;
        case OPT_QWAIT:
            O.quiet_wait = atof(optarg);
            break;
        case OPT_QPCT:
            O.quiet_pct = atof(optarg);
            break;
        case OPT_KEEPGOING:
            O.keep_going = 1;
            break;
        case OPT_SRCIPS:
            O.src_ips = atoi(optarg);
            break;
        case OPT_WARMUP:
            O.warmup = atof(optarg);
            break;
        case OPT_GAP:
            O.gap = atof(optarg);
            break;
        case OPT_SETTLE:
            O.settle = atof(optarg);
            break;
        case OPT_TRACE:
            O.trace_slow_ms = atof(optarg);
            break;
        case OPT_QUIET:
            O.quiet = 1;
            break;
        case OPT_SELFTEST:
            exit(selftest());
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            goto bad_usage;
        }
    }
    if (optind != argc)
        goto bad_usage;
    snprintf(O.topic_prefix, sizeof O.topic_prefix, "%s",
             topic ? topic : O.sys == SYS_CLOUDPUSH ? "cloudpush" : "bench");
    if (O.src_ips == 0)
        O.src_ips = (O.conns + 1999) / 2000;
    if (O.src_ips < 1 || O.src_ips > 200) {
        fprintf(stderr, "cloudpush-bench: --src-ips must be 1..200\n");
        exit(2);
    }
    O.src_base = 10;
    if (O.n_ws == 0) {
        fprintf(stderr, "cloudpush-bench: --ws is required\n");
        exit(2);
    }
    if (O.conns < 1 || O.procs < 1 || O.procs > MAX_PROCS || O.concurrency < 1 ||
        O.pub_conns < 1 || O.pub_conns > MAX_PCONNS || O.window < 1 || O.window > 65000 ||
        O.batch < 1 || O.duration <= 0 || O.drain < 0 || O.search_factor <= 1 || O.size < 0 ||
        O.settle < 0) {
        fprintf(stderr, "cloudpush-bench: a numeric option is out of range\n");
        exit(2);
    }
    if (O.wl != WL_CONNECT) {
        if (O.n_rates == 0 && !O.search) {
            fprintf(stderr, "cloudpush-bench: give --rates and/or --search\n");
            exit(2);
        }
        if (O.pub == PUB_HTTP && !O.have_pub_url) {
            fprintf(stderr, "cloudpush-bench: --publish http needs --pub-url\n");
            exit(2);
        }
        if (O.pub == PUB_MQTT && !O.have_mqtt) {
            fprintf(stderr, "cloudpush-bench: --publish mqtt needs --mqtt\n");
            exit(2);
        }
        if (O.sys == SYS_MOSQ && O.pub != PUB_MQTT) {
            fprintf(stderr, "cloudpush-bench: mosquitto-ws publishes with --publish mqtt\n");
            exit(2);
        }
        if (O.sys == SYS_NCHAN && O.pub != PUB_HTTP) {
            fprintf(stderr, "cloudpush-bench: nchan publishes with --publish http\n");
            exit(2);
        }
        if (O.wl == WL_MULTI && (O.sys != SYS_CLOUDPUSH || O.pub != PUB_HTTP)) {
            fprintf(stderr, "cloudpush-bench: multi is the cloudpush HTTP multi-recipient push\n");
            exit(2);
        }
    }
    return;
bad:
    fprintf(stderr, "cloudpush-bench: bad value for an option: %s\n", optarg);
    exit(2);
bad_usage:
    usage(stderr);
    exit(2);
}

/* ------------------------------------------------------ /proc readings */

static long read_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* utime + stime in clock ticks of /proc/<pid>/stat or a task's stat. */
static long long read_ticks(const char *path, char *comm, size_t comm_len)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
    if (!lp || !rp)
        return -1;
    if (comm)
        snprintf(comm, comm_len, "%.*s", (int)(rp - lp - 1), lp + 1);
    /* fields after ") ": state(3) ... utime(14) stime(15) */
    char *p = rp + 2;
    unsigned long long ut = 0, st = 0;
    int field = 3;
    char *save = NULL;
    for (char *t = strtok_r(p, " ", &save); t; t = strtok_r(NULL, " ", &save), field++) {
        if (field == 14)
            ut = strtoull(t, NULL, 10);
        if (field == 15) {
            st = strtoull(t, NULL, 10);
            break;
        }
    }
    return (long long)(ut + st);
}

/* Machine-wide CPU from /proc/stat: busy and total ticks over all cores. */
static void machine_ticks(unsigned long long *busy, unsigned long long *total)
{
    unsigned long long v[10] = {0};
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) == 8) {
        *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        *total = *busy + v[3] + v[4];
    }
    fclose(f);
}

#define MAX_TASKS 64
typedef struct {
    long long total;
    int ntask;
    int tid[MAX_TASKS];
    long long ticks[MAX_TASKS];
    char comm[MAX_TASKS][24];
} cpu_snap;

static void snap_cpu(int pid, cpu_snap *s)
{
    char path[96];
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    s->total = read_ticks(path, NULL, 0);
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && s->ntask < MAX_TASKS) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char tp[160];
        snprintf(tp, sizeof tp, "/proc/%d/task/%.16s/stat", pid, e->d_name);
        int i = s->ntask;
        s->tid[i] = atoi(e->d_name);
        s->ticks[i] = read_ticks(tp, s->comm[i], sizeof s->comm[i]);
        if (s->ticks[i] >= 0)
            s->ntask++;
    }
    closedir(d);
}

typedef struct {
    double secs;
    double top_secs;
    char top_comm[24];
} cpu_delta;

static cpu_delta diff_cpu(const cpu_snap *a, const cpu_snap *b)
{
    double hz = (double)sysconf(_SC_CLK_TCK);
    cpu_delta d = {0};
    d.secs = (double)(b->total - a->total) / hz;
    for (int i = 0; i < b->ntask; i++) {
        long long before = 0;
        for (int j = 0; j < a->ntask; j++)
            if (a->tid[j] == b->tid[i])
                before = a->ticks[j];
        double s = (double)(b->ticks[i] - before) / hz;
        if (s > d.top_secs) {
            d.top_secs = s;
            snprintf(d.top_comm, sizeof d.top_comm, "%s", b->comm[i]);
        }
    }
    return d;
}

static uint64_t gen_cpu_ns_total(void)
{
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    uint64_t us = (uint64_t)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec +
                             b.ru_stime.tv_sec) *
                      1000000ull +
                  (uint64_t)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
                             b.ru_stime.tv_usec);
    return us * 1000ull;
}

/* A blocking GET with Connection: close (nchan stub status). */
static int http_get(const url_t *u, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)&u->addr, sizeof u->addr) != 0) {
        close(fd);
        return -1;
    }
    char req[700];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     u->path, u->hostport);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, out + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got >= cap - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
    return (int)got;
}

/* ----------------------------------------------------------- coordinator */

static int send_cmd(int kind)
{
    atomic_store(&S->cmd_kind, kind);
    return atomic_fetch_add(&S->cmd, 1) + 1;
}

static int acks_done(int cmd)
{
    for (int p = 0; p < O.procs; p++)
        if (atomic_load(&S->p[p].ack) != cmd)
            return 0;
    return 1;
}

static void check_children(void)
{
    for (int p = 1; p < O.procs; p++) {
        int st;
        if (children[p] > 0 && waitpid(children[p], &st, WNOHANG) == children[p]) {
            fprintf(stderr, "cloudpush-bench: worker %d exited unexpectedly (status %d)\n", p, st);
            children[p] = 0;
            exit(4);
        }
    }
}

static int wait_cmd(int cmd, double timeout_s)
{
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    if (deadline > run_deadline)
        deadline = run_deadline;
    while (!acks_done(cmd)) {
        loop_once(2000);
        check_children();
        if (now_ns() > deadline)
            return -1;
    }
    return 0;
}

static void serve_for(double secs)
{
    uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
    while (now_ns() < end) {
        loop_once(5000);
        check_children();
    }
}

/* Waits (serving the connections) until the machine is quiet: other
 * people's processes on a shared machine distort every number. Returns the
 * seconds waited; *busy gets the last sample (% of the whole machine). */
static double wait_quiet(double *busy)
{
    uint64_t t0 = now_ns();
    *busy = 0;
    if (O.quiet_wait <= 0)
        return 0;
    for (;;) {
        unsigned long long b0, m0, b1, m1;
        machine_ticks(&b0, &m0);
        serve_for(0.5);
        machine_ticks(&b1, &m1);
        *busy = m1 > m0 ? 100.0 * (double)(b1 - b0) / (double)(m1 - m0) : 0;
        double waited = (double)(now_ns() - t0) / 1e9;
        if (*busy <= O.quiet_pct || waited >= O.quiet_wait || now_ns() > run_deadline)
            return waited;
    }
}

static uint64_t sum_open(void)
{
    uint64_t n = 0;
    for (int p = 0; p < O.procs; p++)
        n += atomic_load(&S->p[p].open_now);
    return n;
}

static uint64_t sum_recv_live(void)
{
    uint64_t n = 0;
    for (int p = 0; p < O.procs; p++)
        n += atomic_load_explicit(&S->p[p].recv_live, memory_order_relaxed);
    return n;
}

typedef struct {
    char tag[16];
    double rate;
    pubstat ps;
    stepstat st; /* merged */
    uint64_t expected;
    double wall, deliveries_per_s, offered_per_s, achieved, lat_first_ms, lat_last_ms;
    int drained, pass;
    char why[160];
    double gen_cpu, machine_busy_pct, quiet_busy, quiet_waited;
    cpu_delta srv[MAX_PIDS];
    uint64_t open_before;
} step_result;

static step_result R[MAX_STEPS];
static int NR;
static connstat CONNECT_RESULT;
static uint64_t connect_ready_total;
static double connect_secs;
static long rss_before[MAX_PIDS], rss_after[MAX_PIDS], rss_hold[MAX_PIDS];
static uint64_t open_after_hold;
static cpu_delta hold_cpu[MAX_PIDS], connect_cpu[MAX_PIDS];
static double connect_wall;
static double connect_machine_busy, hold_machine_busy;
static double connect_quiet_busy, connect_quiet_waited;
static char aborted[200];
static double hold_wall;
static int nchan_subscribers = -1;
static double total_wall, total_cpu;
static int reconnect_rounds;
static uint64_t reconnected;

static void merge_connstat(connstat *out)
{
    memset(out, 0, sizeof *out);
    for (int p = 0; p < O.procs; p++) {
        const connstat *c = &S->p[p].cs;
        hist_merge(&out->lat, &c->lat);
        out->attempted += c->attempted;
        out->ready += c->ready;
        out->failed += c->failed;
        out->f_connect += c->f_connect;
        out->f_status += c->f_status;
        out->f_proto += c->f_proto;
        out->f_timeout += c->f_timeout;
        out->f_closed += c->f_closed;
        for (int i = 0; i < NCODES; i++)
            if (c->statuses[i].n)
                codecount_add(out->statuses, c->statuses[i].code, c->statuses[i].n);
        if (c->first_start_ns && (!out->first_start_ns || c->first_start_ns < out->first_start_ns))
            out->first_start_ns = c->first_start_ns;
        if (c->last_ready_ns > out->last_ready_ns)
            out->last_ready_ns = c->last_ready_ns;
        out->idle_closes += c->idle_closes;
        for (int i = 0; i < NCODES; i++)
            if (c->idle_codes[i].n)
                codecount_add(out->idle_codes, c->idle_codes[i].code, c->idle_codes[i].n);
        if (!out->first_error[0] && c->first_error[0])
            snprintf(out->first_error, sizeof out->first_error, "%s", c->first_error);
    }
}

static void merge_stepstat(stepstat *out)
{
    memset(out, 0, sizeof *out);
    for (int p = 0; p < O.procs; p++) {
        const stepstat *s = &S->p[p].st;
        hist_merge(&out->lat, &s->lat);
        out->received += s->received;
        out->dups += s->dups;
        out->stale += s->stale;
        out->bad += s->bad;
        out->misrouted += s->misrouted;
        out->reorder += s->reorder;
        out->lost += s->lost;
        out->lost_conns += s->lost_conns;
        out->extra += s->extra;
        out->closes += s->closes;
        out->in_step += s->in_step;
        out->cpu_ns += s->cpu_ns;
        out->first_sum += s->first_sum;
        out->first_n += s->first_n;
        out->last_sum += s->last_sum;
        out->last_n += s->last_n;
        if (s->last_recv_ns > out->last_recv_ns)
            out->last_recv_ns = s->last_recv_ns;
        for (int i = 0; i < NCODES; i++)
            if (s->codes[i].n)
                codecount_add(out->codes, s->codes[i].code, s->codes[i].n);
    }
}

static int ncores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    if (O.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* (Re)connects every connection that is not ready. Returns newly ready. */
static uint64_t connect_round(double limit_s)
{
    uint64_t before = sum_open();
    int cmd = send_cmd(CMD_CONNECT);
    if (wait_cmd(cmd, limit_s) != 0)
        say("  connect round did not finish in %.0f s\n", limit_s);
    return sum_open() - before;
}

static step_result *run_step_d(const char *tag, double rate, double duration);
/* A step that left messages undelivered may leave a backlog behind (queues
 * in the servers) that later steps would be measured against: stop there. */
static int damaged;

static step_result *run_step(const char *tag, double rate)
{
    if (damaged)
        return NULL;
    step_result *r = run_step_d(tag, rate, O.duration);
    if (r && !O.keep_going && (r->st.lost || !r->drained)) {
        damaged = 1;
        snprintf(aborted, sizeof aborted,
                 "stopped after the %s step at %.0f/s: %llu messages were not delivered, the "
                 "servers may still hold a backlog",
                 r->tag, r->rate, (unsigned long long)r->st.lost);
        say("  %s\n", aborted);
    }
    return r;
}

static step_result *run_step_d(const char *tag, double rate, double duration)
{
    if (NR >= MAX_STEPS || now_ns() > run_deadline)
        return NULL;
    step_result *r = &R[NR];
    memset(r, 0, sizeof *r);
    snprintf(r->tag, sizeof r->tag, "%s", tag);
    r->rate = rate;
    int k = NR++;

    if (O.gap > 0)
        serve_for(O.gap);
    r->quiet_waited = wait_quiet(&r->quiet_busy);
    if (r->quiet_busy > O.quiet_pct)
        say("  the machine is still %.0f%% busy before the step (other processes?)\n",
            r->quiet_busy);
    /* Connections lost in an earlier step are reopened first. */
    if (sum_open() < connect_ready_total) {
        reconnect_rounds++;
        reconnected += connect_round(O.connect_timeout * 3);
    }
    r->open_before = sum_open();

    atomic_store(&S->step, k);
    int cmd = send_cmd(CMD_RESET);
    if (wait_cmd(cmd, 10) != 0) {
        snprintf(r->why, sizeof r->why, "workers did not reset");
        return r;
    }
    cpu_snap before[MAX_PIDS], after[MAX_PIDS];
    for (int i = 0; i < O.n_pids; i++)
        snap_cpu(O.pids[i].pid, &before[i]);
    unsigned long long mb0, mt0, mb1, mt1;
    machine_ticks(&mb0, &mt0);
    uint64_t in_step = 0;
    for (int p = 0; p < O.procs; p++)
        in_step += S->p[p].st.in_step;

    pub_begin(rate, duration, k, in_step);
    pubstat *ps = pub_stats();
    uint64_t t_start = ps->t_start;
    uint64_t send_deadline = t_start + (uint64_t)((duration + 15) * 1e9);
    while (pub_busy()) {
        loop_once(2000);
        check_children();
        if (now_ns() > send_deadline || now_ns() > run_deadline) {
            pub_abort();
            snprintf(r->why, sizeof r->why, "publishing did not finish in duration + 15 s");
            break;
        }
    }
    uint64_t sent = ps->sent;
    if (O.wl == WL_BROADCAST)
        r->expected = sent * in_step;
    else if (O.wl == WL_MULTI)
        r->expected = sent * (uint64_t)O.batch;
    else
        r->expected = sent;
    /* Drain: until everything arrived, or nothing arrived for --drain-idle
     * seconds, at most --drain seconds after the last publish. */
    uint64_t drain_end = (ps->t_last_send ? ps->t_last_send : now_ns()) +
                         (uint64_t)(O.drain * 1e9);
    uint64_t idle_ns = (uint64_t)(O.drain_idle * 1e9);
    uint64_t last_count = sum_recv_live(), last_progress = now_ns();
    while (last_count < r->expected) {
        loop_once(2000);
        uint64_t t = now_ns(), c = sum_recv_live();
        if (c != last_count) {
            last_count = c;
            last_progress = t;
        }
        if (t > drain_end || t - last_progress > idle_ns || t > run_deadline)
            break;
    }
    r->drained = sum_recv_live() >= r->expected;
    uint64_t t_end = now_ns();
    cmd = send_cmd(CMD_END);
    wait_cmd(cmd, 10);
    for (int i = 0; i < O.n_pids; i++) {
        snap_cpu(O.pids[i].pid, &after[i]);
        r->srv[i] = diff_cpu(&before[i], &after[i]);
    }
    machine_ticks(&mb1, &mt1);
    r->machine_busy_pct = mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0;
    r->ps = *ps;
    merge_stepstat(&r->st);
    r->wall = (double)(t_end - t_start) / 1e9;
    r->gen_cpu = (double)r->st.cpu_ns / 1e9;
    double send_span = (double)(ps->t_last_send - t_start) / 1e9;
    double span = duration > send_span ? duration : send_span;
    r->achieved = (double)sent / span;
    r->offered_per_s = (double)r->expected / span;
    r->lat_first_ms = r->st.first_n ? ms(r->st.first_sum) / (double)r->st.first_n : 0;
    r->lat_last_ms = r->st.last_n ? ms(r->st.last_sum) / (double)r->st.last_n : 0;
    if (r->st.last_recv_ns > t_start)
        r->deliveries_per_s = (double)r->st.received / ((double)(r->st.last_recv_ns - t_start) / 1e9);

    double p99 = ms(hist_quantile(&r->st.lat, 0.99));
    if (!r->why[0]) {
        if (r->st.lost)
            snprintf(r->why, sizeof r->why, "lost %llu of %llu", (unsigned long long)r->st.lost,
                     (unsigned long long)r->expected);
        else if (r->st.closes)
            snprintf(r->why, sizeof r->why, "%llu connections closed",
                     (unsigned long long)r->st.closes);
        else if (r->ps.errors || r->ps.timeouts)
            snprintf(r->why, sizeof r->why, "%llu publish errors",
                     (unsigned long long)(r->ps.errors + r->ps.timeouts));
        else if (r->st.dups || r->st.misrouted || r->st.bad)
            snprintf(r->why, sizeof r->why, "duplicates/misrouted/bad messages");
        else if (r->achieved < O.min_achieved * rate)
            snprintf(r->why, sizeof r->why, "published %.0f/s of %.0f/s", r->achieved, rate);
        else if (r->deliveries_per_s < O.min_achieved * r->offered_per_s)
            snprintf(r->why, sizeof r->why, "delivered %.0f/s of %.0f/s offered",
                     r->deliveries_per_s, r->offered_per_s);
        else if (r->lat_last_ms > 2 * r->lat_first_ms + O.growth_ms)
            snprintf(r->why, sizeof r->why,
                     "backlog: mean latency grew from %.1f ms (first third) to %.1f ms (last third)",
                     r->lat_first_ms, r->lat_last_ms);
        else if (p99 > O.max_p99_ms)
            snprintf(r->why, sizeof r->why, "p99 %.0f ms over %.0f ms", p99, O.max_p99_ms);
        else if (!r->drained)
            snprintf(r->why, sizeof r->why, "not drained");
    }
    r->pass = !r->why[0];
    say("  [%s] rate %.0f/s: sent %llu (%.0f/s), expected %llu, received %llu, lost %llu, "
        "dups %llu, closes %llu, errors %llu, p50 %.2f p99 %.2f max %.2f ms, %.0f deliveries/s, "
        "gen cpu %.2f s over %.2f s, machine busy %.0f%% -> %s%s\n",
        r->tag, rate, (unsigned long long)sent, r->achieved, (unsigned long long)r->expected,
        (unsigned long long)r->st.received, (unsigned long long)r->st.lost,
        (unsigned long long)r->st.dups, (unsigned long long)r->st.closes,
        (unsigned long long)(r->ps.errors + r->ps.timeouts), ms(hist_quantile(&r->st.lat, 0.5)),
        p99, ms(r->st.lat.max), r->deliveries_per_s, r->gen_cpu, r->wall, r->machine_busy_pct,
        r->pass ? "pass" : "FAIL: ", r->why);
    return r;
}

/* --------------------------------------------------------------- report */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_codes(FILE *f, const codecount *t)
{
    fputc('{', f);
    int first = 1;
    for (int i = 0; i < NCODES; i++)
        if (t[i].n) {
            fprintf(f, "%s\"%d\":%llu", first ? "" : ",", t[i].code, (unsigned long long)t[i].n);
            first = 0;
        }
    fputc('}', f);
}

static void json_hist(FILE *f, const hist *h)
{
    fprintf(f,
            "{\"count\":%llu,\"min_ms\":%.3f,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
            "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f}",
            (unsigned long long)h->count, ms(h->min),
            h->count ? ms(h->sum) / (double)h->count : 0.0, ms(hist_quantile(h, 0.5)),
            ms(hist_quantile(h, 0.9)), ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)),
            ms(h->max));
}

static const char *sys_name(void)
{
    return O.sys == SYS_CLOUDPUSH ? "cloudpush" : O.sys == SYS_NCHAN ? "nchan" : "mosquitto-ws";
}

static const char *wl_name(void)
{
    static const char *n[] = {"connect", "broadcast", "unicast", "multi"};
    return n[O.wl];
}

static void write_json(const char *path, const char *date)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cloudpush-bench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    struct utsname un;
    uname(&un);
    long mem_kb = 0;
    FILE *mi = fopen("/proc/meminfo", "r");
    if (mi) {
        char line[128];
        while (fgets(line, sizeof line, mi))
            if (sscanf(line, "MemTotal: %ld kB", &mem_kb) == 1)
                break;
        fclose(mi);
    }
    int cores = ncores();
    fprintf(f, "{\"tool\":\"cloudpush-bench\",\"date\":");
    json_str(f, date);
    fprintf(f, ",\"label\":");
    json_str(f, O.label);
    fprintf(f, ",\"system\":\"%s\",\"workload\":\"%s\",\"publish\":\"%s\",\"command\":", sys_name(),
            wl_name(), O.wl == WL_CONNECT ? "none" : O.pub == PUB_HTTP ? "http" : "mqtt");
    json_str(f, O.command);
    fprintf(f, ",\"machine\":{\"cores\":%d,\"mem_total_kb\":%ld,\"kernel\":", cores, mem_kb);
    json_str(f, un.release);
    fprintf(f, "},\"conns\":%d,\"procs\":%d,\"concurrency\":%d,\"duration\":%.1f,\"drain\":%.1f,\"drain_idle\":%.1f,"
               "\"pub_conns\":%d,\"batch\":%d,\"size\":%d,\"shared_channel\":%s,",
            O.conns, O.procs, O.concurrency, O.duration, O.drain, O.drain_idle, O.pub_conns, O.batch, O.size,
            O.shared_channel ? "true" : "false");
    fprintf(f, "\"ws\":[");
    for (int i = 0; i < O.n_ws; i++) {
        fprintf(f, i ? "," : "");
        json_str(f, O.ws[i].text);
    }
    fprintf(f, "],");
    const connstat *cs = &CONNECT_RESULT;
    fprintf(f,
            "\"connect\":{\"attempted\":%llu,\"ready\":%llu,\"failed\":%llu,\"failed_connect\":%llu,"
            "\"failed_status\":%llu,\"failed_protocol\":%llu,\"failed_timeout\":%llu,"
            "\"failed_closed\":%llu,\"statuses\":",
            (unsigned long long)cs->attempted, (unsigned long long)cs->ready,
            (unsigned long long)cs->failed, (unsigned long long)cs->f_connect,
            (unsigned long long)cs->f_status, (unsigned long long)cs->f_proto,
            (unsigned long long)cs->f_timeout, (unsigned long long)cs->f_closed);
    json_codes(f, cs->statuses);
    fprintf(f, ",\"seconds\":%.3f,\"ready_per_s\":%.1f,\"time_to_ready\":", connect_secs,
            connect_secs > 0 ? (double)cs->ready / connect_secs : 0.0);
    json_hist(f, &cs->lat);
    fprintf(f, ",\"first_error\":");
    json_str(f, cs->first_error);
    fprintf(f, ",\"nchan_subscribers\":%d,\"open_after_hold\":%llu,\"hold_s\":%.1f,"
               "\"idle_closes\":%llu,\"idle_close_codes\":",
            nchan_subscribers, (unsigned long long)open_after_hold, O.hold,
            (unsigned long long)cs->idle_closes);
    json_codes(f, cs->idle_codes);
    fprintf(f, ",\"reconnect_rounds\":%d,\"reconnected\":%llu,\"machine_busy_pct\":%.1f,"
               "\"hold_machine_busy_pct\":%.1f,\"busy_before_pct\":%.1f,\"quiet_waited_s\":%.1f},",
            reconnect_rounds, (unsigned long long)reconnected, connect_machine_busy,
            hold_machine_busy, connect_quiet_busy, connect_quiet_waited);
    fprintf(f, "\"aborted\":");
    json_str(f, aborted);
    fputc(',', f);
    fprintf(f, "\"criteria\":{\"min_achieved\":%.2f,\"max_p99_ms\":%.0f,\"growth_ms\":%.0f,"
               "\"drain_max_s\":%.1f,\"drain_idle_s\":%.1f},",
            O.min_achieved, O.max_p99_ms, O.growth_ms, O.drain, O.drain_idle);
    fprintf(f, "\"servers\":[");
    long tb = 0, ta = 0, th = 0;
    for (int i = 0; i < O.n_pids; i++) {
        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, O.pids[i].name);
        fprintf(f, ",\"pid\":%d,\"rss_before_kb\":%ld,\"rss_ready_kb\":%ld,\"rss_after_hold_kb\":%ld,"
                   "\"idle_cpu_pct_of_core\":%.1f,\"idle_top_thread\":",
                O.pids[i].pid, rss_before[i], rss_after[i], rss_hold[i],
                hold_wall > 0 ? 100.0 * hold_cpu[i].secs / hold_wall : 0.0);
        json_str(f, hold_cpu[i].top_comm);
        fprintf(f, ",\"connect_cpu_s\":%.2f,\"connect_cpu_pct_of_core\":%.1f,\"connect_top_thread\":",
                connect_cpu[i].secs, connect_wall > 0 ? 100.0 * connect_cpu[i].secs / connect_wall : 0.0);
        json_str(f, connect_cpu[i].top_comm);
        fprintf(f, ",\"connect_top_thread_pct_of_core\":%.1f",
                connect_wall > 0 ? 100.0 * connect_cpu[i].top_secs / connect_wall : 0.0);
        fputc('}', f);
        tb += rss_before[i];
        ta += rss_after[i];
        th += rss_hold[i];
    }
    double per = cs->ready ? (double)(ta - tb) * 1024.0 / (double)cs->ready : 0.0;
    double perh = cs->ready ? (double)(th - tb) * 1024.0 / (double)cs->ready : 0.0;
    fprintf(f, "],\"rss_total_before_kb\":%ld,\"rss_total_ready_kb\":%ld,"
               "\"rss_total_after_hold_kb\":%ld,\"rss_bytes_per_conn\":%.0f,"
               "\"rss_bytes_per_conn_after_hold\":%.0f,",
            tb, ta, th, per, perh);
    fprintf(f, "\"steps\":[");
    double best = 0, half_rate = 0;
    for (int i = 0; i < NR; i++) {
        const step_result *r = &R[i];
        if (r->pass && strcmp(r->tag, "half") != 0 && strcmp(r->tag, "warmup") != 0 &&
            r->rate > best)
            best = r->rate;
        if (!strcmp(r->tag, "half"))
            half_rate = r->rate;
        fprintf(f, "%s{\"tag\":\"%s\",\"rate\":%.1f,\"planned\":%llu,\"sent\":%llu,"
                   "\"achieved_rate\":%.1f,\"answered\":%llu,\"pub_errors\":%llu,"
                   "\"pub_timeouts\":%llu,\"pub_reconnects\":%llu,\"pub_statuses\":",
                i ? "," : "", r->tag, r->rate, (unsigned long long)r->ps.planned,
                (unsigned long long)r->ps.sent, r->achieved, (unsigned long long)r->ps.answered,
                (unsigned long long)r->ps.errors, (unsigned long long)r->ps.timeouts,
                (unsigned long long)r->ps.reconnects);
        json_codes(f, r->ps.statuses);
        fprintf(f, ",\"pub_first_error\":");
        json_str(f, r->ps.first_error);
        fprintf(f, ",\"open_before\":%llu,\"in_step\":%llu,\"expected\":%llu,\"received\":%llu,"
                   "\"lost\":%llu,\"lost_conns\":%llu,\"dups\":%llu,\"stale\":%llu,\"bad\":%llu,"
                   "\"misrouted\":%llu,\"reordered\":%llu,\"extra\":%llu,\"closes\":%llu,"
                   "\"close_codes\":",
                (unsigned long long)r->open_before, (unsigned long long)r->st.in_step,
                (unsigned long long)r->expected, (unsigned long long)r->st.received,
                (unsigned long long)r->st.lost, (unsigned long long)r->st.lost_conns,
                (unsigned long long)r->st.dups, (unsigned long long)r->st.stale,
                (unsigned long long)r->st.bad, (unsigned long long)r->st.misrouted,
                (unsigned long long)r->st.reorder, (unsigned long long)r->st.extra,
                (unsigned long long)r->st.closes);
        json_codes(f, r->st.codes);
        fprintf(f, ",\"drained\":%s,\"wall_s\":%.3f,\"offered_per_s\":%.1f,"
                   "\"deliveries_per_s\":%.1f,\"latency\":",
                r->drained ? "true" : "false", r->wall, r->offered_per_s, r->deliveries_per_s);
        json_hist(f, &r->st.lat);
        fprintf(f, ",\"latency_first_third_mean_ms\":%.3f,\"latency_last_third_mean_ms\":%.3f",
                r->lat_first_ms, r->lat_last_ms);
        fprintf(f, ",\"publish_ack\":");
        json_hist(f, &r->ps.ack_lat);
        fprintf(f, ",\"publish_lag\":");
        json_hist(f, &r->ps.lag);
        fprintf(f, ",\"gen_cpu_s\":%.3f,\"gen_cpu_pct_of_machine\":%.1f,\"servers\":[", r->gen_cpu,
                r->wall > 0 ? 100.0 * r->gen_cpu / (r->wall * cores) : 0.0);
        for (int j = 0; j < O.n_pids; j++) {
            fprintf(f, "%s{\"name\":", j ? "," : "");
            json_str(f, O.pids[j].name);
            fprintf(f, ",\"cpu_s\":%.2f,\"cpu_pct_of_core\":%.1f,\"top_thread\":",
                    r->srv[j].secs, r->wall > 0 ? 100.0 * r->srv[j].secs / r->wall : 0.0);
            json_str(f, r->srv[j].top_comm);
            fprintf(f, ",\"top_thread_pct_of_core\":%.1f}",
                    r->wall > 0 ? 100.0 * r->srv[j].top_secs / r->wall : 0.0);
        }
        double srv_s = 0;
        for (int j = 0; j < O.n_pids; j++)
            srv_s += r->srv[j].secs;
        double other = r->wall > 0 ? r->machine_busy_pct -
                                         100.0 * (r->gen_cpu + srv_s) / (r->wall * cores)
                                   : 0;
        fprintf(f, "],\"machine_busy_pct\":%.1f,\"other_processes_pct_of_machine\":%.1f",
                r->machine_busy_pct, other < 0 ? 0 : other);
        fprintf(f, ",\"busy_before_pct\":%.1f,\"quiet_waited_s\":%.1f", r->quiet_busy,
                r->quiet_waited);
        fprintf(f, ",\"pass\":%s,\"why\":", r->pass ? "true" : "false");
        json_str(f, r->why);
        fputc('}', f);
    }
    fprintf(f, "],\"best_rate\":%.1f,\"half_rate\":%.1f,", best, half_rate);
    fprintf(f, "\"generator\":{\"cpu_s\":%.3f,\"wall_s\":%.3f,\"cpu_pct_of_machine\":%.1f}}\n",
            total_cpu, total_wall, total_wall > 0 ? 100.0 * total_cpu / (total_wall * cores) : 0.0);
    fclose(f);
}

/* ------------------------------------------------------------- selftest */

static int selftest(void)
{
    int fails = 0;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "selftest: %s:%d: %s\n", __FILE__, __LINE__, #c);                      \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)
    /* RFC 6455 section 1.3 example. */
    char acc[29];
    CHECK(ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc) == 0);
    CHECK(strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    uint8_t nonce[16] = {0x74, 0x68, 0x65, 0x20, 0x73, 0x61, 0x6d, 0x70,
                         0x6c, 0x65, 0x20, 0x6e, 0x6f, 0x6e, 0x63, 0x65};
    char key[25];
    ws_make_key(nonce, key);
    CHECK(strcmp(key, "dGhlIHNhbXBsZSBub25jZQ==") == 0);
    const char *resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
                       "Connection: keep-alive, Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    int st;
    char why[96];
    CHECK(ws_check_response(resp, strlen(resp), key, NULL, &st, why, sizeof why) == 0);
    CHECK(ws_check_response(resp, strlen(resp), "AAAAAAAAAAAAAAAAAAAAAA==", NULL, &st, why,
                            sizeof why) != 0);
    CHECK(ws_check_response(resp, strlen(resp), key, "mqtt", &st, why, sizeof why) != 0);
    const char *r503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    CHECK(ws_check_response(r503, strlen(r503), key, NULL, &st, why, sizeof why) != 0 &&
          st == 503);
    /* Frames: a masked client frame unmasks to the payload; lengths 7/16/64. */
    uint8_t buf[70000 + 14], pl[70000];
    for (size_t i = 0; i < sizeof pl; i++)
        pl[i] = (uint8_t)(i * 7);
    size_t sizes[] = {0, 5, 125, 126, 65535, 65536, 70000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = ws_build_frame(buf, WS_OP_BINARY, pl, sizes[s], 0x11223344u);
        CHECK(buf[0] == 0x82 && (buf[1] & 0x80));
        size_t h = n - sizes[s];
        const uint8_t *m = buf + h - 4;
        int ok = 1;
        for (size_t i = 0; i < sizes[s]; i++)
            ok &= (uint8_t)(buf[h + i] ^ m[i & 3]) == pl[i];
        CHECK(ok);
        /* As a server frame (clear the mask bit, drop the key) it parses back. */
        uint8_t sf[70000 + 10];
        size_t sh = h - 4;
        memcpy(sf, buf, sh);
        sf[1] &= 0x7F;
        memcpy(sf + sh, pl, sizes[s]);
        ws_frame f;
        const char *w = NULL;
        CHECK(ws_parse_frame(sf, sh + sizes[s], &f, &w) == 1 && f.len == sizes[s] &&
              f.hdr_len == sh && f.fin && f.opcode == WS_OP_BINARY);
        if (sizes[s] > 0)
            CHECK(ws_parse_frame(sf, sh + sizes[s] - 1, &f, &w) == 0);
    }
    ws_frame f;
    const char *w = NULL;
    uint8_t masked[] = {0x81, 0x81, 1, 2, 3, 4, 'a'};
    CHECK(ws_parse_frame(masked, sizeof masked, &f, &w) == -1);
    uint8_t rsv[] = {0xC1, 0x01, 'a'};
    CHECK(ws_parse_frame(rsv, sizeof rsv, &f, &w) == -1);
    uint8_t bigping[] = {0x89, 126, 0, 200};
    CHECK(ws_parse_frame(bigping, sizeof bigping, &f, &w) == -1);
    uint8_t fragping[] = {0x09, 0};
    CHECK(ws_parse_frame(fragping, sizeof fragping, &f, &w) == -1);
    /* UTF-8 */
    CHECK(ws_utf8_valid((const uint8_t *)"h\xc3\xa9llo w\xe2\x82\xacrld \xf0\x9f\x98\x80", 19));
    CHECK(!ws_utf8_valid((const uint8_t *)"\xc0\xaf", 2));
    CHECK(!ws_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));
    CHECK(!ws_utf8_valid((const uint8_t *)"\xe2\x82", 2));
    CHECK(!ws_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));
    /* MQTT */
    uint8_t pk[512];
    size_t n = mqtt_publish(pk, "a/b", 3, 1, 7, (const uint8_t *)"hello", 5);
    mqtt_packet p;
    CHECK(mqtt_parse(pk, n, &p) == 1 && p.type == MQTT_PUBLISH && p.total == n);
    const uint8_t *t, *pay;
    size_t tl, pll;
    uint16_t pid;
    CHECK(mqtt_publish_fields(&p, &t, &tl, &pid, &pay, &pll) == 0 && tl == 3 && pid == 7 &&
          pll == 5 && !memcmp(pay, "hello", 5));
    CHECK(mqtt_parse(pk, n - 1, &p) == 0);
    uint8_t big[300];
    memset(big, 'x', sizeof big);
    n = mqtt_publish(pk, "t", 1, 0, 0, big, 200);
    CHECK(pk[1] == (uint8_t)(0x80 | ((203) & 0x7F)) && pk[2] == 1);
    CHECK(mqtt_parse(pk, n, &p) == 1 && p.body_len == 203);
    /* Histogram */
    hist h;
    hist_reset(&h);
    for (uint64_t v = 1; v <= 1000000; v++)
        hist_add(&h, v * 1000);
    uint64_t q50 = hist_quantile(&h, 0.5), q99 = hist_quantile(&h, 0.99);
    CHECK(q50 >= 500000000ull && q50 <= 500000000ull * 1.0625);
    CHECK(q99 >= 990000000ull && q99 <= 990000000ull * 1.0625);
    CHECK(hist_quantile(&h, 1.0) == 1000000000ull);
    for (uint64_t v = 1; v < (1ull << 40); v = v * 3 + 1)
        CHECK(hist_upper(hist_index(v)) >= v && hist_upper(hist_index(v)) <= v + v / 16 + 1);
    if (!fails)
        printf("selftest: ok\n");
    return fails ? 1 : 0;
}

/* ----------------------------------------------------------------- main */

static void on_signal(int sig)
{
    (void)sig;
    run_deadline = 0;
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t per_proc = ((uint64_t)O.conns + (uint64_t)O.procs - 1) / (uint64_t)O.procs;
    uint64_t need = per_proc + (uint64_t)O.pub_conns + 32;
    if (need > rl.rlim_cur) {
        fprintf(stderr,
                "cloudpush-bench: %d connections need about %llu descriptors per process but "
                "the limit is %llu: use --procs %llu or more\n",
                O.conns, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                (unsigned long long)(((uint64_t)O.conns + rl.rlim_cur - 100) / (rl.rlim_cur - 100)));
        return 2;
    }

    size_t shm_size = sizeof(shm_t) + sizeof(uint32_t) * (size_t)O.conns + (size_t)O.conns;
    S = mmap(NULL, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (S == MAP_FAILED) {
        perror("mmap");
        return 3;
    }
    EXPECTED = (_Atomic uint32_t *)(S + 1);
    INSTEP = (_Atomic uint8_t *)(EXPECTED + O.conns);
    S->t0 = now_ns();
    S->run_tag = O.seed;
    S->nprocs = O.procs;

    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    uint64_t t_begin = now_ns();
    run_deadline = t_begin + (uint64_t)(O.timeout * 1e9);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    for (int p = 1; p < O.procs; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 3;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            signal(SIGINT, SIG_IGN);
            worker_init(p);
            for (;;)
                loop_once(5000);
        }
        children[p] = pid;
    }
    worker_init(0);

    say("cloudpush-bench: %s %s, %d connections, %d process(es), fd limit %llu\n", sys_name(),
        wl_name(), O.conns, O.procs, (unsigned long long)rl.rlim_cur);
    for (int i = 0; i < O.n_pids; i++)
        rss_before[i] = read_rss_kb(O.pids[i].pid);

    int rc = 0;
    if (O.wl != WL_CONNECT && pub_setup(10) != 0) {
        fprintf(stderr, "cloudpush-bench: publisher connections failed: %s\n",
                pub_stats()->first_error);
        rc = 1;
        goto out;
    }

    /* Connect. */
    connect_quiet_waited = wait_quiet(&connect_quiet_busy);
    {
        double limit = O.connect_timeout * (1.0 + (double)O.conns / (double)O.concurrency);
        unsigned long long b0, t0, b1, t1;
        cpu_snap cb[MAX_PIDS], ca[MAX_PIDS];
        for (int i = 0; i < O.n_pids; i++)
            snap_cpu(O.pids[i].pid, &cb[i]);
        uint64_t tc0 = now_ns();
        machine_ticks(&b0, &t0);
        connect_round(limit);
        machine_ticks(&b1, &t1);
        connect_wall = (double)(now_ns() - tc0) / 1e9;
        for (int i = 0; i < O.n_pids; i++) {
            snap_cpu(O.pids[i].pid, &ca[i]);
            connect_cpu[i] = diff_cpu(&cb[i], &ca[i]);
        }
        connect_machine_busy = t1 > t0 ? 100.0 * (double)(b1 - b0) / (double)(t1 - t0) : 0;
        merge_connstat(&CONNECT_RESULT);
        connect_ready_total = CONNECT_RESULT.ready;
        if (CONNECT_RESULT.last_ready_ns > CONNECT_RESULT.first_start_ns)
            connect_secs = (double)(CONNECT_RESULT.last_ready_ns - CONNECT_RESULT.first_start_ns) / 1e9;
        say("  connect: %llu ready, %llu failed in %.2f s (%.0f ready/s), time to ready p50 %.1f "
            "p99 %.1f max %.1f ms%s%s\n",
            (unsigned long long)CONNECT_RESULT.ready, (unsigned long long)CONNECT_RESULT.failed,
            connect_secs, connect_secs > 0 ? (double)CONNECT_RESULT.ready / connect_secs : 0.0,
            ms(hist_quantile(&CONNECT_RESULT.lat, 0.5)), ms(hist_quantile(&CONNECT_RESULT.lat, 0.99)),
            ms(CONNECT_RESULT.lat.max), CONNECT_RESULT.first_error[0] ? "; first error: " : "",
            CONNECT_RESULT.first_error);
    }
    if (O.sys == SYS_NCHAN && O.have_status) {
        /* nchan answers the upgrade before every worker knows the subscriber. */
        uint64_t deadline = now_ns() + 15000000000ull;
        char buf[4096];
        for (;;) {
            int subs = -1;
            if (http_get(&O.status_url, buf, sizeof buf) > 0) {
                char *p = strstr(buf, "subscribers:");
                if (p)
                    subs = atoi(p + 12);
            }
            nchan_subscribers = subs;
            if (subs >= (int)connect_ready_total || now_ns() > deadline)
                break;
            serve_for(0.1);
        }
        say("  nchan stub status: %d subscribers\n", nchan_subscribers);
    }
    serve_for(O.settle); /* let the servers settle (allocations, subscriptions) */
    for (int i = 0; i < O.n_pids; i++)
        rss_after[i] = read_rss_kb(O.pids[i].pid);
    if (O.wl == WL_CONNECT) {
        cpu_snap before[MAX_PIDS], after[MAX_PIDS];
        for (int i = 0; i < O.n_pids; i++)
            snap_cpu(O.pids[i].pid, &before[i]);
        uint64_t t0 = now_ns();
        unsigned long long b0, m0, b1, m1;
        machine_ticks(&b0, &m0);
        serve_for(O.hold);
        machine_ticks(&b1, &m1);
        hold_machine_busy = m1 > m0 ? 100.0 * (double)(b1 - b0) / (double)(m1 - m0) : 0;
        hold_wall = (double)(now_ns() - t0) / 1e9;
        for (int i = 0; i < O.n_pids; i++) {
            snap_cpu(O.pids[i].pid, &after[i]);
            hold_cpu[i] = diff_cpu(&before[i], &after[i]);
            say("  %s: %.1f%% of a core while the connections are idle (busiest thread %s %.1f%%)\n",
                O.pids[i].name, 100.0 * hold_cpu[i].secs / hold_wall, hold_cpu[i].top_comm,
                100.0 * hold_cpu[i].top_secs / hold_wall);
        }
    }
    for (int i = 0; i < O.n_pids; i++)
        rss_hold[i] = read_rss_kb(O.pids[i].pid);
    open_after_hold = sum_open();
    for (int i = 0; i < O.n_pids && connect_wall > 0; i++)
        say("  %s: %.0f%% of a core while connecting (busiest thread %s %.0f%%)\n", O.pids[i].name,
            100.0 * connect_cpu[i].secs / connect_wall, connect_cpu[i].top_comm,
            100.0 * connect_cpu[i].top_secs / connect_wall);
    {
        long tb = 0, ta = 0;
        for (int i = 0; i < O.n_pids; i++) {
            tb += rss_before[i];
            ta += rss_hold[i];
            say("  %s (pid %d): RSS %ld kB -> %ld kB -> %ld kB\n", O.pids[i].name, O.pids[i].pid,
                rss_before[i], rss_after[i], rss_hold[i]);
        }
        if (O.n_pids && connect_ready_total)
            say("  server RSS per connection: %.0f bytes; %llu open after hold\n",
                (double)(ta - tb) * 1024.0 / (double)connect_ready_total,
                (unsigned long long)open_after_hold);
    }

    if (O.wl != WL_CONNECT && connect_ready_total > 0) {
        if (O.warmup > 0) {
            /* Not judged: brings every component out of its idle state
             * (e.g. Paho's receive thread sleeps 100 ms after each idle
             * second, see docs/benchmarks.md). */
            double wr = O.n_rates ? O.rates[0] : O.search_start;
            run_step_d("warmup", wr < 100 ? wr : 100, O.warmup);
        }
        for (int i = 0; i < O.n_rates; i++)
            run_step("fixed", O.rates[i]);
        if (O.search) {
            double r = O.search_start, best = 0, fail = 0;
            while (r <= O.search_max && now_ns() < run_deadline) {
                step_result *s = run_step("search", r);
                if (!s)
                    break;
                if (s->pass) {
                    best = r;
                    r *= O.search_factor;
                } else {
                    fail = r;
                    break;
                }
            }
            for (int i = 0; i < O.refine && fail > 0 && !damaged; i++) {
                double mid = best > 0 ? (best + fail) / 2 : fail / 2;
                mid = mid >= 100 ? (double)(long)(mid / 10) * 10 : (double)(long)mid;
                if (mid <= best || mid >= fail || mid < 1)
                    break;
                step_result *s = run_step("search", mid);
                if (!s)
                    break;
                if (s->pass)
                    best = mid;
                else
                    fail = mid;
            }
            say("  search: best passing rate %.0f/s%s\n", best,
                fail > 0 ? "" : " (the top of the range passed)");
            if (O.half && best > 0)
                run_step("half", best / 2);
        } else if (O.half) {
            double best = 0;
            for (int i = 0; i < NR; i++)
                if (R[i].pass && R[i].rate > best && strcmp(R[i].tag, "warmup") != 0)
                    best = R[i].rate;
            if (best > 0)
                run_step("half", best / 2);
        }
    }

out:;
    int cmd = send_cmd(CMD_CLOSE);
    run_deadline = now_ns() + 20000000000ull;
    wait_cmd(cmd, 15);
    {
        /* Closes outside steps seen after the connect phase; the connect
         * numbers themselves stay those of the first round. */
        connstat later;
        merge_connstat(&later);
        CONNECT_RESULT.idle_closes = later.idle_closes;
        memcpy(CONNECT_RESULT.idle_codes, later.idle_codes, sizeof later.idle_codes);
    }
    send_cmd(CMD_EXIT);
    for (int p = 1; p < O.procs; p++) {
        int st;
        if (children[p] > 0)
            waitpid(children[p], &st, 0);
    }
    worker_free();
    total_wall = (double)(now_ns() - t_begin) / 1e9;
    total_cpu = (double)gen_cpu_ns_total() / 1e9;
    say("  generator: %.2f s CPU over %.2f s wall (%.1f%% of %d cores)\n", total_cpu, total_wall,
        100.0 * total_cpu / (total_wall * ncores()), ncores());
    if (O.json_path[0])
        write_json(O.json_path, date);
    munmap(S, shm_size);
    return rc;
}
