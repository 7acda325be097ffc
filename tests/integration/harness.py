"""Integration test harness for cloudpush: broker and bridge processes,
WebSocket and MQTT clients.

Run with the Debian interpreter, /usr/bin/python3: it has python3-websocket
(websocket-client 1.2.3), python3-websockets 10.4 and python3-paho-mqtt 1.6.1.

Environment:
  CLOUDPUSH_BIN_DIR    directory of cloudpush-bridge (ctest sets it;
                       default build/bin of this checkout)
  CLOUDPUSH_SANITIZED  "1" for ASan/UBSan builds: every timeout is longer
  CLOUDPUSH_TEST_LOG_LEVEL  the bridge --log-level (default debug)
  CLOUDPUSH_KEEP_TMP   "1" keeps the temporary directories (logs) of failed
                       tests

Everything listens on 127.0.0.1 only. Every wait is bounded.
"""

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import paho.mqtt.client as mqtt
import websocket  # websocket-client

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MOSQUITTO_DIR = os.path.join(REPO, "mosquitto")

BIN_DIR = os.environ.get("CLOUDPUSH_BIN_DIR", os.path.join(REPO, "build", "bin"))
BRIDGE_BIN = os.path.join(BIN_DIR, "cloudpush-bridge")
HTTPAPI_BIN = os.path.join(BIN_DIR, "cloudpush-httpapi")
BALANCER_BIN = os.path.join(BIN_DIR, "cloudpush-balancer")
MOSQUITTO_BIN = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

SANITIZED = os.environ.get("CLOUDPUSH_SANITIZED", "") not in ("", "0")
# Multiplier for every timeout: sanitizer builds are several times slower.
SLOW = 3.0 if SANITIZED else 1.0
LOG_LEVEL = os.environ.get("CLOUDPUSH_TEST_LOG_LEVEL", "debug")

PREFIX = "cloudpush"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
# Keys of an envelope, in the order the bridge writes them.
ENVELOPE_ORDER = ["activeTime", "bepoch", "boffset", "broadcast", "epoch", "from", "messageId",
                  "msg", "msgType", "offset", "recovered", "requestId", "resultMsg", "sessionId",
                  "to", "trigger"]

MSG_ERROR, MSG_CONNECTION, MSG_BUSINESS, MSG_BUSINESS_ACK = -1, 0, 1, 2
MSG_HEARTBEAT, MSG_HEARTBEAT_ACK = 3, 4
TRIGGER_HTTP, TRIGGER_WEBSOCKET, TRIGGER_MQTT = 1, 2, 3


def t(seconds):
    """A timeout scaled for slow (sanitized) builds."""
    return seconds * SLOW


def log(*args):
    print("[harness]", *args, file=sys.stderr, flush=True)


_uniq_lock = threading.Lock()
_uniq_n = [0]


_handover_dir = None


def handover_dir():
    """The hand-over directory (--handover-dir) of the bridges and balancers
    this test process starts: its own, so that balancers never hand clients
    to a bridge of another test running at the same time with the same id."""
    global _handover_dir
    if _handover_dir is None:
        _handover_dir = tempfile.mkdtemp(prefix="cp-ho-")  # 0700
        import atexit
        atexit.register(shutil.rmtree, _handover_dir, True)
    return _handover_dir


def uniq(base):
    """A channel id unique within this test process: base-<pid>-<n>."""
    with _uniq_lock:
        _uniq_n[0] += 1
        return "%s-%d-%d" % (base, os.getpid() % 100000, _uniq_n[0])


_PORT_MARKS = os.path.join(tempfile.gettempdir(), "cloudpush-test-ports-%d" % os.getuid())
_PORT_RANDOM = __import__("random").SystemRandom()


def free_port():
    """A TCP port that is free on 127.0.0.1 right now and handed to no other
    test. Tests run in parallel (ctest -j): a port from bind(0) could be
    given to two of them before either listens, or taken meanwhile by an
    outgoing connection. So ports come from below the kernel's ephemeral
    range (which outgoing connections use) and each is reserved with a mark
    file that other test processes respect for an hour."""
    os.makedirs(_PORT_MARKS, exist_ok=True)
    for _ in range(2000):
        port = _PORT_RANDOM.randrange(10000, 32000)  # ephemeral ports start at 32768
        mark = os.path.join(_PORT_MARKS, str(port))
        try:
            if time.time() - os.stat(mark).st_mtime < 3600:
                continue
            os.unlink(mark)
        except FileNotFoundError:
            pass
        try:
            os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port left in 10000-32000")


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or timeout
    seconds passed (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, "" if last_exc is None else " (last error: %r)" % last_exc))
        time.sleep(interval)


def tcp_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, lines=80):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)
    return "\n".join(data.splitlines()[-lines:])


def stop_process(proc, timeout=5.0, sig=signal.SIGTERM):
    """Sends sig, waits up to timeout seconds, then SIGKILLs. Returns the exit
    code (negative signal number when killed by a signal)."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log("pid %d did not exit %.1fs after signal %d; SIGKILL" % (proc.pid, timeout, sig))
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


# ---------------------------------------------------------------- mosquitto

class Mosquitto:
    """A mosquitto broker on 127.0.0.1:<port> with its files in workdir.

    Persistence is on (database in workdir), so restart() keeps persistent
    sessions, subscriptions and queued QoS 1 messages."""

    def __init__(self, workdir, port=None, name="mosquitto", auth=None, extra_conf=""):
        """auth: None for anonymous access, or dict(password_file=..., acl_file=...)."""
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.name = name
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.proc = None
        self._logf = None
        lines = [
            "per_listener_settings false",
            "listener %d 127.0.0.1" % self.port,
            "persistence true",
            "persistence_location %s/" % self.dir,
            "persistence_file mosquitto.db",
            "autosave_interval 0",
            "max_queued_messages 100000",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type all",
            "log_timestamp true",
            "connection_messages true",
        ]
        if auth:
            lines += ["allow_anonymous false",
                      "password_file %s" % auth["password_file"],
                      "acl_file %s" % auth["acl_file"]]
        else:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            # As root mosquitto switches to the user "mosquitto" before it
            # reads the password/ACL files and writes the database; those live
            # in a root-only temporary directory.
            lines.append("user root")
        if extra_conf:
            lines.append(extra_conf)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def url(self):
        return "tcp://127.0.0.1:%d" % self.port

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=None):
        assert not self.running(), "mosquitto already running"
        self._logf = open(self.log_path, "ab")
        self._logf.write(b"==== harness: starting mosquitto ====\n")
        self._logf.flush()
        self.proc = subprocess.Popen([MOSQUITTO_BIN, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT, cwd=self.dir,
                                     start_new_session=True)
        deadline = time.monotonic() + (timeout or t(10))
        # Restarting on the same port: the old socket may linger briefly.
        while True:
            if self.proc.poll() is not None:
                # Possibly "address in use" right after a stop (restart()
                # retries).
                rc = self.stop()
                raise AssertionError("mosquitto exited with %s at start; log:\n%s" % (
                    rc, tail(self.log_path, 30)))
            if tcp_accepts(self.port):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("mosquitto did not accept TCP on %d; log:\n%s" % (
                    self.port, tail(self.log_path, 30)))
            time.sleep(0.05)

    def stop(self, timeout=5.0):
        rc = stop_process(self.proc, timeout)
        if self._logf:
            self._logf.close()
            self._logf = None
        return rc

    def restart(self, down_for=0.0):
        self.stop()
        if down_for:
            time.sleep(down_for)
        # The port must be free again (mosquitto sets SO_REUSEADDR).
        deadline = time.monotonic() + t(10)
        while True:
            try:
                return self.start()
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


# ---------------------------------------------------------------- TLS

OPENSSL_BIN = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args):
    r = subprocess.run([OPENSSL_BIN] + list(args), capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (" ".join(args[:2]), r.stderr[-2000:]))


class TestCA:
    """A throw-away certificate authority (P-256 keys, valid two days) made
    with the openssl command in workdir/<name>; issue() signs server and
    client certificates."""

    def __init__(self, workdir, name="ca"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
                 "-subj", "/CN=cloudpush test CA %s" % name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, names=("DNS:localhost", "IP:127.0.0.1"), client=False):
        """Signs a certificate for the subjectAltName entries names (a server
        certificate, or a client one); returns (cert_path, key_path)."""
        cert = os.path.join(self.dir, name + ".crt")
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
            if names:
                f.write("subjectAltName=%s\n" % ",".join(names))
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key


def tls_listener_conf(port, ca_file, cert_file, key_file, require_certificate=False):
    """mosquitto.conf lines of a TLS listener on 127.0.0.1:port (extra_conf
    of Mosquitto); require_certificate asks clients for a certificate signed
    by ca_file."""
    lines = ["listener %d 127.0.0.1" % port,
             "cafile %s" % ca_file,
             "certfile %s" % cert_file,
             "keyfile %s" % key_file]
    if require_certificate:
        lines.append("require_certificate true")
    return "\n".join(lines)


class TlsMosquitto(Mosquitto):
    """A Mosquitto with a second listener on 127.0.0.1:<tls_port> speaking
    TLS with server certificate (cert_file, key_file) signed by ca_file."""

    def __init__(self, workdir, ca_file, cert_file, key_file, require_certificate=False,
                 tls_port=None, **kw):
        self.tls_port = tls_port or free_port()
        conf = tls_listener_conf(self.tls_port, ca_file, cert_file, key_file,
                                 require_certificate)
        if kw.get("extra_conf"):
            conf = kw["extra_conf"] + "\n" + conf
        kw["extra_conf"] = conf
        super().__init__(workdir, **kw)

    def tls_url(self, host="127.0.0.1", scheme="ssl"):
        return "%s://%s:%d" % (scheme, host, self.tls_port)

    def start(self, timeout=None):
        super().start(timeout)
        wait_until(lambda: tcp_accepts(self.tls_port), timeout or t(10),
                   what="mosquitto TLS listener on %d" % self.tls_port)
        return self


# ---------------------------------------------------------------- bridge

class Redis:
    """A redis-server on 127.0.0.1:<port>, no persistence (a restart loses
    everything, as a crashed cache would)."""

    def __init__(self, workdir, port=None, name="redis"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self._logf = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self, timeout=None):
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--dir", self.dir],
            stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or tcp_accepts(self.port),
                   timeout or t(10), what="redis-server on %d" % self.port)
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited; log:\n%s" % tail(self.log_path, 30))
        return self

    def stop(self, timeout=5.0):
        rc = stop_process(self.proc, timeout)
        if self._logf:
            self._logf.close()
            self._logf = None
        return rc

    def cli(self, *args):
        """Runs redis-cli; returns its stdout lines."""
        out = subprocess.run(["redis-cli", "-p", str(self.port)] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=10)
        return [l for l in out.stdout.splitlines()]


class Service:
    """One cloudpush process listening on 127.0.0.1:<port>, ready when GET
    <health_path> answers 200. Subclasses build the command line."""

    binary = None
    health_path = "/healthz"

    def __init__(self, workdir, name, port=None, args=(), env=None):
        self.id = name
        self.port = port or free_port()
        self.args = list(args)
        self.env = env or {}
        self.log_path = os.path.join(workdir, "%s.log" % name)
        self.proc = None
        self.returncode = None
        self._logf = None

    def command(self):
        raise NotImplementedError

    def start(self, wait=True, timeout=None):
        if not os.access(self.binary, os.X_OK):
            raise AssertionError("binary %s not found or not executable (build it, or set "
                                 "CLOUDPUSH_BIN_DIR)" % self.binary)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPUSH_")}
        env["CLOUDPUSH_HANDOVER_DIR"] = handover_dir()
        env.update(self.env)
        if SANITIZED:
            env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        self._logf = open(self.log_path, "ab")
        self._logf.write(("==== harness: %s ====\n" % " ".join(self.command())).encode())
        self._logf.flush()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if wait:
            self.wait_healthy(timeout or t(10))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout=2.0):
        """(status, parsed JSON body or raw text) of the health endpoint"""
        st, _, body = http_request(self.port, "GET", self.health_path, timeout=timeout)
        try:
            return st, json.loads(body)
        except ValueError:
            return st, body

    def wait_healthy(self, timeout=None):
        timeout = timeout or t(10)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s during start; log:\n%s" % (
                    self.id, self.proc.returncode, tail(self.log_path, 60)))
            try:
                st, body = self.health(timeout=1.0)
                last = (st, body)
                if st == 200:
                    return body
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("%s: %s not 200 within %.1fs (last: %r); log:\n%s" % (
            self.id, self.health_path, timeout, last, tail(self.log_path, 60)))

    def wait_health_status(self, status, timeout):
        def check():
            st, body = self.health(timeout=1.0)
            return (st, body) if st == status else None
        return wait_until(check, timeout, 0.1, "%s %s %d" % (self.id, self.health_path, status))

    def metrics(self):
        st, headers, body = http_request(self.port, "GET", "/metrics")
        if st != 200:
            raise AssertionError("/metrics returned %d: %r" % (st, body[:300]))
        return body.decode("utf-8", "replace")

    def metric(self, name, labels=None):
        """Value of one sample in /metrics (0.0 when absent)."""
        return metric_value(self.metrics(), name, labels)

    def stop(self, timeout=None, sig=signal.SIGTERM, check=True):
        """SIGTERM (default), wait; returns the exit code (SIGKILL fallback).

        A process stopped with SIGTERM must exit 0: anything else (a crash,
        a hang, or LeakSanitizer's exit code 23 for a leak) fails the test
        that stops it, unless check is False."""
        if self.proc is None:
            return None
        already_stopped = self.returncode is not None
        self.returncode = stop_process(self.proc, timeout or t(10), sig)
        if self._logf:
            self._logf.close()
            self._logf = None
        if check and sig == signal.SIGTERM and not already_stopped and self.returncode != 0:
            raise AssertionError("%s exited with %s after SIGTERM (crash, hang or leak); log:\n%s"
                                 % (self.id, self.returncode, tail(self.log_path, 80)))
        return self.returncode


class Bridge(Service):
    """One cloudpush-bridge process."""

    binary = BRIDGE_BIN

    def __init__(self, workdir, mqtt_url, bridge_id="itbridge", port=None, args=(), env=None,
                 mqtt_credentials=None, redis=None):
        super().__init__(workdir, "bridge-%s" % bridge_id, port, args, env)
        self.id = bridge_id
        self.mqtt_url = mqtt_url
        self.mqtt_credentials = mqtt_credentials
        self.redis = redis

    def command(self):
        cmd = [self.binary, "--listen", "127.0.0.1:%d" % self.port, "--id", self.id,
               "--mqtt", self.mqtt_url, "--log-level", LOG_LEVEL,
               "--redis=" + (self.redis.url if self.redis else "")]
        if self.mqtt_credentials:
            cmd += ["--mqtt-user", self.mqtt_credentials[0],
                    "--mqtt-password", self.mqtt_credentials[1]]
        return cmd + self.args

    def healthz(self, timeout=2.0):
        return self.health(timeout)


class HttpApi(Service):
    """One cloudpush-httpapi process; ready when /readyz (broker connected)
    answers 200."""

    binary = HTTPAPI_BIN
    health_path = "/readyz"

    def __init__(self, workdir, mqtt_url, name="httpapi", port=None, args=(), env=None,
                 bridges=(), redis=None):
        super().__init__(workdir, name, port, args, env)
        self.mqtt_url = mqtt_url
        self.bridges = list(bridges)
        self.redis = redis

    def command(self):
        cmd = [self.binary, "--listen", "127.0.0.1:%d" % self.port, "--mqtt", self.mqtt_url,
               "--log-level", LOG_LEVEL, "--redis=" + (self.redis.url if self.redis else "")]
        if self.bridges:
            cmd += ["--console-bridges",
                    ",".join("ws://127.0.0.1:%d/ws" % b.port for b in self.bridges)]
        return cmd + self.args

    def push(self, body, path="/api/v1/push", headers=None, content_type="application/json",
             method="POST", timeout=10.0):
        """(status, parsed JSON or raw bytes, headers)"""
        hdrs = {"Content-Type": content_type} if content_type else {}
        hdrs.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        st, h, raw = http_request(self.port, method, path, headers=hdrs, body=data,
                                  timeout=t(timeout))
        try:
            return st, json.loads(raw), h
        except ValueError:
            return st, raw, h


class Balancer(Service):
    """One cloudpush-balancer process."""

    binary = BALANCER_BIN

    def __init__(self, workdir, redis, name="balancer", port=None, args=(), env=None):
        super().__init__(workdir, name, port, args, env)
        self.redis = redis

    def command(self):
        # SIGTERM drains relayed clients over --drain-seconds (10 s by
        # default): 2 s here, so that stop() (10 s) also waits for a
        # balancer stopped with clients still connected.
        drain = [] if "--drain-seconds" in self.args else ["--drain-seconds", "2"]
        return [self.binary, "--listen", "127.0.0.1:%d" % self.port, "--redis", self.redis.url,
                "--refresh-ms", "200", "--log-level", LOG_LEVEL] + drain + self.args

    def get_json(self, path):
        st, _, body = http_request(self.port, "GET", path)
        return st, json.loads(body)

    def live_ids(self):
        """The bridges it offers clients: neither draining nor unready."""
        st, body = self.get_json("/api/v1/bridges")
        return sorted(b["id"] for b in body["bridges"]
                      if not b["draining"] and b.get("ready", True))


def parse_metrics(text):
    """{(name, frozenset(labels.items())): float} from Prometheus text."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = {}
        if m.group(3):
            for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3)):
                labels[lm.group(1)] = lm.group(2)
        try:
            out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
        except ValueError:
            pass
    return out


def metric_value(text, name, labels=None):
    want = frozenset((labels or {}).items())
    return parse_metrics(text).get((name, want), 0.0)


def metric_sum(text, name):
    return sum(v for (n, _), v in parse_metrics(text).items() if n == name)


def wait_metric_delta(testcase, proc, name, labels, before, delta, timeout=3.0):
    """Waits until the sample name{labels} of proc reached before + delta,
    then asserts it is exactly that: a counter that did not move, or moved
    more than the action explains, fails."""
    want = before + delta
    wait_until(lambda: proc.metric(name, labels) >= want, t(timeout),
               what="%s%r to reach %g + %g" % (name, labels or {}, before, delta))
    testcase.assertEqual(proc.metric(name, labels), want,
                         "%s%r grew by more than %g" % (name, labels or {}, delta))


# ---------------------------------------------------------------- HTTP

def http_request(port, method, path, headers=None, body=None, timeout=5.0):
    """Plain HTTP/1.1 request. Returns (status, {lower-name: value}, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


# ---------------------------------------------------------------- WebSocket (websocket-client)

def ws_url(port, channel_id=None, path="/", query=None):
    q = dict(query or {})
    if channel_id is not None:
        q["channelId"] = channel_id
    qs = urllib.parse.urlencode(q, safe=":@")
    return "ws://127.0.0.1:%d%s%s" % (port, path, ("?" + qs) if qs else "")


def ws_connect(port, channel_id, timeout=5.0, path="/", query=None):
    """Opens a websocket-client connection (no frame read yet).

    websocket-client's own UTF-8 check is a pure-Python loop over every byte
    (about 6 MB/s): far too slow for the bulk tests, so it is skipped here;
    ws_recv_event decodes text frames with the (strict, fast) C codec."""
    return websocket.create_connection(ws_url(port, channel_id, path, query), timeout=t(timeout),
                                       skip_utf8_validation=True)


class WsClosed(Exception):
    def __init__(self, code, reason):
        super().__init__("connection closed with code %r reason %r" % (code, reason))
        self.code = code
        self.reason = reason


def ws_recv_event(ws, timeout=5.0):
    """Next data frame or close of a websocket-client socket, skipping (and
    answering) pings. Returns ("text", str), ("binary", bytes) or
    ("close", code, reason). Raises websocket.WebSocketTimeoutException."""
    ws.settimeout(t(timeout))
    deadline = time.monotonic() + t(timeout)
    while True:
        opcode, frame = ws.recv_data_frame(True)
        payload = frame.data if hasattr(frame, "data") else frame
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return ("text", payload.decode("utf-8"))
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return ("binary", payload)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            return ("close", code, payload[2:].decode("utf-8", "replace"))
        if time.monotonic() > deadline:
            raise websocket.WebSocketTimeoutException("only control frames within timeout")


def ws_recv_json(ws, timeout=5.0):
    """Next text frame parsed as JSON (raises WsClosed on a close frame).
    Returns (dict, raw text)."""
    ev = ws_recv_event(ws, timeout)
    if ev[0] == "close":
        raise WsClosed(ev[1], ev[2])
    if ev[0] != "text":
        raise AssertionError("expected a text frame, got %r" % (ev,))
    return json.loads(ev[1]), ev[1]


def ws_expect_close(ws, timeout=5.0):
    """Reads until the close frame (failing on data frames is left to the
    caller: data frames are returned in a list). Returns (code, reason, data)."""
    got = []
    deadline = time.monotonic() + t(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no close frame within %.1fs (got %d data frames)" % (
                t(timeout), len(got)))
        try:
            ev = ws_recv_event(ws, left / SLOW)
        except websocket.WebSocketTimeoutException:
            continue
        except websocket.WebSocketConnectionClosedException:
            raise AssertionError("TCP connection closed without a close frame (got %d data "
                                 "frames)" % len(got))
        if ev[0] == "close":
            return ev[1], ev[2], got
        got.append(ev)


def ws_expect_nothing(testcase, ws, seconds=0.3):
    """Asserts that no data frame arrives within seconds."""
    ws.settimeout(seconds)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            opcode, data = ws.recv_data_frame(True)
        except websocket.WebSocketTimeoutException:
            return
        if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
            continue
        payload = data.data if hasattr(data, "data") else data
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            testcase.fail("unexpected close frame %r" % (payload,))
        testcase.fail("unexpected frame: %r" % (payload,))


def ws_expect_marker(testcase, ws, message_id, timeout=5.0):
    """A positive barrier for "nothing else arrived": the caller sends a
    marker message on the same path after whatever must not arrive; the
    next data frame on ws must be that marker (JSON with this messageId).
    Messages on one path arrive in order, so anything the path carried
    before the marker would be read first. Returns the marker."""
    m, raw = ws_recv_json(ws, timeout)
    if m.get("messageId") != message_id:
        testcase.fail("a frame arrived before the marker %r: %s" % (message_id, raw))
    return m


def send_json(ws, obj):
    ws.send(json.dumps(obj, separators=(",", ":")))


class Session:
    """A connected websocket-client session that got its CONNECTION frame."""

    def __init__(self, port, channel_id, path="/", timeout=5.0, query=None):
        self.channel_id = channel_id
        self.ws = ws_connect(port, channel_id, path=path, timeout=timeout, query=query)
        try:
            self.connection, self.connection_raw = ws_recv_json(self.ws, timeout)
        except Exception:
            self.ws.close()
            raise
        if self.connection.get("msgType") != MSG_CONNECTION:
            self.ws.close()
            raise AssertionError("first frame is not msgType 0: %s" % self.connection_raw)
        self.session_id = self.connection.get("sessionId")

    def send(self, obj):
        send_json(self.ws, obj)

    def send_raw(self, text):
        self.ws.send(text)

    def recv(self, timeout=5.0):
        return ws_recv_json(self.ws, timeout)[0]

    def recv_raw(self, timeout=5.0):
        return ws_recv_json(self.ws, timeout)

    def recv_type(self, msg_type, timeout=5.0):
        """Next frame, which must have this msgType."""
        m, raw = ws_recv_json(self.ws, timeout)
        if m.get("msgType") != msg_type:
            raise AssertionError("expected msgType %d, got %s" % (msg_type, raw))
        return m

    def heartbeat(self, message_id=None, timeout=5.0):
        """Sends a HEARTBEAT and returns the HEARTBEAT_ACK."""
        mid = message_id or "hb-" + os.urandom(4).hex()
        self.send({"msgType": MSG_HEARTBEAT, "messageId": mid})
        ack = self.recv_type(MSG_HEARTBEAT_ACK, timeout)
        if ack.get("messageId") != mid:
            raise AssertionError("heartbeat ack for %r has messageId %r" % (mid, ack))
        return ack

    def close(self):
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        with contextlib.suppress(Exception):
            self.ws.shutdown()


def assert_key_order(testcase, raw):
    """The keys of a JSON object text appear in ENVELOPE_ORDER order."""
    keys = list(json.loads(raw, object_pairs_hook=lambda pairs: pairs))
    names = [k for k, _ in keys]
    ranks = [ENVELOPE_ORDER.index(n) if n in ENVELOPE_ORDER else 99 for n in names]
    testcase.assertEqual(ranks, sorted(ranks), "envelope keys out of order: %s" % raw)


# ---------------------------------------------------------------- WebSocket (raw socket)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeRejected(Exception):
    def __init__(self, status, headers, body):
        super().__init__("handshake rejected: %d %r" % (status, body[:200]))
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class RawWs:
    """A WebSocket client on a plain socket: manual handshake, arbitrary
    frames, and nothing is read unless asked (for slow/idle clients)."""

    def __init__(self, port, channel_id=None, path="/", rcvbuf=None, extra_headers=None,
                 raw_query=None, timeout=5.0, wait_handshake=True):
        """wait_handshake=False sends the upgrade request and returns; call
        finish_handshake() later (to have many handshakes in flight)."""
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so the window scale is negotiated for it.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(t(timeout))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.status = None
        self.headers = {}
        self.body = b""
        if raw_query is not None:
            target = path + ("?" + raw_query if raw_query else "")
        else:
            q = {"channelId": channel_id} if channel_id is not None else {}
            qs = urllib.parse.urlencode(q, safe=":@")
            target = path + ("?" + qs if qs else "")
        self.target = target
        self._timeout = timeout
        try:
            self._send_handshake(target, extra_headers or {})
            if wait_handshake:
                self.finish_handshake()
        except BaseException:
            self.close()
            raise

    def _send_handshake(self, target, extra_headers):
        key = self._key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % target,
                 "Host: 127.0.0.1:%d" % self.port,
                 "Upgrade: websocket",
                 "Connection: Upgrade",
                 "Sec-WebSocket-Key: %s" % key,
                 "Sec-WebSocket-Version: 13"]
        for k, v in extra_headers.items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def finish_handshake(self):
        """Reads the HTTP response head of the upgrade request."""
        timeout = self._timeout
        deadline = time.monotonic() + t(timeout)
        while b"\r\n\r\n" not in self.buf:
            if time.monotonic() > deadline or len(self.buf) > 65536:
                raise AssertionError("no HTTP response head within %.1fs: %r" % (
                    t(timeout), self.buf[:300]))
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError("connection closed during handshake: %r" % self.buf[:300])
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        head_lines = head.decode("iso-8859-1").split("\r\n")
        self.status = int(head_lines[0].split(" ")[1])
        for line in head_lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            expect = base64.b64encode(hashlib.sha1(
                (self._key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            if self.headers.get("sec-websocket-accept") != expect:
                raise AssertionError("bad Sec-WebSocket-Accept: %r" % self.headers)
            return
        # An error response: read its body (Content-Length or until close).
        length = self.headers.get("content-length")
        while True:
            if length is not None and len(self.buf) >= int(length):
                break
            if time.monotonic() > deadline:
                break
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            self.buf += chunk
        self.body = self.buf if length is None else self.buf[:int(length)]
        self.close()
        raise HandshakeRejected(self.status, self.headers, self.body)

    # -- sending
    def send_frame(self, opcode, payload=b"", fin=True, rsv1=False, mask=True):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
                _mask_fast(payload, key)
            self.sock.sendall(head + key + masked)
        else:
            self.sock.sendall(head + payload)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj, separators=(",", ":")))

    def send_fragmented(self, payload, pieces, opcode=OP_TEXT):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        size = max(1, (len(payload) + pieces - 1) // pieces)
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for i, c in enumerate(chunks):
            self.send_frame(opcode if i == 0 else OP_CONT, c, fin=(i == len(chunks) - 1))

    def send_close(self, code=1000, reason=b""):
        self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason)

    # -- receiving
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(left)
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("EOF")
        self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """One frame: (fin, opcode, payload). Raises socket.timeout or
        ConnectionError (EOF)."""
        deadline = time.monotonic() + t(timeout)
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                n = b1 & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) >= 4:
                        n = struct.unpack("!H", self.buf[2:4])[0]
                    off = 4
                elif n == 127:
                    if len(self.buf) >= 10:
                        n = struct.unpack("!Q", self.buf[2:10])[0]
                    off = 10
                if b1 & 0x80:
                    off += 4  # servers must not mask, but be tolerant
                if len(self.buf) >= off and len(self.buf) >= off + n:
                    payload = self.buf[off:off + n]
                    self.buf = self.buf[off + n:]
                    self.last_header_len = off  # 2, 4 or 10 (+4 if masked)
                    return bool(b0 & 0x80), b0 & 0x0F, payload
            self._fill(deadline)

    def recv_message(self, timeout=5.0, answer_pings=True):
        """Next complete data message (reassembled): ("text", str),
        ("binary", bytes) or ("close", code, reason)."""
        deadline = time.monotonic() + t(timeout)
        parts, first_op = [], None
        while True:
            left = max(0.01, (deadline - time.monotonic()) / SLOW)
            fin, op, payload = self.recv_frame(left)
            if op == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return ("close", code, payload[2:].decode("utf-8", "replace"))
            if op != OP_CONT:
                first_op = op
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if first_op == OP_TEXT:
                    return ("text", data.decode("utf-8"))
                return ("binary", data)

    def recv_json(self, timeout=5.0):
        ev = self.recv_message(timeout)
        if ev[0] == "close":
            raise WsClosed(ev[1], ev[2])
        return json.loads(ev[1])

    def read_until_close(self, timeout=5.0, answer_pings=False, max_bytes=64 * 1024 * 1024):
        """Reads (and discards) everything until a close frame. Returns
        (close code, reason, number of data messages, pings seen); code is
        None when the TCP connection ended without a close frame."""
        deadline = time.monotonic() + t(timeout)
        messages = pings = 0
        consumed = 0
        while consumed < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no close frame within %.1fs (%d messages read)" % (
                    t(timeout), messages))
            try:
                fin, op, payload = self.recv_frame(left / SLOW)
            except (ConnectionError, OSError) as e:
                if isinstance(e, socket.timeout):
                    continue
                return None, "connection ended without close frame: %r" % e, messages, pings
            consumed += len(payload)
            if op == OP_PING:
                pings += 1
                if answer_pings:
                    self.send_frame(OP_PONG, payload)
            elif op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8", "replace"), messages, pings
            elif op != OP_PONG and fin:
                messages += 1
        raise AssertionError("read %d bytes without a close frame" % consumed)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


def _mask_fast(payload, key):
    # XOR with a repeated key via int arithmetic (fast enough for MBs).
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def handshake_error(port, raw_query=None, path="/", channel_id=None):
    """Performs an upgrade that is expected to be rejected. Returns
    (status, headers, body bytes); fails if it was accepted."""
    try:
        ws = RawWs(port, channel_id=channel_id, path=path, raw_query=raw_query)
    except HandshakeRejected as e:
        return e.status, e.headers, e.body
    ws.close()
    raise AssertionError("upgrade %s?%s was accepted (101), expected a rejection" % (
        path, raw_query))


# ---------------------------------------------------------------- MQTT (paho)

class MqttClient:
    """A paho client (MQTT 3.1.1) running its network loop in a thread.
    Collects every message received, by topic."""

    def __init__(self, port, client_id=None, username=None, password=None, connect=True,
                 timeout=5.0, clean_session=True):
        self.port = port
        self.client = mqtt.Client(client_id=client_id or "it-" + os.urandom(6).hex(),
                                  clean_session=clean_session)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.2, 2)
        self.cond = threading.Condition()
        self.messages = []  # (topic, payload bytes)
        self.qos = []  # the QoS each of them arrived with
        self.connack = None
        self.subacks = {}  # mid -> granted QoS tuple
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.disconnected = False
        self._started = False
        if connect:
            self.connect(timeout)

    def _on_connect(self, client, userdata, flags, rc):
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, rc):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.qos.append(msg.qos)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        with self.cond:
            self.subacks[mid] = tuple(granted_qos)
            self.cond.notify_all()

    def connect(self, timeout=5.0, expect_success=True):
        """Connects and waits for the CONNACK; returns its return code."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        with self.cond:
            ok = self.cond.wait_for(lambda: self.connack is not None, t(timeout))
        if not ok:
            raise AssertionError("no CONNACK from 127.0.0.1:%d within %.1fs" % (
                self.port, t(timeout)))
        if expect_success and self.connack != 0:
            rc = self.connack
            self.close()
            raise AssertionError("MQTT connect refused, rc=%d" % rc)
        return self.connack

    def subscribe(self, topic, qos=1, timeout=5.0):
        """Subscribes and waits for the SUBACK; returns the granted QoS
        (0x80 = refused)."""
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("subscribe(%s) failed: %s" % (topic, mqtt.error_string(rc)))
        with self.cond:
            ok = self.cond.wait_for(lambda: mid in self.subacks, t(timeout))
        if not ok:
            raise AssertionError("no SUBACK for %s within %.1fs" % (topic, t(timeout)))
        return self.subacks[mid][0]

    def publish(self, topic, payload, qos=1, timeout=5.0, wait=True):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload, separators=(",", ":"))
        info = self.client.publish(topic, payload, qos=qos)
        if wait:
            self.wait_published(info, timeout)
        return info

    def wait_published(self, info, timeout=5.0):
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise AssertionError("publish failed: %s" % mqtt.error_string(info.rc))
        info.wait_for_publish(timeout=t(timeout))
        if not info.is_published():
            raise AssertionError("publish (mid %d) not acknowledged within %.1fs" % (
                info.mid, t(timeout)))

    def received(self, topic=None):
        with self.cond:
            return [(tp, p) for tp, p in self.messages if topic is None or tp == topic]

    def wait_messages(self, count, topic=None, timeout=5.0):
        """Waits until at least count messages (on topic) arrived; returns them."""
        def enough():
            return len([1 for tp, _ in self.messages if topic is None or tp == topic]) >= count
        with self.cond:
            self.cond.wait_for(enough, t(timeout))
            got = [(tp, p) for tp, p in self.messages if topic is None or tp == topic]
        if len(got) < count:
            raise AssertionError("got %d of %d MQTT messages%s within %.1fs: %r" % (
                len(got), count, "" if topic is None else " on " + topic, t(timeout), got[-5:]))
        return got

    def wait_json(self, pred, topic=None, timeout=5.0):
        """Waits for a JSON message (on topic) for which pred(obj) is true."""
        def find():
            for tp, p in self.messages:
                if topic is not None and tp != topic:
                    continue
                try:
                    obj = json.loads(p)
                except ValueError:
                    continue
                if pred(obj):
                    return (tp, obj)
            return None
        with self.cond:
            self.cond.wait_for(lambda: find() is not None, t(timeout))
            found = find()
            if found is None:
                raise AssertionError("no matching MQTT message%s within %.1fs; got: %r" % (
                    "" if topic is None else " on " + topic, t(timeout), self.messages[-8:]))
            return found

    def close(self):
        if self._started:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            with contextlib.suppress(Exception):
                self.client.loop_stop()
            self._started = False


def mqtt_publish(port, topic, payload, qos=1, username=None, password=None, timeout=5.0):
    """Publishes one message (QoS 1 by default) and waits for the PUBACK."""
    c = MqttClient(port, username=username, password=password, timeout=timeout)
    try:
        c.publish(topic, payload, qos=qos, timeout=timeout)
    finally:
        c.close()


def mosquitto_pub(port, topic, payload, qos=1, timeout=10.0):
    """Publishes with the mosquitto_pub command-line client."""
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos),
                    "-t", topic, "-m", payload], check=True, timeout=t(timeout),
                   stdin=subprocess.DEVNULL)


def topic(kind, channel_id=None):
    return "%s/%s" % (PREFIX, kind) + ("/" + channel_id if channel_id else "")


# ---------------------------------------------------------------- test base

class IntegrationTest(unittest.TestCase):
    """Base class: a temporary directory per test, helpers that start
    processes and always clean them up, and the bridge/broker logs printed
    when a test fails."""

    maxDiff = 4000
    _class_logs = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.class_dir = tempfile.mkdtemp(prefix="cloudpush-it-%s-" % cls.__name__)
        cls._class_logs = []
        cls.addClassCleanup(cls._class_final_cleanup)

    @classmethod
    def _class_final_cleanup(cls):
        shutil.rmtree(cls.class_dir, ignore_errors=True)

    @classmethod
    def class_mosquitto(cls, **kw):
        m = Mosquitto(cls.class_dir, **kw)
        cls.addClassCleanup(m.stop)
        cls._class_logs.append(m.log_path)
        return m.start()

    @classmethod
    def class_bridge(cls, mosq, bridge_id="itbridge", args=(), **kw):
        b = Bridge(cls.class_dir, mosq.url, bridge_id=bridge_id, args=args, **kw)
        cls.addClassCleanup(b.stop)
        cls._class_logs.append(b.log_path)
        return b.start()

    @classmethod
    def class_httpapi(cls, mosq, **kw):
        a = HttpApi(cls.class_dir, mosq.url, **kw)
        cls.addClassCleanup(a.stop)
        cls._class_logs.append(a.log_path)
        return a.start()

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="cloudpush-it-")
        self._logs = []
        # Registered first, so it runs last: after every process is stopped.
        self.addCleanup(self._final_cleanup)

    def _failed(self):
        """True when this test (or one of its subtests) has failed so far.
        (outcome.success cannot be used here: unittest resets it for every
        cleanup function.)"""
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        # Python <= 3.10 collects (test, exc_info) in outcome.errors.
        for _, exc_info in getattr(outcome, "errors", []) or []:
            if exc_info is not None:
                return True
        result = getattr(outcome, "result", None)
        for test, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def _final_cleanup(self):
        failed = self._failed()
        if failed:
            for path in list(self._logs) + list(self._class_logs):
                print("\n----- %s: last lines of %s -----\n%s\n----- end -----" % (
                    self.id(), path, tail(path, 80)), file=sys.stderr, flush=True)
        if failed and os.environ.get("CLOUDPUSH_KEEP_TMP") == "1":
            print("kept %s" % self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- processes owned by one test
    def start_mosquitto(self, **kw):
        m = Mosquitto(self.dir, **kw)
        self.addCleanup(m.stop)
        self._logs.append(m.log_path)
        return m.start()

    def start_bridge(self, mosq, bridge_id="itbridge", args=(), wait=True, **kw):
        b = Bridge(self.dir, mosq.url if isinstance(mosq, Mosquitto) else mosq,
                   bridge_id=bridge_id, args=args, **kw)
        self.addCleanup(b.stop)
        self._logs.append(b.log_path)
        return b.start(wait=wait)

    def start_httpapi(self, mosq, wait=True, **kw):
        a = HttpApi(self.dir, mosq.url if isinstance(mosq, Mosquitto) else mosq, **kw)
        self.addCleanup(a.stop)
        self._logs.append(a.log_path)
        return a.start(wait=wait)

    def start_redis(self, **kw):
        r = Redis(self.dir, **kw)
        self.addCleanup(r.stop)
        self._logs.append(r.log_path)
        return r.start()

    def start_balancer(self, redis, wait=True, **kw):
        b = Balancer(self.dir, redis, **kw)
        self.addCleanup(b.stop)
        self._logs.append(b.log_path)
        return b.start(wait=wait)

    def publish_broadcast(self, mosq_port, payload, *bridges):
        """Publishes a broadcast and waits until every worker of each of
        the bridges took it from the bus: one still on its way to a worker
        would reach the first session a later test of the class opens
        there."""
        name, kind = "cloudpush_bridge_bus_messages_total", {"kind": "broadcast"}
        want = []
        for b in bridges:
            workers = b.metric("cloudpush_bridge_workers")
            self.assertGreaterEqual(workers, 1, b.id)
            want.append((b, b.metric(name, kind) + workers))
        mqtt_publish(mosq_port, topic("broadcast"), payload)
        for b, n in want:
            wait_until(lambda: b.metric(name, kind) >= n, t(5),
                       what="every worker of %s to take the broadcast" % b.id)

    # -- clients, closed at the end of the test
    def session(self, port, channel_id, **kw):
        s = Session(port, channel_id, **kw)
        self.addCleanup(s.close)
        return s

    def raw_ws(self, port, channel_id, **kw):
        r = RawWs(port, channel_id, **kw)
        self.addCleanup(r.close)
        return r

    def mqtt_client(self, port, **kw):
        c = MqttClient(port, **kw)
        self.addCleanup(c.close)
        return c

    def subscriber(self, port, *topics, **kw):
        c = self.mqtt_client(port, **kw)
        for tp in topics:
            granted = c.subscribe(tp)
            self.assertNotEqual(granted, 0x80, "subscription to %s refused" % tp)
        return c

    # -- assertions
    def assertDelivery(self, m, channel_id, session_id, msg, trigger, sender=None,
                       message_id=None):
        """m is a BUSINESS envelope for channel_id's session session_id."""
        self.assertEqual(m.get("msgType"), MSG_BUSINESS, m)
        self.assertEqual(m.get("msg"), msg, m)
        self.assertEqual(m.get("to"), [channel_id], m)
        self.assertEqual(m.get("sessionId"), session_id, m)
        self.assertEqual(m.get("trigger"), trigger, m)
        if sender is not None:
            self.assertEqual(m.get("from"), sender, m)
        if message_id is not None:
            self.assertEqual(m.get("messageId"), message_id, m)
        else:
            self.assertRegex(m.get("messageId", ""), HEX32, m)
        self.assertIsInstance(m.get("activeTime"), int, m)
        self.assertLess(abs(m["activeTime"] - time.time() * 1000), 120000, m)

    def assertError(self, m, session_id, message_id=None):
        self.assertEqual(m.get("msgType"), MSG_ERROR, m)
        self.assertEqual(m.get("from"), "system", m)
        self.assertEqual(m.get("trigger"), TRIGGER_WEBSOCKET, m)
        self.assertEqual(m.get("sessionId"), session_id, m)
        self.assertIsInstance(m.get("resultMsg"), str, m)
        self.assertTrue(m["resultMsg"], m)
        self.assertIsInstance(m.get("activeTime"), int, m)
        if message_id is not None:
            self.assertEqual(m.get("messageId"), message_id, m)
