#include "lwshttp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "ids.h"
#include "log.h"

int cp_lws_reply(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len)
{
    unsigned char headers[LWS_PRE + 512];
    unsigned char *start = headers + LWS_PRE, *p = start, *end = headers + sizeof headers - 1;
    if (lws_add_http_common_headers(wsi, status, content_type, (lws_filepos_t)len, &p, end))
        return -1;
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    /* lws copies what the socket cannot take at once into its own buffer. */
    cp_buf tx;
    cp_buf_init(&tx);
    int rc = -1;
    if (cp_buf_reserve(&tx, LWS_PRE + len) == 0) {
        memcpy(tx.data + LWS_PRE, body, len);
        rc = lws_write(wsi, (unsigned char *)tx.data + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) <
                     (int)len
                 ? -1
                 : 0;
    }
    cp_buf_free(&tx);
    return rc;
}

int cp_lws_reply_json(struct lws *wsi, unsigned status, const char *body)
{
    return cp_lws_reply(wsi, status, "application/json", body, strlen(body));
}

int cp_lws_reply_error(struct lws *wsi, unsigned status, const char *code, const char *msg)
{
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "{\"success\":false,\"code\":");
    cp_buf_json_string(&b, code, strlen(code));
    cp_buf_puts(&b, ",\"msg\":");
    cp_buf_json_string(&b, msg, strlen(msg));
    cp_buf_putc(&b, '}');
    int rc = b.failed ? -1 : cp_lws_reply(wsi, status, "application/json", b.data, b.len);
    cp_buf_free(&b);
    return rc;
}

int cp_lws_channel_id(struct lws *wsi, char *out, size_t cap)
{
    /* Only the service thread calls this. */
    static char frag[4096];
    static const char key[] = "channelId=";
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0)
            return 0;
        if (flen >= (int)sizeof frag)
            continue;
        if (lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            continue;
        if (strncmp(frag, key, sizeof key - 1) != 0)
            continue;
        const char *v = frag + sizeof key - 1;
        size_t vlen = strlen(v);
        if (vlen == 0)
            return 0;
        if (!cp_channel_id_valid(v, vlen) || vlen >= cap)
            return -1;
        memcpy(out, v, vlen + 1);
        return (int)vlen;
    }
}

int cp_lws_is_get(struct lws *wsi) { return lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0; }

/* lws 4.1 ignores a numeric address in info.iface and listens everywhere,
 * but honours an interface name and binds that interface's first address.
 * So find the interface that owns the address, and insist that it is the
 * interface's first one of its family, or we would bind something else. */
int cp_lws_iface_for(const char *host, char *ifname, size_t cap)
{
    if (!*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0 ||
        strcmp(host, "::") == 0) {
        ifname[0] = '\0';
        return 0;
    }
    struct addrinfo hints = {.ai_flags = AI_ADDRCONFIG}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        log_error("--listen: cannot resolve '%s'", host);
        return -1;
    }
    int family = res->ai_family;
    unsigned char want[16];
    size_t want_len = family == AF_INET6 ? 16 : 4;
    if (family == AF_INET6)
        memcpy(want, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, 16);
    else
        memcpy(want, &((struct sockaddr_in *)res->ai_addr)->sin_addr, 4);
    freeaddrinfo(res);

    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        log_error("--listen: getifaddrs: %s", strerror(errno));
        return -1;
    }
    int found = 0, first_of_iface = 0;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != family)
            continue;
        const void *a = family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if (memcmp(a, want, want_len) != 0)
            continue;
        snprintf(ifname, cap, "%s", i->ifa_name);
        found = 1;
        /* Is it the first address of this family on that interface? */
        for (struct ifaddrs *j = ifs; j; j = j->ifa_next) {
            if (!j->ifa_addr || j->ifa_addr->sa_family != family ||
                strcmp(j->ifa_name, i->ifa_name) != 0)
                continue;
            first_of_iface = j == i;
            break;
        }
        break;
    }
    freeifaddrs(ifs);
    if (!found) {
        log_error("--listen: %s is not an address of this host", host);
        return -1;
    }
    if (!first_of_iface) {
        log_error("--listen: %s is a secondary address of %s; libwebsockets 4.1 can only bind "
                  "an interface's first address (or use 0.0.0.0)",
                  host, ifname);
        return -1;
    }
    return 0;
}

