"""The Debian package: CPack builds it from this build tree, it unpacks into a
temporary root (as dpkg would install it), its binaries answer --version, its
systemd units are complete, and the packaged HTTP API starts with the
packaged console and OpenAPI document against a real broker."""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

import harness as h

BUILD_DIR = os.path.dirname(h.BIN_DIR)
PROGRAMS = ("cloudpush-bridge", "cloudpush-balancer", "cloudpush-httpapi")


class PackageTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        config = os.path.join(BUILD_DIR, "CPackConfig.cmake")
        if not os.path.exists(config):
            raise AssertionError("no %s: configure the build first" % config)
        out = os.path.join(cls.class_dir, "pkg")
        r = subprocess.run(["cpack", "-G", "DEB", "--config", config, "-B", out],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError("cpack failed:\n%s%s" % (r.stdout, r.stderr))
        debs = glob.glob(os.path.join(out, "cloudpush_*.deb"))
        if len(debs) != 1:
            raise AssertionError("expected one .deb in %s: %s" % (out, os.listdir(out)))
        cls.deb = debs[0]
        cls.root = os.path.join(cls.class_dir, "root")
        subprocess.run(["dpkg-deb", "-x", cls.deb, cls.root], check=True, timeout=60)

    def field(self, name):
        r = subprocess.run(["dpkg-deb", "-f", self.deb, name], capture_output=True, text=True,
                           check=True)
        return r.stdout.strip()

    def test_control(self):
        self.assertEqual(self.field("Package"), "cloudpush")
        self.assertRegex(self.field("Version"), r"^\d+\.\d+\.\d+$")
        depends = self.field("Depends")
        for lib in ("libwebsockets17", "libpaho-mqtt1.3", "libcivetweb1", "libhiredis0.14",
                    "libcjson1"):
            self.assertIn(lib, depends)

    def test_binaries_answer_version(self):
        for prog in PROGRAMS:
            path = os.path.join(self.root, "usr", "bin", prog)
            r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"^%s \d+\.\d+\.\d+\n$" % prog)

    def test_units(self):
        unit_dir = os.path.join(self.root, "usr", "lib", "systemd", "system")
        for prog in PROGRAMS:
            with open(os.path.join(unit_dir, prog + ".service")) as f:
                unit = f.read()
            for line in ("ExecStart=/usr/bin/%s" % prog, "Restart=on-failure", "Type=notify",
                         "ExecReload=/bin/kill -HUP $MAINPID",
                         "EnvironmentFile=-/etc/default/%s" % prog, "DynamicUser=yes",
                         "NoNewPrivileges=yes", "ProtectSystem=strict",
                         "WantedBy=multi-user.target"):
                self.assertIn(line + "\n", unit, "%s.service lacks %s" % (prog, line))
            self.assertTrue(os.access(os.path.join(self.root, "usr", "bin", prog), os.X_OK))
        # Every file a unit names is in the package.
        with open(os.path.join(unit_dir, "cloudpush-httpapi.service")) as f:
            static = re.search(r"CLOUDPUSH_STATIC=(\S+)", f.read()).group(1)
        self.assertTrue(os.path.isdir(self.root + static), static)

    def notify_socket(self):
        path = os.path.join(self.dir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(h.t(10))
        self.addCleanup(sock.close)
        return path, sock

    def test_readiness_and_stopping_reach_the_service_manager(self):
        # What a Type=notify unit waits for: READY=1 once the program
        # listens, STOPPING=1 when it begins to stop.
        mosq = self.start_mosquitto()
        for make in (lambda env: h.HttpApi(self.dir, mosq.url, env=env),
                     lambda env: h.Bridge(self.dir, mosq.url, bridge_id="notify", env=env)):
            path, sock = self.notify_socket()
            svc = make({"NOTIFY_SOCKET": path})
            self.addCleanup(svc.stop)
            self._logs.append(svc.log_path)
            svc.start()
            self.assertEqual(sock.recv(256), b"READY=1")
            self.assertEqual(svc.health()[0], 200)  # it does listen
            svc.stop()
            self.assertEqual(sock.recv(256), b"STOPPING=1")
            sock.close()
            os.unlink(path)

    def test_packaged_api_serves_console_and_openapi(self):
        mosq = self.start_mosquitto()
        static = os.path.join(self.root, "usr", "share", "cloudpush", "static")
        api = h.HttpApi(self.dir, mosq.url, args=["--static", static])
        api.binary = os.path.join(self.root, "usr", "bin", "cloudpush-httpapi")
        self.addCleanup(api.stop)
        self._logs.append(api.log_path)
        api.start()
        st, _, body = h.http_request(api.port, "GET", "/")
        self.assertEqual(st, 200)
        self.assertIn(b"cloudpush", body)
        st, _, body = h.http_request(api.port, "GET", "/api/v1/openapi.json")
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["openapi"], "3.1.0")
        st, _, _ = h.http_request(api.port, "GET", "/readyz")
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()
