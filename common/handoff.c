#include "handoff.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cp_fd_send(int sock, int fd, const void *msg, size_t len)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {(void *)msg, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                       .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == (ssize_t)len)
        return 0;
    if (n >= 0) {
        errno = EMSGSIZE; /* a message socket sends all or nothing */
        return -1;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
}

ssize_t cp_fd_recv(int sock, void *buf, size_t cap, int *fd)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {buf, cap};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                       .msg_controllen = sizeof ctl.space};
    *fd = -1;
    ssize_t n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(fd, CMSG_DATA(c), sizeof *fd);
    return n;
}

int cp_handoff_dir(const char *setting, char *out, size_t cap)
{
    if (!setting || !*setting || strcmp(setting, "off") == 0)
        return 0;
    int n;
    if (strcmp(setting, "auto") == 0) {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg == '/')
            n = snprintf(out, cap, "%s/cloudpush", xdg);
        else
            n = snprintf(out, cap, "/tmp/cloudpush-%lu", (unsigned long)geteuid());
    } else {
        n = snprintf(out, cap, "%s", setting);
    }
    /* Room for "/<bridge id>.sock" (ids are at most 64 bytes) in sun_path. */
    struct sockaddr_un sa;
    if (n < 0 || (size_t)n >= cap || (size_t)n + 1 + 64 + 5 >= sizeof sa.sun_path)
        return -1;
    return 1;
}

int cp_handoff_dir_check(const char *dir, int create, char *err, size_t cap)
{
    struct stat st;
    if (lstat(dir, &st) != 0) {
        if (errno != ENOENT || !create || (mkdir(dir, 0700) != 0 && errno != EEXIST)) {
            snprintf(err, cap, "%s: %s", dir, strerror(errno));
            return -1;
        }
        if (lstat(dir, &st) != 0) {
            snprintf(err, cap, "%s: %s", dir, strerror(errno));
            return -1;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, cap, "%s is not a directory", dir);
        return -1;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(err, cap, "%s belongs to another user (uid %lu)", dir,
                 (unsigned long)st.st_uid);
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, cap, "%s is writable by other users (mode %03o): make it 0700", dir,
                 (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

int cp_handoff_addr(const char *dir, const char *bridge_id, struct sockaddr_un *out,
                    socklen_t *len)
{
    memset(out, 0, sizeof *out);
    out->sun_family = AF_UNIX;
    int n = snprintf(out->sun_path, sizeof out->sun_path, "%s/%s.sock", dir, bridge_id);
    if (n < 0 || (size_t)n >= sizeof out->sun_path)
        return -1;
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
    return 0;
}
