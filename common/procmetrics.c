#include "procmetrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"

#ifndef CLOUDPUSH_VERSION
#define CLOUDPUSH_VERSION "0.1.0"
#endif

/* Reads a small /proc file whole; returns its length or -1. */
static long read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (long)n;
}

/* Since Linux 6.2 the size of /proc/self/fd is its number of entries: one
 * system call, where reading the directory takes several and, with tens of
 * thousands of sockets, milliseconds of the event loop that renders this.
 * Older kernels say 0 there: count the entries then. */
static long open_fds(void)
{
    struct stat st;
    if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0)
        return (long)st.st_size;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

/* Seconds since the epoch at which the process started: its start in clock
 * ticks after boot (/proc/self/stat field 22) plus the boot time. */
static double start_time_seconds(void)
{
    char buf[1024];
    if (read_small("/proc/self/stat", buf, sizeof buf) <= 0)
        return -1;
    /* Fields after the command name, which is in parentheses and may hold
     * spaces: start after the last ')'. Field 3 is the first after it. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long start_ticks = 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    if (field != 22 || sscanf(p, "%llu", &start_ticks) != 1)
        return -1;
    char stat[4096];
    if (read_small("/proc/stat", stat, sizeof stat) <= 0)
        return -1;
    const char *bt = strstr(stat, "\nbtime ");
    unsigned long long boot = 0;
    if (!bt || sscanf(bt + 7, "%llu", &boot) != 1)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)boot + (double)start_ticks / (double)hz : -1;
}

void cp_metrics_process(cp_buf *b, const char *program)
{
    cp_metric_family(b, "cloudpush_build_info", "gauge",
                     "Always 1; the labels name the program and its version.");
    char labels[128];
    snprintf(labels, sizeof labels, "program=\"%s\",version=\"%s\"", program, CLOUDPUSH_VERSION);
    cp_metric_sample(b, "cloudpush_build_info", labels, 1);

    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        cp_metric_simple(b, "process_cpu_seconds_total", "counter",
                         "Total user and system CPU time spent in seconds.", cpu);
    }
    char statm[256];
    unsigned long long pages_virtual, pages_resident;
    if (read_small("/proc/self/statm", statm, sizeof statm) > 0 &&
        sscanf(statm, "%llu %llu", &pages_virtual, &pages_resident) == 2) {
        double page = (double)sysconf(_SC_PAGESIZE);
        cp_metric_simple(b, "process_resident_memory_bytes", "gauge",
                         "Resident memory size in bytes.", (double)pages_resident * page);
        cp_metric_simple(b, "process_virtual_memory_bytes", "gauge",
                         "Virtual memory size in bytes.", (double)pages_virtual * page);
    }
    long fds = open_fds();
    if (fds >= 0)
        cp_metric_simple(b, "process_open_fds", "gauge", "Number of open file descriptors.",
                         (double)fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        cp_metric_simple(b, "process_max_fds", "gauge",
                         "Maximum number of open file descriptors (the soft limit).",
                         rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur);
    double started = start_time_seconds();
    if (started > 0)
        cp_metric_simple(b, "process_start_time_seconds", "gauge",
                         "Start time of the process since unix epoch in seconds.", started);
}
