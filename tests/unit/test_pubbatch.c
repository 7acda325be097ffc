/* Unit tests for common/pubbatch.c: the accounting of a batch of parallel
 * QoS 1 publishes (every slot settled once, failures counted, on_settled
 * run once by whoever settles last, the batch outliving its owner).
 *
 * Slots are settled the way the binaries settle them: through cp_bus on a
 * real mosquitto, which the test starts on a free loopback port (the
 * `mosquitto` binary must be installed), and through cp_bus refusing a
 * publish at once. Nothing is mocked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "pubbatch.h"

/* ---- a real broker for the group */

static pid_t broker_pid;
static int broker_port;
static char broker_dir[] = "/tmp/cp-test-pubbatch-XXXXXX";
static char broker_url[64];
static cp_bus *bus; /* connected to the broker */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int start_broker(void)
{
    if (!mkdtemp(broker_dir))
        return -1;
    char conf[256];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", broker_dir);
    broker_port = free_port();
    FILE *f = fopen(conf, "w");
    if (!f || broker_port < 0)
        return -1;
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n",
            broker_port);
    if (geteuid() == 0)
        fprintf(f, "user root\n"); /* else it drops to user mosquitto */
    fclose(f);
    broker_pid = fork();
    if (broker_pid < 0)
        return -1;
    if (broker_pid == 0) {
        /* The broker goes with the test, also when the test crashes. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1)
            _exit(127);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && !port_accepts(broker_port); i++)
        sleep_ms(50);
    return port_accepts(broker_port) ? 0 : -1;
}

static void stop_broker(void)
{
    if (broker_pid > 0) {
        kill(broker_pid, SIGTERM);
        waitpid(broker_pid, NULL, 0);
        broker_pid = 0;
    }
    char conf[256];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", broker_dir);
    unlink(conf);
    rmdir(broker_dir);
}

static cp_bus *new_bus(const char *url, const char *client_id, int no_offline_buffer)
{
    cp_bus_options o = {.url = url, .client_id = client_id, .keepalive_s = 30,
                        .no_offline_buffer = no_offline_buffer};
    return cp_bus_create(&o);
}

static int group_setup(void **state)
{
    (void)state;
    if (start_broker() != 0) {
        fprintf(stderr, "cannot start mosquitto on 127.0.0.1:%d\n", broker_port);
        stop_broker();
        return -1;
    }
    snprintf(broker_url, sizeof broker_url, "tcp://127.0.0.1:%d", broker_port);
    bus = new_bus(broker_url, "cp-test-pubbatch", 1);
    if (!bus || cp_bus_start(bus) != 0)
        return -1;
    for (int i = 0; i < 200 && !cp_bus_is_connected(bus); i++)
        sleep_ms(50);
    return cp_bus_is_connected(bus) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (bus) {
        cp_bus_stop(bus, 2000);
        cp_bus_destroy(bus);
    }
    stop_broker();
    return 0;
}

/* ---- on_settled bookkeeping */

typedef struct {
    atomic_int calls;
    atomic_int pending_seen; /* batch->pending when on_settled ran */
    pthread_t thread;
} settled_log;

static void on_settled(cp_pub_batch *batch)
{
    settled_log *log = batch->ud;
    atomic_store(&log->pending_seen, atomic_load(&batch->pending));
    log->thread = pthread_self();
    atomic_fetch_add(&log->calls, 1);
}

static void wait_calls(settled_log *log, int want)
{
    for (int i = 0; i < 200 && atomic_load(&log->calls) < want; i++)
        sleep_ms(10);
}

/* ---- without a broker */

static void test_abandon_settles_all_as_failed(void **state)
{
    (void)state;
    settled_log log = {0};
    cp_pub_batch *b = cp_pub_batch_new(3, on_settled, &log);
    assert_non_null(b);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(cp_pub_batch_state(b, i), CP_PUB_PENDING);
    cp_pub_batch_abandon(b, 0);
    assert_int_equal(cp_pub_batch_wait(b, 0), 0);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(cp_pub_batch_state(b, i), CP_PUB_FAILED);
    assert_int_equal(atomic_load(&b->failed), 3);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&log.pending_seen), 0);
    /* Abandoning again settles nothing twice (no count, no reference). */
    cp_pub_batch_abandon(b, 0);
    assert_int_equal(atomic_load(&b->failed), 3);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&b->refs), 1);
    cp_pub_batch_release(b);
}

static void test_wait_times_out_with_pending_count(void **state)
{
    (void)state;
    cp_pub_batch *b = cp_pub_batch_new(4, NULL, NULL);
    assert_non_null(b);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(cp_pub_batch_wait(b, 100), 4);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 90);
    /* Slots 0 and 1 refused by a bus that is down, 2 and 3 abandoned. */
    cp_bus *down = new_bus("tcp://127.0.0.1:1", "cp-test-pubbatch-wait", 1);
    assert_non_null(down);
    cp_pub_batch_publish(b, 0, down, "cloudpush/test/down", "{}", 2);
    assert_int_equal(cp_pub_batch_wait(b, 0), 3);
    cp_pub_batch_publish(b, 1, down, "cloudpush/test/down", "{}", 2);
    assert_int_equal(cp_pub_batch_wait(b, 0), 2);
    cp_pub_batch_abandon(b, 2);
    assert_int_equal(cp_pub_batch_wait(b, 0), 0);
    cp_pub_batch_release(b);
    cp_bus_destroy(down);
}

/* A bus that is not connected and buffers nothing refuses every publish
 * at once: the slot is settled as failed inside cp_pub_batch_publish. */
static void test_refused_publish_settles_at_once(void **state)
{
    (void)state;
    cp_bus *down = new_bus("tcp://127.0.0.1:1", "cp-test-pubbatch-down", 1);
    assert_non_null(down);
    settled_log log = {0};
    cp_pub_batch *b = cp_pub_batch_new(2, on_settled, &log);
    cp_pub_batch_publish(b, 0, down, "cloudpush/test/down", "{}", 2);
    assert_int_equal(cp_pub_batch_state(b, 0), CP_PUB_FAILED);
    assert_int_equal(atomic_load(&log.calls), 0); /* slot 1 still pending */
    cp_pub_batch_publish(b, 1, down, "cloudpush/test/down", "{}", 2);
    assert_int_equal(cp_pub_batch_wait(b, 0), 0);
    assert_int_equal(atomic_load(&b->failed), 2);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_true(pthread_equal(log.thread, pthread_self())); /* settled here */
    cp_pub_batch_release(b);
    cp_bus_destroy(down);
}

/* ---- against the broker */

enum { PARALLEL_SLOTS = 400, PUBLISHERS = 4 };

typedef struct {
    cp_pub_batch *b;
    size_t first, n;
} publisher_arg;

static void *publish_range(void *arg)
{
    publisher_arg *a = arg;
    char topic[64], payload[64];
    for (size_t i = a->first; i < a->first + a->n; i++) {
        snprintf(topic, sizeof topic, "cloudpush/test/pubbatch/%zu", i % 7);
        int len = snprintf(payload, sizeof payload, "{\"slot\":%zu}", i);
        cp_pub_batch_publish(a->b, i, bus, topic, payload, (size_t)len);
    }
    return NULL;
}

/* Several threads publish slots of one batch while Paho's threads settle
 * them: every slot ends OK, pending reaches 0 once, on_settled runs once on
 * the thread of the last PUBACK, and wait() sees it. */
static void test_parallel_publishes_all_acknowledged(void **state)
{
    (void)state;
    cp_bus_stats before, after;
    cp_bus_get_stats(bus, &before);
    settled_log log = {0};
    cp_pub_batch *b = cp_pub_batch_new(PARALLEL_SLOTS, on_settled, &log);
    assert_non_null(b);
    pthread_t threads[PUBLISHERS];
    publisher_arg args[PUBLISHERS];
    for (size_t t = 0; t < PUBLISHERS; t++) {
        size_t per_thread = PARALLEL_SLOTS / PUBLISHERS;
        args[t] = (publisher_arg){b, t * per_thread, per_thread};
        assert_int_equal(pthread_create(&threads[t], NULL, publish_range, &args[t]), 0);
    }
    for (size_t t = 0; t < PUBLISHERS; t++)
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    assert_int_equal(cp_pub_batch_wait(b, 10000), 0);
    for (size_t i = 0; i < PARALLEL_SLOTS; i++)
        assert_int_equal(cp_pub_batch_state(b, i), CP_PUB_OK);
    assert_int_equal(atomic_load(&b->failed), 0);
    wait_calls(&log, 1); /* wait() may wake before on_settled returned */
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&log.pending_seen), 0);
    assert_false(pthread_equal(log.thread, pthread_self()));
    cp_bus_get_stats(bus, &after);
    assert_int_equal(after.publish_ok - before.publish_ok, PARALLEL_SLOTS);
    cp_pub_batch_release(b);
}

/* Some slots refused at once (a topic that is not UTF-8), the rest
 * acknowledged by the broker, the tail abandoned: failed counts exactly the
 * refused and abandoned ones and on_settled still runs once. */
static void test_mixed_outcomes_are_counted(void **state)
{
    (void)state;
    enum { N = 30, PUBLISHED = 24 };
    cp_bus_stats before, after;
    cp_bus_get_stats(bus, &before);
    settled_log log = {0};
    cp_pub_batch *b = cp_pub_batch_new(N, on_settled, &log);
    int refused = 0;
    for (size_t i = 0; i < PUBLISHED; i++) {
        const char *topic = i % 5 == 0 ? "cloudpush/test/\xff\xfe" : "cloudpush/test/mixed";
        refused += i % 5 == 0;
        cp_pub_batch_publish(b, i, bus, topic, "{}", 2);
    }
    cp_pub_batch_abandon(b, PUBLISHED); /* validation stopped early */
    assert_int_equal(cp_pub_batch_wait(b, 10000), 0);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(cp_pub_batch_state(b, i),
                         i >= PUBLISHED || i % 5 == 0 ? CP_PUB_FAILED : CP_PUB_OK);
    assert_int_equal(atomic_load(&b->failed), refused + (N - PUBLISHED));
    cp_bus_get_stats(bus, &after);
    assert_int_equal(after.publish_rejected - before.publish_rejected, refused);
    assert_int_equal(after.publish_ok - before.publish_ok, PUBLISHED - refused);
    wait_calls(&log, 1);
    assert_int_equal(atomic_load(&log.calls), 1);
    cp_pub_batch_release(b);
}

/* The owner lets go before the broker answered (an HTTP worker whose wait
 * timed out): the batch lives until the last slot settles, and on_settled
 * still runs once (ASan checks the memory). */
static void test_owner_releases_before_settlement(void **state)
{
    (void)state;
    settled_log log = {0};
    cp_pub_batch *b = cp_pub_batch_new(50, on_settled, &log);
    for (size_t i = 0; i < 50; i++)
        cp_pub_batch_publish(b, i, bus, "cloudpush/test/early-release", "{}", 2);
    cp_pub_batch_release(b);
    wait_calls(&log, 1);
    assert_int_equal(atomic_load(&log.calls), 1);
    assert_int_equal(atomic_load(&log.pending_seen), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_abandon_settles_all_as_failed),
        cmocka_unit_test(test_wait_times_out_with_pending_count),
        cmocka_unit_test(test_refused_publish_settles_at_once),
        cmocka_unit_test(test_parallel_publishes_all_acknowledged),
        cmocka_unit_test(test_mixed_outcomes_are_counted),
        cmocka_unit_test(test_owner_releases_before_settlement),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
