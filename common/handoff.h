/* Passing an accepted socket between processes of one host (SCM_RIGHTS
 * over a Unix socket), and the hand-over directory where bridges wait for
 * the sockets the balancer gives them (docs/balancer.md, "Hand-over").
 *
 * A balancer that finds a bridge's hand-over socket on its own host gives
 * it the client's connection itself, with the upgrade request it read, and
 * is out of the path: the bridge then talks to the client directly, as if
 * it had accepted it. Bridges elsewhere are relayed (balancer/worker.c).
 *
 * Who may hand a bridge its clients, and whose socket the balancer trusts
 * with them, is decided by the directory: it must belong to the process's
 * user (or root) and be writable by nobody else, so nobody else can put a
 * socket there nor send to one (the sockets are 0600 as well). */
#ifndef CP_HANDOFF_H
#define CP_HANDOFF_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/* The upgrade request a hand-over carries, at most. */
#define CP_HANDOFF_REQUEST_MAX 12288

/* Sends len bytes and the descriptor fd in one message (SOCK_SEQPACKET or
 * DGRAM; never blocks). Returns 0 when sent, 1 when the socket is full
 * (EAGAIN), -1 on another error (errno says). */
int cp_fd_send(int sock, int fd, const void *msg, size_t len);

/* Receives one message and the descriptor in it (never blocks). Returns
 * its length, with *fd the descriptor (close-on-exec) or -1 when it came
 * without one; 0 at the end of the connection; -1 on an error or when
 * nothing is waiting (errno EAGAIN). A message longer than cap is cut
 * (its descriptor is still received: the caller closes it). */
ssize_t cp_fd_recv(int sock, void *buf, size_t cap, int *fd);

/* The hand-over directory of a --handover-dir setting: "auto" is
 * $XDG_RUNTIME_DIR/cloudpush when that is set, else /tmp/cloudpush-<uid>;
 * "" or "off" turns hand-overs off. Returns 1 (out holds the directory),
 * 0 (off) or -1 (the path is too long for a socket name). */
int cp_handoff_dir(const char *setting, char *out, size_t cap);

/* Makes sure dir is private: it is created (0700) when missing and
 * create is set, and must be a directory owned by this process's user or
 * root, writable by nobody else. Returns 0, or -1 with the reason in err. */
int cp_handoff_dir_check(const char *dir, int create, char *err, size_t cap);

/* The address of bridge_id's hand-over socket in dir. Returns 0, or -1
 * when the path does not fit a socket name. */
int cp_handoff_addr(const char *dir, const char *bridge_id, struct sockaddr_un *out,
                    socklen_t *len);

#endif
