#include "metrics.h"

#include <math.h>

void cp_metric_family(cp_buf *b, const char *name, const char *type, const char *help)
{
    cp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void cp_metric_sample(cp_buf *b, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        cp_buf_printf(b, "%s{%s} ", name, labels);
    else
        cp_buf_printf(b, "%s ", name);
    if (value == floor(value) && fabs(value) < 9e15)
        cp_buf_printf(b, "%.0f\n", value);
    else
        cp_buf_printf(b, "%.6g\n", value);
}

void cp_metric_simple(cp_buf *b, const char *name, const char *type, const char *help,
                      double value)
{
    cp_metric_family(b, name, type, help);
    cp_metric_sample(b, name, NULL, value);
}
