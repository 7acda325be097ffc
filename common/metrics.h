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

#endif
