/* Telling the service manager how the program is doing (systemd's
 * sd_notify: a unit with Type=notify waits for "ready"). Without a service
 * manager (no NOTIFY_SOCKET) these do nothing. */
#ifndef CP_SERVICE_H
#define CP_SERVICE_H

/* Listening and serving: the unit counts as started. */
void cp_service_ready(void);
/* Shutting down (a stop takes a while: sessions are closed first). */
void cp_service_stopping(void);

#endif
