/* SO_REUSEPORT for the workers' listeners (workers.h).
 *
 * lws 4.1.6 has LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE, but on Linux it sets
 * nothing (it only drops SO_EXCLUSIVEADDRUSE on Windows), and it binds its
 * listening socket inside lws_create_context, where no callback runs
 * before bind(2). So the bridge interposes bind(2) for its shared
 * libwebsockets: on the listening port, and only in a worker, the socket
 * gets SO_REUSEPORT first. Every worker then has its own listening socket
 * on the port and the kernel spreads new connections over them by a hash
 * of the addresses (no thundering herd, no accept lock). */
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "workers.h"

static int shared_port; /* 0: bind as usual */

void workers_share_port(int port) { shared_port = port; }

static int port_of(const struct sockaddr *addr, socklen_t len)
{
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
        return ntohs(((const struct sockaddr_in *)addr)->sin_port);
    if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6))
        return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (shared_port && addr && port_of(addr, len) == shared_port) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    return (int)syscall(SYS_bind, fd, addr, len);
}
