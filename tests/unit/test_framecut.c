/* balancer/framecut.c: where a bridge's byte stream stands (HTTP answer,
 * frame headers, payloads skipped by count), fed whole or byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "framecut.h"

static const char ok101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";

/* Feeds in pieces of `step` bytes; returns how often the tracker stood at a
 * boundary after a piece. */
static int feed(framecut *f, const unsigned char *p, size_t len, size_t step)
{
    int at = 0;
    for (size_t i = 0; i < len; i += step) {
        size_t n = len - i < step ? len - i : step;
        framecut_feed(f, p + i, n);
        at += framecut_at_boundary(f);
    }
    return at;
}

static size_t frame(unsigned char *out, uint8_t op, int fin, size_t len)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (len < 126) {
        out[h++] = (uint8_t)len;
    } else if (len < 65536) {
        out[h++] = 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memset(out + h, 'a', len);
    return h + len;
}

static void upgraded_then_frames(void **state)
{
    (void)state;
    static unsigned char buf[200000];
    for (size_t step = 1; step <= 4096; step *= 8) {
        framecut f;
        framecut_init(&f);
        assert_false(framecut_head_done(&f));
        feed(&f, (const unsigned char *)ok101, sizeof ok101 - 1, step);
        assert_true(framecut_head_done(&f));
        assert_true(framecut_at_boundary(&f));
        size_t n = 0;
        n += frame(buf + n, 0x1, 1, 100);    /* 7-bit length */
        n += frame(buf + n, 0x2, 0, 300);    /* 16-bit, a fragment */
        n += frame(buf + n, 0x9, 1, 4);      /* a ping between fragments */
        n += frame(buf + n, 0x0, 1, 70000);  /* 64-bit */
        n += frame(buf + n, 0x1, 1, 0);      /* empty */
        feed(&f, buf, n, step);
        assert_true(framecut_at_boundary(&f));
        assert_false(f.close_seen);
        /* Mid-frame: not a boundary. */
        size_t m = frame(buf, 0x1, 1, 1000);
        framecut_feed(&f, buf, 500);
        assert_false(framecut_at_boundary(&f));
        framecut_feed(&f, buf + 500, m - 500);
        assert_true(framecut_at_boundary(&f));
        /* Mid-header: not a boundary either. */
        m = frame(buf, 0x1, 1, 200);
        framecut_feed(&f, buf, 1);
        assert_false(framecut_at_boundary(&f));
        framecut_feed(&f, buf + 1, m - 1);
        assert_true(framecut_at_boundary(&f));
        m = frame(buf, 0x8, 1, 2);
        framecut_feed(&f, buf, m);
        assert_true(f.close_seen);
    }
}

static void refusal_is_not_frames(void **state)
{
    (void)state;
    static const char refusal[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}";
    framecut f;
    framecut_init(&f);
    framecut_feed(&f, (const unsigned char *)refusal, sizeof refusal - 1);
    assert_true(framecut_head_done(&f));
    assert_false(framecut_at_boundary(&f));
    /* A \r\n\r\n split over pieces and a stray \r are still found. */
    static const char split[] = "HTTP/1.1 101 OK\r\nX: \r\r\n\r\n";
    framecut_init(&f);
    feed(&f, (const unsigned char *)split, sizeof split - 1, 1);
    assert_true(framecut_at_boundary(&f));
}

static void close_frame(void **state)
{
    (void)state;
    unsigned char out[200];
    size_t n = framecut_close_frame(out, 1012, "balancer restarting");
    assert_int_equal(n, 4 + strlen("balancer restarting"));
    assert_int_equal(out[0], 0x88);
    assert_int_equal(out[1], 2 + strlen("balancer restarting"));
    assert_int_equal(out[2] << 8 | out[3], 1012);
    char longer[300];
    memset(longer, 'r', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_int_equal(framecut_close_frame(out, 1001, longer), 4 + 123); /* 125-byte limit */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(upgraded_then_frames),
        cmocka_unit_test(refusal_is_not_frames),
        cmocka_unit_test(close_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
