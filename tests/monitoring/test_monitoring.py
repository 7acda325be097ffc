"""monitoring/: the alert rules pass promtool (syntax and their unit tests),
and every metric the rules and the Grafana dashboard use is one the code
exports, so neither can silently point at a renamed metric."""

import glob
import json
import os
import re
import shutil
import subprocess
import unittest

import yaml  # python3-yaml (a dependency of Debian's docker-compose)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MON = os.path.join(REPO, "monitoring")
# scripts/install-deps.sh unpacks it there (installing Debian's prometheus
# package would start a server); one on PATH does as well.
PROMTOOL = shutil.which("promtool") or os.path.join(REPO, ".cache", "prometheus", "usr", "bin",
                                                     "promtool")

# Series names Prometheus itself makes, not the code.
PROMETHEUS_SERIES = {"up"}
# The suffixes of a histogram's series.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "min", "max", "le", "job",
                "instance", "status", "reason", "kind", "without", "on", "ignoring", "and",
                "or", "unless", "offset", "avg", "count"}


def exported_metrics():
    """Metric names written as string literals in the C sources."""
    names = set()
    for path in glob.glob(os.path.join(REPO, "*", "*.c")):
        if "/tests/" in path or "/bench/" in path:
            continue
        with open(path) as f:
            names |= set(re.findall(r'"((?:cloudpush|process)_[a-z0-9_]+)"', f.read()))
    return names


def metrics_in(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)   # selectors
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    found = set()
    for word in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr):
        if word in PROMQL_WORDS or not ("_" in word or word in PROMETHEUS_SERIES):
            continue
        if word.startswith(("cloudpush_", "process_")) or word in PROMETHEUS_SERIES:
            found.add(word)
    return found


def base_name(metric, exported):
    if metric in exported:
        return metric
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix) and metric[:-len(suffix)] in exported:
            return metric[:-len(suffix)]
    return None


class MonitoringTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.exported = exported_metrics()
        # The sources really were read: the core families are there.
        assert {"cloudpush_bridge_connections", "cloudpush_httpapi_publish_seconds",
                "process_open_fds"} <= cls.exported, cls.exported

    def promtool(self, *args):
        self.assertTrue(os.access(PROMTOOL, os.X_OK),
                        "promtool missing: scripts/install-deps.sh unpacks it into .cache/")
        return subprocess.run([PROMTOOL] + list(args), cwd=MON, capture_output=True, text=True,
                              timeout=60)

    def test_rules_are_valid(self):
        r = self.promtool("check", "rules", "alerts.yml")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_rules_unit_tests(self):
        r = self.promtool("test", "rules", "alerts.test.yml")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def check_exprs(self, exprs, where):
        used = set()
        for e in exprs:
            used |= metrics_in(e)
        self.assertTrue(used, "no metric found in %s" % where)
        for m in sorted(used):
            if m in PROMETHEUS_SERIES:
                continue
            self.assertIsNotNone(base_name(m, self.exported),
                                 "%s uses %s, which no component exports" % (where, m))
        return used

    def test_rules_use_exported_metrics(self):
        with open(os.path.join(MON, "alerts.yml")) as f:
            doc = yaml.safe_load(f)
        rules = [r for g in doc["groups"] for r in g["rules"]]
        self.assertGreaterEqual(len(rules), 10)
        self.check_exprs([r["expr"] for r in rules], "alerts.yml")

    def test_dashboard_uses_exported_metrics(self):
        with open(os.path.join(MON, "grafana-dashboard.json")) as f:
            dash = json.load(f)
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        used = self.check_exprs(exprs, "grafana-dashboard.json")
        self.assertIn("cloudpush_bridge_connections", used)
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")

    def test_control_a_renamed_metric_is_caught(self):
        with self.assertRaises(AssertionError):
            self.check_exprs(["rate(cloudpush_bridge_renamed_total[5m])"], "control")


if __name__ == "__main__":
    unittest.main()
