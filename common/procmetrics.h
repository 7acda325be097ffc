/* The process metrics every Prometheus client library exports (process_*),
 * and cloudpush_build_info, for the /metrics of each binary. */
#ifndef CP_PROCMETRICS_H
#define CP_PROCMETRICS_H

#include "buf.h"

/* Appends cloudpush_build_info{program,version} 1 and process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds and process_start_time_seconds, read
 * from /proc and getrusage (a few small reads: cheap enough for a scrape,
 * also on an event loop). A value that cannot be read is left out. */
void cp_metrics_process(cp_buf *b, const char *program);

#endif
