#include "service.h"

#include <systemd/sd-daemon.h>

#include "log.h"

static void notify(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0)
        log_warn("sd_notify %s: error %d", state, -rc);
}

void cp_service_ready(void) { notify("READY=1"); }

void cp_service_stopping(void) { notify("STOPPING=1"); }
