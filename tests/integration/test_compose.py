"""docker/: the Dockerfile, the compose file and the image's scripts, proven
without a Docker engine (this machine has none).

- The compose file validates with Debian's docker-compose 1.29.2
  (`docker-compose config -q`, package docker-compose in scripts/install-deps.sh
  TEST_PKGS); a copy with a misspelt key must be rejected (the validator works).
- Every CLOUDPUSH_* variable the compose file gives a cloudpush service is one
  its program accepts (parsed from `build/bin/<program> --help`), and the
  program starts its option parsing with those values (`--help` with the
  service's environment exits 0: no bad number or boolean). The other
  services' CLOUDPUSH_* variables are read by what runs there
  (make-passwords.sh, the health check).
- The Dockerfile's apt package lists match the build's dependency list
  (BUILD_PKGS of scripts/install-deps.sh). "Match" means:
    1. every package the build stage installs is in BUILD_PKGS;
    2. every package of BUILD_PKGS is installed by the build stage, except the
       ones listed in NOT_FOR_IMAGE below, each with the reason the image does
       not need it (and every NOT_FOR_IMAGE entry is still in BUILD_PKGS);
    3. for every shared library the built programs link directly (DT_NEEDED of
       the binaries in CLOUDPUSH_BIN_DIR), the Debian package that owns it on
       this machine (dpkg -S) is installed by the runtime stage: named there,
       or a dependency of one named there (Depends/Pre-Depends, recursively,
       as dpkg on this Debian 12 machine lists them: what apt installs with
       it), unless the base image has it (libc6) or it is a sanitizer
       runtime;
    4. every other package the runtime stage installs owns a library the
       programs load (ldd: directly or through another library), or is one
       of RUNTIME_EXTRAS (ca-certificates, openssl for the health check over
       TLS, lws's dlopen'ed libev glue); none is a -dev package or a build
       tool.
  Then the build stage's own COPY and RUN steps (all but apt-get) are replayed
  in a temporary directory standing for /src: the image build's cmake
  commands, on exactly the files it copies, must produce the programs the
  runtime stage copies.
- The compose stack on loopback: the compose file's services, in the order
  of their depends_on, with their environment (service names rewritten to
  127.0.0.1 and free ports; the bridges' advertised URLs to "localhost", so
  the balancer's relay still resolves a host name), run as the image would
  run them: the Dockerfile's ENTRYPOINT and the compose command, its ENV, the
  compose healthcheck commands (the image's healthcheck script, the
  mosquitto_sub and redis-cli checks). mosquitto-init's command makes the
  password file, mosquitto runs mosquitto/docker.conf with authentication
  and ACL. A client through the balancer, pushes from the HTTP API,
  WebSocket-to-WebSocket through the relay; every health check passes, and
  fails for what does not exist.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse

import harness as h

try:
    import yaml  # python3-yaml, a dependency of Debian's docker-compose
except ImportError:  # pragma: no cover - reported by the tests below
    yaml = None

DOCKER_DIR = os.path.join(h.REPO, "docker")
COMPOSE_FILE = os.path.join(DOCKER_DIR, "compose.yaml")
# The demo's secrets: the compose file has none of its own.
DEMO_ENV = os.path.join(DOCKER_DIR, "demo.env")
SECRET_VARIABLES = ("CLOUDPUSH_BRIDGE_MQTT_PASSWORD", "CLOUDPUSH_HTTPAPI_MQTT_PASSWORD",
                    "CLOUDPUSH_SERVICE_MQTT_PASSWORD", "CLOUDPUSH_JWT_SECRET")
DOCKERFILE = os.path.join(DOCKER_DIR, "Dockerfile")
INSTALL_DEPS = os.path.join(h.REPO, "scripts", "install-deps.sh")
MAKE_PASSWORDS = os.path.join(h.MOSQUITTO_DIR, "make-passwords.sh")
ACL = os.path.join(h.MOSQUITTO_DIR, "acl")
DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"

PROGRAMS = ("cloudpush-bridge", "cloudpush-httpapi", "cloudpush-balancer")

# Packages of BUILD_PKGS (scripts/install-deps.sh) the image build does not
# install, and why.
NOT_FOR_IMAGE = {
    "clang": "fuzz targets (-DCLOUDPUSH_FUZZ=ON) only; the image builds with gcc",
    "libclang-rt-14-dev": "libFuzzer/sanitizer runtimes of the fuzz build",
    "libcmocka-dev": "unit tests; the image builds with -DCLOUDPUSH_TESTS=OFF",
    "civetweb": "the CivetWeb server program; httpapi/CMakeLists.txt finds libcivetweb "
                "(libcivetweb-dev) directly",
}
# Linked libraries whose packages the runtime stage need not install.
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}  # in debian:bookworm-slim
SANITIZER_PACKAGES = {"libasan8", "libubsan1", "liblsan0", "libtsan2"}  # ASan builds only
# Not libraries, but wanted in the runtime image.
RUNTIME_EXTRAS = {
    "ca-certificates": "certificates to verify TLS peers (wss:// bridges)",
    "openssl": "the TLS client of the health check (programs with --tls-cert)",
    "libwebsockets-evlib-ev": "lws's libev glue, loaded by lws with dlopen (common/lwsloop.c)",
}
BUILD_TOOLS = {"build-essential", "cmake", "pkg-config", "gcc", "clang", "make"}

# The image's programs, by the first argument of the entrypoint.
ROLES = {"bridge": "cloudpush-bridge", "httpapi": "cloudpush-httpapi",
         "balancer": "cloudpush-balancer"}
ROLE_PORT = {"cloudpush-bridge": 9001, "cloudpush-httpapi": 8080, "cloudpush-balancer": 8000}


# ---------------------------------------------------------------- helpers

def clean_env():
    """The environment for docker-compose: nothing of ours that could be
    interpolated into the file (ctest sets CLOUDPUSH_BIN_DIR, for instance)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("CLOUDPUSH_", "COMPOSE_", "DOCKER_"))}


def run_compose(args, compose_file=COMPOSE_FILE, env_file=None):
    if not os.access(DOCKER_COMPOSE, os.X_OK):
        raise AssertionError("docker-compose not found: scripts/install-deps.sh installs Debian's "
                             "docker-compose (TEST_PKGS)")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        # An empty --env-file: a developer's docker/.env must not change the result.
        cmd = [DOCKER_COMPOSE, "-f", compose_file, "--env-file", env_file or empty.name] + args
        return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=120,
                              stdin=subprocess.DEVNULL, cwd=os.path.dirname(compose_file))


_config_cache = {}


def compose_config():
    """The compose file as docker-compose resolves it with docker/demo.env
    (interpolation, anchors and merges applied), parsed."""
    if "config" not in _config_cache:
        _config_cache["config"] = resolved_config(DEMO_ENV)
    return _config_cache["config"]


def resolved_config(env_file):
    if yaml is None:
        raise AssertionError("python3-yaml missing (a dependency of docker-compose)")
    r = run_compose(["config"], env_file=env_file)
    if r.returncode != 0:
        raise AssertionError("docker-compose config failed:\n%s%s" % (r.stdout, r.stderr))
    return yaml.safe_load(r.stdout)


_help_cache = {}


def program_help(program):
    if program not in _help_cache:
        path = os.path.join(h.BIN_DIR, program)
        if not os.access(path, os.X_OK):
            raise AssertionError("%s not found (build it, or set CLOUDPUSH_BIN_DIR)" % path)
        r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30,
                           env=clean_env(), stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError("%s --help exited %d: %s" % (program, r.returncode, r.stderr))
        _help_cache[program] = r.stdout
    return _help_cache[program]


def accepted_variables(program):
    """The CLOUDPUSH_* variables `program --help` lists."""
    names = set(re.findall(r"^\s*env:\s*(CLOUDPUSH_[A-Z0-9_]+)\s*$", program_help(program), re.M))
    if not names:
        raise AssertionError("no 'env: CLOUDPUSH_*' lines in %s --help" % program)
    return names


def shell_words(text):
    return [w for w in re.split(r"\s+", text.strip()) if w]


def install_deps_lists():
    """{"BUILD_PKGS": [...], "RUN_PKGS": [...], "TEST_PKGS": [...]} from scripts/install-deps.sh."""
    with open(INSTALL_DEPS) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r'^([A-Z_]+_PKGS)="([^"]*)"', text, re.M):
        out[m.group(1)] = shell_words(m.group(2).replace("\\\n", " "))
    return out


class Dockerfile:
    """The instructions of a Dockerfile, by stage."""

    def __init__(self, path):
        self.stages = []  # dicts: base, name, instructions [(INSTR, text)]
        with open(path) as f:
            lines = f.read().splitlines()
        logical, cur = [], None
        for line in lines:
            s = line.strip()
            if s.startswith("#") or (cur is None and not s):
                continue  # comments (also inside continuations), blank lines
            cur = (cur + " " if cur is not None else "") + s
            if cur.endswith("\\"):
                cur = cur[:-1].rstrip()
                continue
            logical.append(cur)
            cur = None
        for text in logical:
            instr, _, rest = text.partition(" ")
            instr = instr.upper()
            rest = rest.strip()
            if instr == "FROM":
                words = rest.split()
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
                self.stages.append({"base": words[0], "name": name, "instructions": []})
            else:
                self.stages[-1]["instructions"].append((instr, rest))

    def stage(self, name):
        for st in self.stages:
            if st["name"] == name:
                return st
        raise AssertionError("no stage named %r" % name)

    @staticmethod
    def apt_packages(stage):
        """Packages of the `apt-get install` commands of a stage's RUNs."""
        pkgs = []
        for instr, text in stage["instructions"]:
            if instr != "RUN":
                continue
            for cmd in re.split(r"&&|;|\|\|", text):
                words = shlex.split(cmd)
                while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                    words.pop(0)  # VAR=value prefix
                if len(words) >= 2 and words[0] in ("apt-get", "apt") and "install" in words:
                    rest = words[words.index("install") + 1:]
                    pkgs += [w for w in rest if not w.startswith("-")]
        return pkgs

    @staticmethod
    def json_or_words(text):
        text = text.strip()
        if text.startswith("["):
            return json.loads(text)
        return ["/bin/sh", "-c", text]

    @staticmethod
    def copies(stage):
        """[(from_stage or None, [sources], dest)] of a stage's COPY instructions."""
        out = []
        for instr, text in stage["instructions"]:
            if instr != "COPY":
                continue
            words = shlex.split(text)
            frm = None
            while words and words[0].startswith("--"):
                opt = words.pop(0)
                if opt.startswith("--from="):
                    frm = opt[len("--from="):]
            out.append((frm, words[:-1], words[-1]))
        return out

    @staticmethod
    def env(stage):
        env = {}
        for instr, text in stage["instructions"]:
            if instr == "ENV":
                for w in shlex.split(text):
                    k, _, v = w.partition("=")
                    env[k] = v
        return env

    @staticmethod
    def last(stage, instr_name):
        found = None
        for instr, text in stage["instructions"]:
            if instr == instr_name:
                found = text
        return found


def dpkg_owner(path):
    r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None
    return r.stdout.split(":", 1)[0].strip()


def dependency_closure(packages):
    """The packages apt installs for these: them and their Depends and
    Pre-Depends, recursively (as dpkg on this machine knows them)."""
    seen, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", p],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            continue  # not installed here: its dependencies are unknown
        for alt in r.stdout.split(","):
            for dep in alt.split("|"):
                name = dep.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


def linked_libraries(binary):
    """({soname: path} of a binary's DT_NEEDED entries, {soname: path} of
    every library it loads, as ldd resolves them)."""
    r = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("readelf -d %s: %s" % (binary, r.stderr))
    names = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", r.stdout, re.M))
    direct = {}
    for n in names:
        if n not in paths or not os.path.exists(paths[n]):
            raise AssertionError("%s links %s, which ldd does not resolve:\n%s" % (
                binary, n, r.stdout))
        direct[n] = paths[n]
    return direct, paths


def cloudpush_services(config):
    """{service name: program} of the services that run the cloudpush image."""
    out = {}
    for name, svc in config["services"].items():
        if "build" not in svc:
            continue
        cmd = svc.get("command") or ["bridge"]
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        role = cmd[0]
        if role not in ROLES:
            raise AssertionError("service %s runs %r: not one of %s" % (name, cmd, sorted(ROLES)))
        out[name] = ROLES[role]
    return out


def service_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def healthcheck_test(svc):
    test = (svc.get("healthcheck") or {}).get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    return test


def unescape(text):
    """Compose's $$ is a literal $ in the container."""
    return text.replace("$$", "$")


def topo_order(services):
    order, state = [], {}

    def visit(n, path):
        if state.get(n) == "done":
            return
        if state.get(n) == "visiting":
            raise AssertionError("depends_on cycle: %s" % " -> ".join(path + [n]))
        state[n] = "visiting"
        for dep in (services[n].get("depends_on") or {}):
            if dep not in services:
                raise AssertionError("%s depends on unknown service %s" % (n, dep))
            visit(dep, path + [n])
        state[n] = "done"
        order.append(n)

    for n in sorted(services):
        visit(n, [])
    return order


def listen_port(env, program):
    listen = env.get("CLOUDPUSH_LISTEN", "0.0.0.0:%d" % ROLE_PORT[program])
    return int(listen.rsplit(":", 1)[1])


def mosquitto_conf_port(conf_text):
    m = re.search(r"^listener\s+(\d+)", conf_text, re.M)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- the compose file

class ComposeFileTest(unittest.TestCase):

    def test_compose_file_validates(self):
        r = run_compose(["config", "-q"], env_file=DEMO_ENV)
        self.assertEqual(r.returncode, 0, "docker-compose config -q: %s%s" % (r.stdout, r.stderr))
        # Control: the validator rejects a misspelt key in a copy of the file.
        with open(COMPOSE_FILE) as f:
            text = f.read()
        bad = text.replace("    healthcheck:\n", "    healthchek:\n", 1)
        self.assertNotEqual(bad, text)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "compose.yaml")
            with open(path, "w") as f:
                f.write(bad)
            r = run_compose(["config", "-q"], compose_file=path, env_file=DEMO_ENV)
        self.assertNotEqual(r.returncode, 0, "a misspelt key was accepted")
        self.assertIn("healthchek", r.stdout + r.stderr)

    def test_services_and_images(self):
        cfg = compose_config()
        services = cfg["services"]
        self.assertEqual(set(services), {"mosquitto-init", "mosquitto", "redis", "bridge1",
                                         "bridge2", "balancer", "httpapi"})
        cp = cloudpush_services(cfg)
        self.assertEqual(cp, {"bridge1": "cloudpush-bridge", "bridge2": "cloudpush-bridge",
                              "balancer": "cloudpush-balancer", "httpapi": "cloudpush-httpapi"})
        images = {services[n]["image"] for n in cp}
        self.assertEqual(len(images), 1, "one image for every program: %s" % images)
        for n in cp:
            b = services[n]["build"]
            self.assertEqual(os.path.realpath(os.path.join(b["context"], b["dockerfile"])),
                             os.path.realpath(DOCKERFILE), n)
        # Third-party images pinned to a release, not a moving major tag.
        pinned = re.compile(r"^[a-z0-9./-]+:\d+\.\d+\.\d+$")
        for n in ("mosquitto", "mosquitto-init", "redis"):
            self.assertRegex(services[n]["image"], pinned, n)
        self.assertTrue(services["mosquitto"]["image"].startswith("eclipse-mosquitto:2."))
        self.assertTrue(services["redis"]["image"].startswith("redis:7."))

    def test_no_secret_has_a_default(self):
        # Without an env file the stack does not start, and says what is missing.
        r = run_compose(["config", "-q"])
        self.assertNotEqual(r.returncode, 0, "the compose file resolved without any secret")
        self.assertIn("CLOUDPUSH_", r.stderr)
        self.assertIn("docker/demo.env", r.stderr)
        with open(COMPOSE_FILE) as f:
            text = f.read()
        for var in SECRET_VARIABLES:
            self.assertIn("${%s:?" % var, text, "%s must be required" % var)
        for demo in ("demo-bridge-password", "demo-jwt-secret"):
            self.assertNotIn(demo, text, "a demo secret is a default of the compose file")

    def test_token_minting_only_when_asked_for(self):
        with open(DEMO_ENV) as f:
            demo = f.read()
        # The secrets without the demo's token minting: minting is off.
        with tempfile.NamedTemporaryFile("w", suffix=".env") as env:
            env.write("\n".join(l for l in demo.splitlines()
                                if not l.startswith("CLOUDPUSH_DEV_TOKEN_SECRET=")) + "\n")
            env.flush()
            cfg = resolved_config(env.name)
        self.assertEqual(service_env(cfg["services"]["httpapi"])["CLOUDPUSH_DEV_TOKEN_SECRET"], "")
        # The demo asks for it.
        self.assertTrue(service_env(compose_config()["services"]["httpapi"])
                        ["CLOUDPUSH_DEV_TOKEN_SECRET"])

    def test_every_cloudpush_variable_is_accepted(self):
        cfg = compose_config()
        for name, program in cloudpush_services(cfg).items():
            with self.subTest(service=name, program=program):
                svc = cfg["services"][name]
                env = service_env(svc)
                self.assertTrue(env, "no environment")
                # Configuration only through CLOUDPUSH_* variables: the command
                # is the program's name and nothing else.
                self.assertEqual(len(svc["command"]), 1, svc["command"])
                other = [k for k in env if not k.startswith("CLOUDPUSH_")]
                self.assertEqual(other, [], "configuration outside CLOUDPUSH_* variables")
                unknown = sorted(set(env) - accepted_variables(program))
                self.assertEqual(unknown, [], "%s does not accept these" % program)
                # The values parse: options are read from the environment before
                # --help is handled, and a bad value exits 2.
                run_env = dict(clean_env(), **env)
                r = subprocess.run([os.path.join(h.BIN_DIR, program), "--help"],
                                   capture_output=True, text=True, env=run_env, timeout=30,
                                   stdin=subprocess.DEVNULL)
                self.assertEqual(r.returncode, 0, "%s refuses the environment: %s" % (
                    program, r.stderr))

    def test_other_services_variables_are_used(self):
        """mosquitto-init and mosquitto get CLOUDPUSH_* passwords: for
        make-passwords.sh and the broker's health check."""
        cfg = compose_config()
        with open(MAKE_PASSWORDS) as f:
            script = f.read()
        cp = cloudpush_services(cfg)
        for name, svc in cfg["services"].items():
            if name in cp:
                continue
            env = service_env(svc)
            uses = " ".join(str(x) for x in (svc.get("entrypoint") or []) +
                            (svc.get("command") or []) + (healthcheck_test(svc) or []))
            for var in env:
                with self.subTest(service=name, variable=var):
                    if "make-passwords.sh" in uses:
                        self.assertIn(var, script, "make-passwords.sh does not read it")
                    else:
                        self.assertIn("$" + var, unescape(uses), "nothing in %s uses it" % name)

    def test_mqtt_users_and_passwords_agree(self):
        """Each component's MQTT user is in mosquitto/acl and gets the password
        mosquitto-init writes for that user."""
        cfg = compose_config()
        services = cfg["services"]
        init_env = service_env(services["mosquitto-init"])
        with open(ACL) as f:
            acl_users = set(re.findall(r"^user\s+(\S+)", f.read(), re.M))
        with open(MAKE_PASSWORDS) as f:
            var_of = dict(re.findall(r"^\s*(cloudpush-[a-z]+)\) echo (CLOUDPUSH_[A-Z_]+)", f.read(),
                                     re.M))
        for name, program in cloudpush_services(cfg).items():
            env = service_env(services[name])
            if program == "cloudpush-balancer":
                self.assertNotIn("CLOUDPUSH_MQTT", env)
                continue
            with self.subTest(service=name):
                user = env.get("CLOUDPUSH_MQTT_USER")
                self.assertIn(user, acl_users)
                self.assertIn(user, var_of)
                self.assertEqual(env.get("CLOUDPUSH_MQTT_PASSWORD"), init_env.get(var_of[user]),
                                 "the password of %s differs from the one mosquitto-init sets"
                                 % user)
        # The broker's health check logs in as the service user.
        self.assertEqual(service_env(services["mosquitto"])["CLOUDPUSH_SERVICE_MQTT_PASSWORD"],
                         init_env["CLOUDPUSH_SERVICE_MQTT_PASSWORD"])

    def test_bridges_advertise_their_service_name(self):
        cfg = compose_config()
        ids = set()
        for name, program in cloudpush_services(cfg).items():
            if program != "cloudpush-bridge":
                continue
            with self.subTest(bridge=name):
                env = service_env(cfg["services"][name])
                u = urllib.parse.urlsplit(env["CLOUDPUSH_ADVERTISE"])
                self.assertEqual(u.scheme, "ws")
                # The balancer's relay connects to this URL (docs/balancer.md):
                # the bridge's own service name and listening port.
                self.assertEqual(u.hostname, name)
                self.assertEqual(u.port, listen_port(env, program))
                self.assertTrue(env["CLOUDPUSH_LISTEN"].startswith("0.0.0.0:"),
                                "a bridge must listen on the container's network interface")
                self.assertNotIn(env["CLOUDPUSH_ID"], ids, "bridge ids must be unique")
                ids.add(env["CLOUDPUSH_ID"])
        self.assertEqual(len(ids), 2)

    def test_urls_point_at_services(self):
        cfg = compose_config()
        services = cfg["services"]
        with open(os.path.join(h.MOSQUITTO_DIR, "docker.conf")) as f:
            mqtt_port = mosquitto_conf_port(f.read())
        for name in cloudpush_services(cfg):
            env = service_env(services[name])
            with self.subTest(service=name):
                if "CLOUDPUSH_MQTT" in env:
                    u = urllib.parse.urlsplit(env["CLOUDPUSH_MQTT"])
                    self.assertEqual((u.scheme, u.port), ("tcp", mqtt_port))
                    self.assertTrue(services[u.hostname]["image"].startswith("eclipse-mosquitto:2."))
                    self.assertIn(u.hostname, services[name]["depends_on"])
                u = urllib.parse.urlsplit(env["CLOUDPUSH_REDIS"])
                self.assertEqual((u.scheme, u.hostname, u.port), ("redis", "redis", 6379))
                self.assertIn("redis", services[name]["depends_on"])

    def test_depends_on_waits_for_health(self):
        cfg = compose_config()
        services = cfg["services"]
        topo_order(services)  # no cycle, no unknown service
        for name, svc in services.items():
            for dep, cond in (svc.get("depends_on") or {}).items():
                with self.subTest(service=name, dependency=dep):
                    cond = cond.get("condition")
                    if dep == "mosquitto-init":
                        self.assertEqual(cond, "service_completed_successfully")
                    else:
                        self.assertEqual(cond, "service_healthy")
                        self.assertTrue(healthcheck_test(services[dep]),
                                        "%s has no healthcheck to wait for" % dep)
        for name in cloudpush_services(cfg):
            self.assertTrue(services[name].get("depends_on"), name)

    def test_published_ports(self):
        """The console/API and the balancer's WebSocket entry are published;
        nothing else is (the bus, Redis and the bridges stay inside)."""
        cfg = compose_config()
        services = cfg["services"]
        published = {n: s["ports"] for n, s in services.items() if s.get("ports")}
        self.assertEqual(set(published), {"httpapi", "balancer"})
        cp = cloudpush_services(cfg)
        host_port = {}
        for name, ports in published.items():
            self.assertEqual(len(ports), 1, ports)
            p = ports[0]
            if isinstance(p, str):
                m = re.match(r"^(?:([\d.]+):)?(\d+):(\d+)(?:/tcp)?$", p)
                self.assertIsNotNone(m, p)
                target, published_port = int(m.group(3)), int(m.group(2))
            else:
                target, published_port = int(p["target"]), int(p["published"])
            self.assertEqual(target, listen_port(service_env(services[name]), cp[name]), name)
            host_port[name] = published_port
        api_env = service_env(services["httpapi"])
        console = urllib.parse.urlsplit(api_env["CLOUDPUSH_CONSOLE_BALANCER"])
        self.assertEqual((console.scheme, console.port, console.path),
                         ("ws", host_port["balancer"], "/ws"),
                         "the console must offer the balancer's published entry")
        self.assertEqual(api_env["CLOUDPUSH_CONSOLE_BRIDGES"], "",
                         "the bridges are not published: the console must not offer them")

    def test_healthchecks_reference_existing_endpoints(self):
        """Static part (the loopback test runs them): the cloudpush services
        use the image's health check on an endpoint their program serves."""
        cfg = compose_config()
        endpoints = {"cloudpush-bridge": {"/healthz"},
                     "cloudpush-httpapi": {"/healthz", "/readyz"},
                     "cloudpush-balancer": {"/healthz"}}
        docs = {"cloudpush-bridge": "operations.md", "cloudpush-httpapi": "http-api.md",
                "cloudpush-balancer": "balancer.md"}
        for name, program in cloudpush_services(cfg).items():
            with self.subTest(service=name):
                test = healthcheck_test(cfg["services"][name])
                self.assertEqual(test[:2], ["CMD", "cloudpush-healthcheck"], test)
                path = test[2]
                self.assertIn(path, endpoints[program])
                with open(os.path.join(h.REPO, "docs", docs[program])) as f:
                    self.assertIn("`GET %s`" % path, f.read(), "not documented")
        self.assertEqual(healthcheck_test(cfg["services"]["httpapi"])[2], "/readyz",
                         "the API is ready when the broker is connected: /readyz")


# ---------------------------------------------------------------- the Dockerfile

class DockerfileTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.df = Dockerfile(DOCKERFILE)
        cls.build = cls.df.stage("build")
        cls.runtime = cls.df.stages[-1]
        cls.deps = install_deps_lists()

    def test_stages(self):
        # Debian 12 (bookworm), pinned to a point release.
        self.assertRegex(self.build["base"], r"^debian:12\.\d+$")
        self.assertRegex(self.runtime["base"], r"^debian:12\.\d+-slim$")
        user = self.df.last(self.runtime, "USER")
        self.assertIsNotNone(user, "the runtime image must not run as root")
        self.assertNotIn(user.split(":")[0], ("root", "0"))
        self.assertIsNotNone(self.df.last(self.runtime, "HEALTHCHECK"))

    def test_build_packages_match_install_deps(self):
        build_pkgs = self.deps["BUILD_PKGS"]
        installed = self.df.apt_packages(self.build)
        self.assertTrue(installed, "the build stage installs nothing")
        self.assertEqual(len(installed), len(set(installed)), "listed twice: %s" % installed)
        extra = sorted(set(installed) - set(build_pkgs))
        self.assertEqual(extra, [], "installed by the Dockerfile's build stage but not in "
                         "BUILD_PKGS of scripts/install-deps.sh")
        missing = sorted(set(build_pkgs) - set(installed) - set(NOT_FOR_IMAGE))
        self.assertEqual(missing, [], "in BUILD_PKGS but not installed by the Dockerfile's "
                         "build stage (add it there, or to NOT_FOR_IMAGE with the reason)")
        stale = sorted(set(NOT_FOR_IMAGE) - set(build_pkgs))
        self.assertEqual(stale, [], "NOT_FOR_IMAGE names packages BUILD_PKGS no longer has")
        self.assertEqual(sorted(set(NOT_FOR_IMAGE) & set(installed)), [])

    def test_runtime_packages_cover_linked_libraries(self):
        runtime = self.df.apt_packages(self.runtime)
        self.assertTrue(runtime, "the runtime stage installs nothing")
        needed_pkgs, loaded_pkgs = {}, set()
        owners = {}

        def owner(path):
            if path not in owners:
                owners[path] = dpkg_owner(os.path.realpath(path)) or dpkg_owner(path)
            return owners[path]
        for program in PROGRAMS:
            binary = os.path.join(h.BIN_DIR, program)
            self.assertTrue(os.access(binary, os.X_OK), "%s not built" % binary)
            direct, loaded = linked_libraries(binary)
            for soname, path in direct.items():
                pkg = owner(path)
                self.assertIsNotNone(pkg, "no Debian package owns %s (%s)" % (path, soname))
                needed_pkgs.setdefault(pkg, set()).add(soname)
            loaded_pkgs |= {owner(p) for p in loaded.values()} - {None}
        libs = {p: s for p, s in needed_pkgs.items()
                if p not in BASE_IMAGE_PACKAGES and p not in SANITIZER_PACKAGES}
        self.assertIn("libwebsockets17", libs)  # the check found the libraries at all
        installed = dependency_closure(runtime)
        missing = {p: sorted(s) for p, s in libs.items() if p not in installed}
        self.assertEqual(missing, {}, "libraries the programs link whose packages the runtime "
                         "stage does not install")
        unneeded = sorted(set(runtime) - loaded_pkgs - set(RUNTIME_EXTRAS))
        self.assertEqual(unneeded, [], "runtime packages of no library the programs load")
        for p in runtime:
            self.assertFalse(p.endswith("-dev") or p in BUILD_TOOLS,
                             "%s belongs in the build stage" % p)

    def test_runtime_files_exist(self):
        """What the runtime stage copies from the repository exists; the
        console's ENV points at the copied files; the entrypoint and the
        health check are copied executables."""
        dests = {}
        for frm, sources, dest in self.df.copies(self.runtime):
            if frm:
                continue
            for src in sources:
                path = os.path.join(h.REPO, src)
                self.assertTrue(os.path.exists(path), "COPY %s: missing" % src)
                if dest.endswith("/") and not os.path.isdir(path):
                    dests[os.path.join(dest, os.path.basename(src))] = path
                else:
                    dests[dest.rstrip("/")] = path
        env = self.df.env(self.runtime)
        static = env.get("CLOUDPUSH_STATIC")
        self.assertIsNotNone(static, "the image must set CLOUDPUSH_STATIC")
        self.assertIn(static.rstrip("/"), dests)
        self.assertTrue(os.path.isfile(os.path.join(dests[static.rstrip("/")], "index.html")))
        for var in env:
            if var.startswith("CLOUDPUSH_"):
                self.assertTrue(any(var in accepted_variables(p) for p in PROGRAMS), var)
        entry = Dockerfile.json_or_words(self.df.last(self.runtime, "ENTRYPOINT"))
        health = self.df.last(self.runtime, "HEALTHCHECK")
        health_cmd = Dockerfile.json_or_words(health.split(" CMD ", 1)[1])
        for prog in (entry[0], health_cmd[0]):
            path = prog if prog.startswith("/") else "/usr/local/bin/" + prog
            self.assertIn(path, dests, "%s is not copied into the image" % prog)
            self.assertTrue(os.access(dests[path], os.X_OK), "%s is not executable" % dests[path])

    def test_build_stage_builds_the_programs(self):
        """Replays the build stage (COPY and RUN, but apt-get: the packages
        are checked above) in a directory standing for the image's /, then
        checks what the runtime stage copies from it."""
        root = tempfile.mkdtemp(prefix="cloudpush-it-dockerbuild-")
        self.addCleanup(shutil.rmtree, root, True)
        cwd = root

        def cpath(p):
            return os.path.join(root, p.lstrip("/")) if p.startswith("/") else os.path.join(cwd, p)

        for instr, text in self.build["instructions"]:
            if instr == "WORKDIR":
                cwd = cpath(text)
                os.makedirs(cwd, exist_ok=True)
            elif instr == "COPY":
                words = shlex.split(text)
                self.assertFalse(words[0].startswith("--"), text)
                for src in words[:-1]:
                    s = os.path.join(h.REPO, src)
                    d = cpath(words[-1])
                    if os.path.isdir(s):
                        shutil.copytree(s, d, dirs_exist_ok=True)
                    else:
                        if words[-1].endswith("/"):
                            os.makedirs(d, exist_ok=True)
                        shutil.copy(s, d)
            elif instr == "RUN":
                if "apt-get" in text:
                    continue
                r = subprocess.run(["/bin/sh", "-c", text], cwd=cwd, capture_output=True,
                                   text=True, timeout=600, stdin=subprocess.DEVNULL,
                                   env=clean_env())
                self.assertEqual(r.returncode, 0, "RUN %s\n%s%s" % (text, r.stdout[-3000:],
                                                                    r.stderr[-3000:]))
        copied = 0
        for frm, sources, dest in self.df.copies(self.runtime):
            if frm != "build":
                continue
            for src in sources:
                path = cpath(src)
                self.assertTrue(os.access(path, os.X_OK), "COPY --from=build %s: missing" % src)
                r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("env: CLOUDPUSH_LISTEN", r.stdout)
                copied += 1
        self.assertEqual(copied, len(PROGRAMS))


# ---------------------------------------------------------------- the image's scripts

def image_bin_dir(workdir):
    """A directory standing for the image's /usr/local/bin: the Dockerfile's
    COPYs into it, pointing at the repository's scripts and the built
    programs (CLOUDPUSH_BIN_DIR)."""
    df = Dockerfile(DOCKERFILE)
    d = os.path.join(workdir, "image-bin")
    os.makedirs(d, exist_ok=True)
    for frm, sources, dest in df.copies(df.stages[-1]):
        if not dest.startswith("/usr/local/bin"):
            continue
        for src in sources:
            if frm == "build":
                target = os.path.join(h.BIN_DIR, os.path.basename(src))
            else:
                target = os.path.join(h.REPO, src)
            name = os.path.basename(src) if dest.endswith("/") else os.path.basename(dest)
            link = os.path.join(d, name)
            if not os.path.lexists(link):
                os.symlink(target, link)
    return d


class EntrypointTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cloudpush-it-entry-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.bin = image_bin_dir(cls.dir)
        df = Dockerfile(DOCKERFILE)
        cls.entrypoint = Dockerfile.json_or_words(df.last(df.stages[-1], "ENTRYPOINT"))
        cls.cmd = Dockerfile.json_or_words(df.last(df.stages[-1], "CMD"))

    def run_image(self, args, env=None):
        e = dict(clean_env(), PATH=self.bin + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        e.update(env or {})
        return subprocess.run(self.entrypoint + args, capture_output=True, text=True, env=e,
                              timeout=30, stdin=subprocess.DEVNULL)

    def test_role_selects_program(self):
        for role, program in ROLES.items():
            with self.subTest(role=role):
                r = self.run_image([role, "--help"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stdout.startswith("Usage: %s " % program), r.stdout[:200])
                r = self.run_image([program, "--version"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(program, r.stdout)

    def test_default_cmd_is_the_bridge(self):
        self.assertEqual(self.cmd, ["bridge"])
        # No argument at all: the bridge too. A bad value makes it exit at once.
        r = self.run_image([], env={"CLOUDPUSH_MAX_CONNECTIONS": "lots"})
        self.assertEqual(r.returncode, 2)
        self.assertIn("cloudpush-bridge", r.stderr)

    def test_flags_without_program_and_help(self):
        r = self.run_image(["--log-level", "debug"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("bridge, httpapi or balancer", r.stderr)
        r = self.run_image(["help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("httpapi", r.stdout)
        r = self.run_image(["sh", "-c", "echo other command"])
        self.assertEqual((r.returncode, r.stdout), (0, "other command\n"))


class HealthcheckTlsTest(h.IntegrationTest):
    """The image's health check asks a program that serves TLS over TLS: a
    bridge with CLOUDPUSH_TLS_CERT in its environment, a balancer with
    --tls-cert on its command line."""

    def test_tls_programs(self):
        if "CLOUDPUSH_TLS_CERT" not in accepted_variables("cloudpush-bridge"):
            self.skipTest("this build has no TLS")
        cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"], check=True,
                       capture_output=True, timeout=60)
        image_bin = image_bin_dir(self.dir)
        path = image_bin + ":" + os.environ.get("PATH", "/usr/bin:/bin")
        entry = os.path.join(image_bin, "cloudpush-entrypoint")
        mosq = self.start_mosquitto()
        redis = self.start_redis()

        def start(name, argv, env, port):
            p = ImageProcess(self.dir, name, [entry] + argv, dict(env, PATH=path), port,
                             "/healthz")
            self.addCleanup(p.stop)
            self._logs.append(p.log_path)
            return p.start(wait=False)

        def health(p):
            env = dict(clean_env(), PATH=path, HEALTHCHECK_PID=str(p.proc.pid))
            return subprocess.run(["cloudpush-healthcheck"], capture_output=True, text=True,
                                  env=env, timeout=30, stdin=subprocess.DEVNULL)

        bport, lport = h.free_port(), h.free_port()
        bridge = start("tls-bridge", ["bridge"], {
            "CLOUDPUSH_LISTEN": "127.0.0.1:%d" % bport, "CLOUDPUSH_MQTT": mosq.url,
            "CLOUDPUSH_REDIS": redis.url, "CLOUDPUSH_ID": "tlsb",
            "CLOUDPUSH_TLS_CERT": cert, "CLOUDPUSH_TLS_KEY": key}, bport)
        balancer = start("tls-balancer", [
            "balancer", "--listen", "127.0.0.1:%d" % lport, "--tls-cert", cert,
            "--tls-key", key], {"CLOUDPUSH_REDIS": redis.url}, lport)
        for p in (bridge, balancer):
            last = []

            def ok():
                last[:] = [health(p)]
                return last[0].returncode == 0
            try:
                h.wait_until(ok, h.t(10), 0.2, "the health check of %s" % p.id)
            except AssertionError as e:
                raise AssertionError("%s: %r" % (e, last))
            self.assertIn("https://127.0.0.1:%d/healthz: HTTP/1.1 200" % p.port, last[0].stdout)
        # The bridge's answer over TLS is its /healthz body.
        self.assertIn('"id":"tlsb"', health(bridge).stdout)


# ---------------------------------------------------------------- the stack on loopback

class ImageProcess(h.Service):
    """A cloudpush service of the compose file, run as the image runs it:
    ENTRYPOINT + command, the image's ENV and the service's environment."""

    def __init__(self, workdir, name, argv, env, port, health_path):
        super().__init__(workdir, name, port=port, env=env)
        self.binary = argv[0]
        self.argv = argv
        self.health_path = health_path

    def command(self):
        return self.argv


class ComposeStackOnLoopbackTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cfg = compose_config()
        cls.services = cfg["services"]
        cls.cp = cloudpush_services(cfg)
        df = Dockerfile(DOCKERFILE)
        runtime = df.stages[-1]
        cls.bin = image_bin_dir(cls.class_dir)
        cls.path_env = cls.bin + ":" + os.environ.get("PATH", "/usr/bin:/bin")
        entrypoint = Dockerfile.json_or_words(df.last(runtime, "ENTRYPOINT"))
        # The image's ENV, with paths of copied directories mapped back to
        # the repository.
        image_env = df.env(runtime)
        for frm, sources, dest in df.copies(runtime):
            for k, v in image_env.items():
                if frm is None and len(sources) == 1 and v.rstrip("/") == dest.rstrip("/"):
                    image_env[k] = os.path.join(h.REPO, sources[0])
        # Named volumes: directories here.
        cls.volumes = {}
        for v in cfg.get("volumes") or {}:
            cls.volumes[v] = os.path.join(cls.class_dir, "volumes", v)
            os.makedirs(cls.volumes[v])

        # (service, port inside its container) -> port on 127.0.0.1
        cls.ports = {}
        for name, program in cls.cp.items():
            cls.ports[(name, listen_port(service_env(cls.services[name]), program))] = h.free_port()
        cls.ports[("redis", 6379)] = h.free_port()
        with open(os.path.join(h.MOSQUITTO_DIR, "docker.conf")) as f:
            cls.ports[("mosquitto", mosquitto_conf_port(f.read()))] = h.free_port()

        cls.procs = {}
        cls.health_cmds = {}
        for name in topo_order(cls.services):
            svc = cls.services[name]
            for dep, cond in (svc.get("depends_on") or {}).items():
                if cond["condition"] == "service_healthy":
                    cls.wait_service_healthy(dep)
            if name == "mosquitto-init":
                cls.run_init(svc)
            elif name == "mosquitto":
                cls.start_mosquitto(svc)
            elif name == "redis":
                r = h.Redis(cls.class_dir, port=cls.ports[("redis", 6379)])
                cls.addClassCleanup(r.stop)
                cls._class_logs.append(r.log_path)
                cls.procs[name] = r.start()
                cls.health_cmds[name] = ["/bin/sh", "-c", healthcheck_test(svc)[1].replace(
                    "redis-cli", "redis-cli -p %d" % r.port)]
            elif name in cls.cp:
                env = dict(image_env)
                env.update(cls.rewrite_env(name, service_env(svc)))
                env["PATH"] = cls.path_env
                port = cls.ports[(name, listen_port(service_env(svc), cls.cp[name]))]
                test = healthcheck_test(svc)
                p = ImageProcess(cls.class_dir, name, [os.path.join(cls.bin, entrypoint[0])] +
                                 entrypoint[1:] + svc["command"], env, port, test[2])
                cls.addClassCleanup(p.stop)
                cls._class_logs.append(p.log_path)
                p.start(wait=False)
                cls.procs[name] = p
                cls.health_cmds[name] = test[1:]
            else:
                raise AssertionError("service %s: the test does not know how to run it" % name)
        for name in cls.procs:
            cls.wait_service_healthy(name)

    # -- running the compose services here

    @classmethod
    def host_path(cls, svc, container_path):
        """A path inside a service's container -> the file here, through its
        volumes (bind mounts: the repository; named volumes: directories)."""
        best = None
        for v in svc.get("volumes") or []:
            if isinstance(v, str):
                parts = v.split(":")
                source, target = parts[0], parts[1]
            else:
                source, target = v["source"], v["target"]
            if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
                if best is None or len(target) > len(best[1]):
                    best = (source, target)
        if best is None:
            return None
        source = cls.volumes.get(best[0], best[0])
        return source + container_path[len(best[1]):]

    @classmethod
    def map_paths(cls, svc, text):
        for m in sorted(set(re.findall(r"(?<![\w.])/[\w./-]+", text)), key=len, reverse=True):
            hp = cls.host_path(svc, m)
            if hp:
                text = text.replace(m, hp)
        return text

    @classmethod
    def run_init(cls, svc):
        cmd = (svc.get("entrypoint") or []) + (svc.get("command") or [])
        self_cmd = [cls.map_paths(svc, unescape(c)) for c in cmd]
        if os.geteuid() != 0:
            # Only root can give files to the user "mosquitto".
            self_cmd = [re.sub(r" -o mosquitto:mosquitto", "",
                               c.replace("chown mosquitto:mosquitto", "true"))
                        for c in self_cmd]
        env = dict(clean_env(), **service_env(svc))
        r = subprocess.run(self_cmd, capture_output=True, text=True, env=env, timeout=60,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError("mosquitto-init %s failed (%d): %s%s" % (self_cmd, r.returncode,
                                                                         r.stdout, r.stderr))
        if r.stdout.strip():
            raise AssertionError("mosquitto-init generated passwords nobody knows: %r" % r.stdout)

    @classmethod
    def start_mosquitto(cls, svc):
        cmd = svc["command"]
        conf = cls.host_path(svc, cmd[cmd.index("-c") + 1])
        with open(conf) as f:
            text = f.read()
        conf_port = mosquitto_conf_port(text)
        port = cls.ports[("mosquitto", conf_port)]
        text = re.sub(r"^listener\s+\d+\s*$", "listener %d 127.0.0.1" % port, text, flags=re.M)
        text = cls.map_paths(svc, text)
        if os.geteuid() == 0:
            text += "\nuser root\n"
        m = h.Mosquitto(cls.class_dir, port=port)
        with open(m.conf, "w") as f:
            f.write(text)
        cls.addClassCleanup(m.stop)
        cls._class_logs.append(m.log_path)
        cls.procs["mosquitto"] = m.start()
        test = healthcheck_test(svc)
        assert test[0] == "CMD-SHELL", test
        check = unescape(test[1])
        assert "-p %d " % conf_port in check, check
        cls.health_cmds["mosquitto"] = ["/bin/sh", "-c", check.replace("-p %d " % conf_port,
                                                                       "-p %d " % port)]
        cls.mosquitto_env = service_env(svc)

    @classmethod
    def rewrite_env(cls, name, env):
        """Service names -> 127.0.0.1 and this machine's ports; the bridges'
        advertised URLs -> localhost (a host name, as in Docker)."""
        out = {}
        for k, v in env.items():
            def repl(m):
                key = (m.group(1), int(m.group(2)))
                if key not in cls.ports:
                    return m.group(0)
                host = "localhost" if k == "CLOUDPUSH_ADVERTISE" else "127.0.0.1"
                return "//%s:%d" % (host, cls.ports[key])
            v = re.sub(r"//([A-Za-z0-9_.-]+):(\d+)", repl, v)
            if k == "CLOUDPUSH_LISTEN":
                v = "127.0.0.1:%d" % cls.ports[(name, int(v.rsplit(":", 1)[1]))]
            for m in re.finditer(r"//([A-Za-z0-9_.-]+):(\d+)", v):
                if m.group(1) in cls.services:
                    raise AssertionError("%s %s=%s: %s:%s is not a port that service listens on"
                                         % (name, k, env[k], m.group(1), m.group(2)))
            out[k] = v
        return out

    @classmethod
    def run_health(cls, name, cmd=None):
        env = dict(clean_env(), PATH=cls.path_env)
        if name == "mosquitto":
            env.update(cls.mosquitto_env)
        p = cls.procs[name]
        if isinstance(p, h.Service):
            env["HEALTHCHECK_PID"] = str(p.proc.pid)
        return subprocess.run(cmd or cls.health_cmds[name], capture_output=True, text=True,
                              env=env, timeout=30, stdin=subprocess.DEVNULL)

    @classmethod
    def wait_service_healthy(cls, name):
        last = [None]

        def healthy():
            p = cls.procs[name]
            if isinstance(p, h.Service) and p.proc.poll() is not None:
                raise AssertionError("%s exited with %s; log:\n%s" % (
                    name, p.proc.returncode, h.tail(p.log_path, 40)))
            last[0] = cls.run_health(name)
            return last[0].returncode == 0
        try:
            h.wait_until(healthy, h.t(20), 0.2, "the healthcheck of %s" % name)
        except AssertionError as e:
            raise AssertionError("%s (last: %r)" % (e, last[0]))

    def port_of(self, name):
        return self.procs[name].port

    # -- the tests

    def test_every_healthcheck_passes_and_fails_when_it_should(self):
        for name in self.procs:
            with self.subTest(service=name):
                r = self.run_health(name)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name in self.cp:
            with self.subTest(service=name, path="/nope"):
                r = self.run_health(name, self.health_cmds[name][:1] + ["/nope"])
                self.assertNotEqual(r.returncode, 0, r.stdout)
                # 404 (the bridge: 426, a WebSocket-only path)
                self.assertRegex(r.stdout, r"/nope: HTTP/1\.1 4\d\d ")
        r = self.run_health("mosquitto", [c.replace('"$CLOUDPUSH_SERVICE_MQTT_PASSWORD"', "wrong")
                                          for c in self.health_cmds["mosquitto"]])
        self.assertNotEqual(r.returncode, 0, "the broker accepted a wrong password")

    def test_health_check_follows_the_program(self):
        """The health check finds the program's address in its environment
        (CLOUDPUSH_LISTEN: no --listen on the command line) and reports what
        the program answered."""
        p = self.procs["bridge1"]
        r = self.run_health("bridge1")
        self.assertIn("127.0.0.1:%d/healthz" % p.port, r.stdout)
        self.assertIn('"id":"bridge1"', r.stdout)

    def test_balancer_sees_both_bridges_by_advertised_url(self):
        st, _, body = h.http_request(self.port_of("balancer"), "GET", "/api/v1/bridges")
        self.assertEqual(st, 200)
        bridges = {b["id"]: b["url"] for b in json.loads(body)["bridges"]}
        self.assertEqual(bridges, {
            "bridge1": "ws://localhost:%d/ws" % self.port_of("bridge1"),
            "bridge2": "ws://localhost:%d/ws" % self.port_of("bridge2")})

    def dev_token(self, channel_id):
        """Client auth is on in the compose setup; in its demo mode the API
        mints tokens (--dev-token-secret)."""
        st, _, body = h.http_request(self.port_of("httpapi"), "POST",
                                     "/api/v1/dev/token?channelId=" + channel_id)
        self.assertEqual(st, 200, body)
        return json.loads(body)["token"]

    def test_push_through_balancer_and_api(self):
        bal = self.port_of("balancer")
        api = self.port_of("httpapi")
        names = [h.uniq("dc-%d" % i) for i in range(4)]
        sessions = [self.session(bal, n, path="/ws", query={"token": self.dev_token(n)})
                    for n in names]
        # Without a token the balancer refuses the upgrade.
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(bal, h.uniq("dc-anon"), path="/ws")
        self.assertEqual(cm.exception.status, 401)
        on = {s.session_id.split("_", 1)[0] for s in sessions}
        self.assertEqual(on, {"bridge1", "bridge2"}, "placement used one bridge only")

        def online(n):
            st, _, body = h.http_request(api, "GET", "/api/v1/clients/" + n)
            return st == 200 and json.loads(body)["online"]
        # The bridges write their sessions to Redis at their next registry round.
        for n in names:
            h.wait_until(lambda: online(n), h.t(5), 0.1, "%s online in the registry" % n)
        offline = h.uniq("dc-offline")
        st, _, raw = h.http_request(api, "POST", "/api/v1/push",
                                    headers={"Content-Type": "application/json"},
                                    body=json.dumps({"to": names + [offline],
                                                     "msg": {"compose": 1}}))
        self.assertEqual(st, 200, raw)
        data = json.loads(raw)["data"]
        self.assertEqual(data.get("offline"), [offline], "presence through Redis")
        ids = {m["to"]: m["messageId"] for m in data["messages"]}
        for s in sessions:
            self.assertDelivery(s.recv(), s.channel_id, s.session_id, {"compose": 1},
                                h.TRIGGER_HTTP, message_id=ids[s.channel_id])
        # WebSocket to WebSocket through the relay, across the bridges.
        a = next(s for s in sessions if s.session_id.startswith("bridge1_"))
        b = next(s for s in sessions if s.session_id.startswith("bridge2_"))
        a.send({"msgType": 1, "to": [b.channel_id], "msg": {"ws": 1}, "messageId": "dc-ws-1"})
        self.assertDelivery(b.recv(), b.channel_id, b.session_id, {"ws": 1}, h.TRIGGER_WEBSOCKET,
                            sender=a.channel_id, message_id="dc-ws-1")
        self.assertEqual(a.recv_type(h.MSG_BUSINESS_ACK)["messageId"], "dc-ws-1")

    def test_console_offers_the_balancer(self):
        api = self.port_of("httpapi")
        st, _, body = h.http_request(api, "GET", "/api/v1/config")
        self.assertEqual(st, 200)
        env = service_env(self.services["httpapi"])
        self.assertEqual(json.loads(body), {"bridges": [],
                                            "balancer": env["CLOUDPUSH_CONSOLE_BALANCER"],
                                            "authRequired": False,
                                            "devTokens": True})
        # The console's files, from the image's CLOUDPUSH_STATIC.
        st, hdrs, body = h.http_request(api, "GET", "/")
        self.assertEqual(st, 200)
        self.assertIn("text/html", hdrs.get("content-type", ""))
        st, _, _ = h.http_request(api, "GET", "/app.js")
        self.assertEqual(st, 200)

    def test_mqtt_users_have_their_rights(self):
        """The components logged in with their own users (the ACL applies):
        a service subscriber sees a client's upstream message."""
        env = self.mosquitto_env
        svc = self.subscriber(self.procs["mosquitto"].port, "cloudpush/upstream/#",
                              username="cloudpush-service",
                              password=env["CLOUDPUSH_SERVICE_MQTT_PASSWORD"])
        cid = h.uniq("dc-up")
        s = self.session(self.port_of("balancer"), cid, path="/ws",
                         query={"token": self.dev_token(cid)})
        s.send({"msgType": 1, "to": [s.channel_id], "msg": {"up": 1}, "messageId": "dc-up-1"})
        got = [s.recv(), s.recv()]  # the push to itself and the ack, in either order
        self.assertEqual(sorted(m["msgType"] for m in got), [h.MSG_BUSINESS, h.MSG_BUSINESS_ACK])
        self.assertEqual({m["messageId"] for m in got}, {"dc-up-1"})
        svc.wait_json(lambda o: o.get("messageId") == "dc-up-1",
                      topic="cloudpush/upstream/" + s.channel_id)


if __name__ == "__main__":
    unittest.main()
