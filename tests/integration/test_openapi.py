"""The OpenAPI 3.1 document of the HTTP API (httpapi/static/openapi.json):
served at /api/v1/openapi.json, a valid document whose schemas are valid
JSON Schema 2020-12, every real answer of the running API (status and body)
is one it describes, and its error codes are exactly those of the table in
docs/http-api.md."""

import json
import os
import re
import unittest

from jsonschema import Draft202012Validator, RefResolver  # python3-jsonschema

import harness as h
from test_httpapi_hostile import push_request, raw_exchange

SPEC_FILE = os.path.join(h.REPO, "httpapi", "static", "openapi.json")
DOC_FILE = os.path.join(h.REPO, "docs", "http-api.md")


def load_spec():
    with open(SPEC_FILE) as f:
        return json.load(f)


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


class OpenApiDocumentTest(unittest.TestCase):

    def test_document(self):
        spec = load_spec()
        self.assertEqual(spec["openapi"], "3.1.0")
        self.assertTrue(spec["info"]["title"] and spec["info"]["version"])
        for ref in set(refs(spec)):
            self.assertTrue(ref.startswith("#/"), ref)
            node = spec
            for part in ref[2:].split("/"):
                self.assertIn(part, node, "unresolved $ref %s" % ref)
                node = node[part]
        for name, schema in spec["components"]["schemas"].items():
            with self.subTest(schema=name):
                Draft202012Validator.check_schema(schema)
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                self.assertIn(method, ("get", "post"), path)
                self.assertTrue(op["responses"], "%s %s has no responses" % (method, path))
                for status in op["responses"]:
                    self.assertRegex(status, r"^[1-5][0-9][0-9]$")

    def test_error_codes_are_the_documented_ones(self):
        spec = load_spec()
        with open(DOC_FILE) as f:
            doc = f.read()
        table = set(re.findall(r"^\| [45]\d\d \| `([a-z_]+)` \|", doc, re.M))
        self.assertGreater(len(table), 15, "the error table of docs/http-api.md was not found")
        self.assertEqual(set(spec["components"]["schemas"]["ErrorCode"]["enum"]), table)


class OpenApiLiveTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.spec = load_spec()
        cls.resolver = RefResolver(base_uri="", referrer=cls.spec)
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="openapi")
        cls.api = cls.class_httpapi(cls.mosq, bridges=[cls.bridge])
        cls.keyed = cls.class_httpapi(cls.mosq, name="httpapi-keyed-openapi",
                                      args=["--api-key", "k1", "--rate-per-key", "1",
                                            "--burst-per-key", "1"])
        cls.checked = set()

    def conforms(self, path, method, answer):
        """The (status, body) of a real answer is one the document describes."""
        st, body, hdrs = answer
        op = self.spec["paths"][path][method.lower()]
        self.assertIn(str(st), op["responses"],
                      "%s %s answered %d, which the document does not list" % (method, path, st))
        content = op["responses"][str(st)].get("content", {})
        ctype = hdrs.get("content-type", "").split(";")[0]
        self.assertIn(ctype, content, "%s %s %d: content type %s" % (method, path, st, ctype))
        if ctype == "application/json":
            schema = content[ctype]["schema"]
            errors = sorted(Draft202012Validator(schema, resolver=self.resolver).iter_errors(body),
                            key=str)
            self.assertFalse(errors, "%s %s %d: %s\n%s" % (method, path, st, body,
                                                          "\n".join(map(str, errors[:3]))))
        self.checked.add((path, method.lower(), st))

    def get(self, api, path, url=None, headers=None):
        st, hdrs, raw = h.http_request(api.port, "GET", url or path, headers=headers)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode()
        return st, body, hdrs

    def test_served_document_is_the_file(self):
        st, body, hdrs = self.get(self.api, "/api/v1/openapi.json")
        self.assertEqual(st, 200)
        self.assertEqual(body, self.spec)
        self.conforms("/api/v1/openapi.json", "GET", (st, body, hdrs))

    def test_push_answers(self):
        cid = h.uniq("oa")
        s = self.session(self.bridge.port, cid)
        P = "/api/v1/push"
        self.conforms(P, "POST", self.api.push({"to": [cid, "nobody-here"], "msg": {"a": 1},
                                                "requestId": "rq-1"}))
        self.assertEqual(s.recv()["msg"], {"a": 1})
        self.conforms(P, "POST", self.api.push({"sendToAll": True, "msg": {"b": 2}}))
        self.conforms(P, "POST", self.api.push("{nope"))
        self.conforms(P, "POST", self.api.push({"to": ["a/b"], "msg": {}}))
        self.conforms(P, "POST", self.api.push({"to": ["a"], "msg": {}}, content_type="text/plain"))
        self.conforms(P, "POST", self.api.push(None, method="GET", content_type=None))
        st, hdrs, body, _ = raw_exchange(self.api.port,
                                         push_request(b"{", content_length=2000000))
        self.conforms(P, "POST", (st, body, hdrs))  # 413
        # The compatibility endpoints: code "-1" and the real one in "error".
        answer = self.api.push({"msg": {}}, path="/message/send")
        self.assertEqual(answer[1]["code"], "-1")
        self.conforms("/message/send", "POST", answer)
        self.conforms("/portal/message/send", "POST",
                      self.api.push({"to": [cid], "msg": {"c": 3}}, path="/portal/message/send"))

    def test_keyed_answers(self):
        P = "/api/v1/push"
        self.conforms(P, "POST", self.keyed.push({"to": ["a"], "msg": {}}))  # 401
        auth = {"Authorization": "Bearer k1"}
        answers = [self.keyed.push({"to": ["a"], "msg": {}}, headers=auth) for _ in range(3)]
        self.assertIn(429, [a[0] for a in answers])
        for a in answers:
            self.conforms(P, "POST", a)
        self.conforms("/api/v1/clients/{channelId}", "GET",
                      self.get(self.keyed, "", "/api/v1/clients/alice"))  # 401

    def test_operations_answers(self):
        for path in ("/healthz", "/livez", "/readyz", "/api/v1/config"):
            self.conforms(path, "GET", self.get(self.api, path))
        st, hdrs, _ = h.http_request(self.api.port, "GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain"))
        self.conforms("/api/v1/clients/{channelId}", "GET",
                      self.get(self.api, "", "/api/v1/clients/alice"))  # 501: no --redis
        self.conforms("/api/v1/clients/{channelId}", "GET",
                      self.get(self.api, "", "/api/v1/clients/a%2Fb"))   # 400
        st, hdrs, raw = h.http_request(self.api.port, "POST", "/api/v1/dev/token?channelId=a")
        self.conforms("/api/v1/dev/token", "POST", (st, json.loads(raw), hdrs))  # 404

    def test_zz_bus_down_answers(self):
        # Last (zz): stops the broker of the class.
        self.mosq.stop()
        h.wait_until(lambda: self.get(self.api, "/readyz")[0] == 503, h.t(10),
                     what="/readyz 503 without the broker")
        self.conforms("/readyz", "GET", self.get(self.api, "/readyz"))
        answer = self.api.push({"to": ["a"], "msg": {}})
        self.assertEqual(answer[0], 503)
        self.assertEqual(answer[1]["code"], "bus_unavailable")
        self.conforms("/api/v1/push", "POST", answer)


if __name__ == "__main__":
    unittest.main()
