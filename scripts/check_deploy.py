"""Checks what ccrelay is deployed with: the Dockerfile (hadolint, the image's config and its
HEALTHCHECK command against a running ccrelay) and charts/ccrelay with Helm's own engine
(helm-python-sdk), starting ccrelay from what the chart renders. Run through
scripts/check-deploy.sh, which installs the Python packages.

Each check prints one line; any failure is collected, and the script exits 1 after printing
them all, so one run shows every problem.
"""

import argparse
import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import base64

import helm_python
import yaml
from helm_python import chart as helm_chart

FAILURES = []
CHECKS = 0


def check(condition, what):
    global CHECKS
    CHECKS += 1
    if condition:
        print(f"ok: {what}")
    else:
        print(f"FAILED: {what}")
        FAILURES.append(what)


RULES = """version: 1
sinks:
  archive:
    type: file
    path: "out/{{ kind }}.jsonl"
rules:
  - name: everything
    to: archive
"""

FULL_VALUES = {
    "rules": RULES,
    "existingSecret": "ccrelay-secrets",
    "extraEnv": [{"name": "RUST_LOG", "value": "info,ccrelay=debug"}],
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True},
    "config": {
        "sources": {
            "hq": {
                "domain": "demo",
                "auth": {
                    "type": "basic",
                    "credentials": [{"username": "hq", "password": "${HQ_PASSWORD}"}],
                },
            }
        },
        "ingress": {"dedupe_window_hours": 72},
        "spool": {"max_disk_bytes": 10737418240, "retention_hours": 168},
    },
}


def render(chart, values):
    manifests = chart.render(values, name="relay", namespace="ops", is_install=True)
    documents = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for document in yaml.safe_load_all(text):
            if document is not None:
                documents.append((path, document))
    return documents


def by_kind(documents, kind):
    return [document for _, document in documents if document.get("kind") == kind]


def one(documents, kind, name=None):
    found = [d for d in by_kind(documents, kind) if name is None or d["metadata"]["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def lint_clean(path, values, what):
    report = helm_chart.lint(path, values, strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += report.get("errors", []) or []
    check(not problems, f"helm lint --strict ({what}): {problems or 'clean'}")


def check_documents(documents, what):
    for path, document in documents:
        has_identity = all(key in document for key in ("apiVersion", "kind", "metadata"))
        check(has_identity and document["metadata"].get("name"),
              f"{what}: {path} {document.get('kind')} has apiVersion, kind and a name")


def container(statefulset):
    return statefulset["spec"]["template"]["spec"]["containers"][0]


def check_defaults(chart, chart_path):
    lint_clean(chart_path, None, "default values")
    documents = render(chart, None)
    check_documents(documents, "defaults")
    kinds = sorted(d["kind"] for _, d in documents)
    check(kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "Service", "StatefulSet"],
          f"defaults render ConfigMap, PDB, three Services and a StatefulSet: {kinds}")
    statefulset = one(documents, "StatefulSet")
    main = container(statefulset)
    check(main["args"] == ["--log-format=json", "serve", "--config=/etc/ccrelay/config/ccrelay.yaml"],
          f"the container runs serve with the mounted config: {main['args']}")
    check(main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"},
          "liveness probes /healthz on the admin port")
    check(main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"},
          "readiness probes /readyz on the admin port")
    check(main["resources"]["requests"]["memory"] == "128Mi", "resources are set")
    claims = statefulset["spec"].get("volumeClaimTemplates", [])
    check(len(claims) == 1 and claims[0]["metadata"]["name"] == "data"
          and claims[0]["spec"]["resources"]["requests"]["storage"] == "20Gi",
          "the store is a 20Gi PersistentVolumeClaim per pod")
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    check(mounts["data"]["mountPath"] == "/data", "the claim is mounted at /data")
    check("rules" not in mounts, "no rules volume without rules")
    pod = statefulset["spec"]["template"]["spec"]
    check(pod["securityContext"]["runAsNonRoot"] is True and main["securityContext"]["readOnlyRootFilesystem"] is True,
          "runs as non-root with a read-only root filesystem")
    check("envFrom" not in main, "no envFrom without existingSecret")
    config = json.loads(one(documents, "ConfigMap")["data"]["ccrelay.yaml"])
    check(config["listen"] == "0.0.0.0:8080" and config["admin_listen"] == "0.0.0.0:9090"
          and config["data_dir"] == "/data" and "rules" not in config,
          f"the config listens on all addresses and keeps data in /data: {config}")
    services = {s["metadata"]["name"]: s for s in by_kind(documents, "Service")}
    check(services["relay-ccrelay"]["spec"]["ports"][0]["targetPort"] == "ingress", "ingress Service")
    check(services["relay-ccrelay-admin"]["spec"]["ports"][0]["targetPort"] == "admin", "admin Service")
    check(services["relay-ccrelay-headless"]["spec"]["clusterIP"] == "None"
          and statefulset["spec"]["serviceName"] == "relay-ccrelay-headless",
          "a headless Service governs the StatefulSet")
    check(one(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1, "PodDisruptionBudget")


def check_full(chart, chart_path, dashboard_text):
    lint_clean(chart_path, FULL_VALUES, "every option on")
    documents = render(chart, FULL_VALUES)
    check_documents(documents, "every option on")
    statefulset = one(documents, "StatefulSet")
    main = container(statefulset)
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    check(mounts.get("rules", {}).get("mountPath") == "/etc/ccrelay/rules" and "subPath" not in mounts.get("rules", {}),
          "rules are mounted as a folder, without subPath, so ConfigMap updates reach the pod")
    rules_map = one(documents, "ConfigMap", "relay-ccrelay-rules")
    check(rules_map["data"]["rules.yaml"] == RULES, "the rules ConfigMap holds the rules text as given")
    config = json.loads(one(documents, "ConfigMap", "relay-ccrelay-config")["data"]["ccrelay.yaml"])
    check(config["rules"] == "/etc/ccrelay/rules/rules.yaml", "the config points at the mounted rules")
    check(config["spool"]["max_disk_bytes"] == 10737418240 and isinstance(config["spool"]["max_disk_bytes"], int),
          f"large integers stay integers: {config['spool']}")
    check(config["sources"]["hq"]["auth"]["credentials"][0]["password"] == "${HQ_PASSWORD}",
          "secret references reach the config unexpanded")
    check(main["envFrom"] == [{"secretRef": {"name": "ccrelay-secrets"}}], "existingSecret becomes envFrom")
    check(main["env"] == FULL_VALUES["extraEnv"], "extraEnv is passed on")
    monitor = one(documents, "ServiceMonitor")
    check(monitor["spec"]["endpoints"][0]["port"] == "admin" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
          and monitor["metadata"]["labels"]["release"] == "prometheus",
          "ServiceMonitor scrapes /metrics on the admin port")
    admin = one(documents, "Service", "relay-ccrelay-admin")
    selected = all(admin["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    others = [s for s in by_kind(documents, "Service") if s["metadata"]["name"] != "relay-ccrelay-admin"
              and all(s["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
    check(selected and not others, "the ServiceMonitor selects the admin Service only")
    dashboard = one(documents, "ConfigMap", "relay-ccrelay-dashboard")
    check(dashboard["metadata"]["labels"].get("grafana_dashboard") == "1"
          and json.loads(dashboard["data"]["ccrelay.json"]) == json.loads(dashboard_text),
          "the dashboard ConfigMap carries dashboards/ccrelay.json for Grafana's sidecar")

    # Rules reload live, so a rules change must not roll the pods; a config change must.
    def checksum(values):
        rendered = render(chart, values)
        return one(rendered, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    other_rules = copy.deepcopy(FULL_VALUES)
    other_rules["rules"] = RULES.replace("everything", "all")
    other_config = copy.deepcopy(FULL_VALUES)
    other_config["config"]["ingress"]["dedupe_window_hours"] = 24
    check(checksum(FULL_VALUES) == checksum(other_rules), "a rules change does not restart the pods")
    check(checksum(FULL_VALUES) != checksum(other_config), "a config change restarts the pods")

    no_disk = copy.deepcopy(FULL_VALUES)
    no_disk["persistence"] = {"enabled": False}
    statefulset = one(render(chart, no_disk), "StatefulSet")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    check("volumeClaimTemplates" not in statefulset["spec"] and "emptyDir" in volumes["data"],
          "persistence off gives an emptyDir")
    return documents


def check_schema(chart):
    refusals = {
        "an unknown top-level value": {"replica": 2},
        "a string where a number belongs": {"replicas": "two"},
        "a config field the chart sets itself": {"config": {"sources": {"a": {}}, "listen": "0.0.0.0:1"}},
        "no sources (removed with null)": {"config": {"sources": None}},
        "an unknown log format": {"logFormat": "xml"},
        "a malformed volume size": {"persistence": {"enabled": True, "size": "lots"}},
    }
    for what, values in refusals.items():
        try:
            chart.render(values, name="relay", namespace="ops")
        except helm_python.HelmError as err:
            check(True, f"the schema refuses {what} ({str(err).splitlines()[0][:100]})")
        else:
            check(False, f"the schema refuses {what}")


def check_metrics_documented(root, dashboard_text):
    metrics_source = open(os.path.join(root, "src", "metrics.rs")).read()
    defined = set(re.findall(r'"(ccrelay_[a-z_]+)"', metrics_source))
    documented = set(re.findall(r"`(ccrelay_[a-z_]+)`", open(os.path.join(root, "docs", "metrics.md")).read()))
    check(defined and defined <= documented, f"docs/metrics.md lists every metric in src/metrics.rs: missing {sorted(defined - documented)}")
    used = set()
    for name in re.findall(r"ccrelay_[a-z_]+", dashboard_text):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    check(used <= documented, f"the dashboard uses only documented metrics: unknown {sorted(used - documented)}")


class RunningRelay:
    """ccrelay started on a config (and rules) with its addresses and data dir moved to
    loopback port 0 and a temporary folder; stopped with SIGTERM on exit."""

    def __init__(self, binary, config_text, rules_text, environment):
        self.binary = binary
        self.config_text = config_text
        self.rules_text = rules_text
        self.environment = environment
        self.ingress = self.admin = None

    def __enter__(self):
        self.folder = tempfile.TemporaryDirectory()
        config_path = os.path.join(self.folder.name, "ccrelay.yaml")
        open(config_path, "w").write(self.config_text)
        command = [self.binary, "--log-format", "json", "serve", "--config", config_path,
                   "--data-dir", os.path.join(self.folder.name, "data"),
                   "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        if self.rules_text is not None:
            rules_path = os.path.join(self.folder.name, "rules.yaml")
            open(rules_path, "w").write(self.rules_text)
            command += ["--rules", rules_path]
        environment = dict(os.environ, RUST_LOG="info", **self.environment)
        self.process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        self.log = []
        while time.monotonic() < deadline and self.admin is None:
            line = self.process.stderr.readline()
            if not line:
                break
            self.log.append(line)
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("message") == "listening":
                self.ingress, self.admin = event["ingress"], event["admin"]
        while self.admin and time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return self

    def started(self):
        return self.admin is not None

    def post_form(self, source, username, password):
        form = (b"<?xml version='1.0' ?><data xmlns=\"http://openrosa.org/formdesigner/X\">"
                b"<n1:meta xmlns:n1=\"http://openrosa.org/jr/xforms\"><n1:instanceID>deploy-check-1"
                b"</n1:instanceID></n1:meta></data>")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        request = urllib.request.Request(
            f"http://{self.ingress}/ingest/{source}", data=form, method="POST",
            headers={"Content-Type": "text/xml", "Authorization": "Basic " + token})
        try:
            return urllib.request.urlopen(request, timeout=10).status
        except urllib.error.HTTPError as err:
            return f"{err.code} {err.read()[:300]!r}"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return "killed after 30 s"

    def __exit__(self, *_):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.folder.cleanup()


def start_from_rendered(binary, documents):
    """Starts ccrelay on the rendered config and rules and sends it one payload."""
    config_text = one(documents, "ConfigMap", "relay-ccrelay-config")["data"]["ccrelay.yaml"]
    rules_text = one(documents, "ConfigMap", "relay-ccrelay-rules")["data"]["rules.yaml"]
    with RunningRelay(binary, config_text, rules_text, {"HQ_PASSWORD": "s3cret"}) as relay:
        log = "" if relay.started() else ": " + "".join(relay.log)[-2000:].strip()
        check(relay.started(), f"ccrelay starts on the chart's rendered config and rules{log}")
        if not relay.started():
            return
        status = relay.post_form("hq", "hq", "s3cret")
        check(status == 202, f"it accepts a payload with the configured credentials: {status}")
        code = relay.stop()
        check(code == 0, f"it stops cleanly on SIGTERM: exit {code}")


def dockerfile_instructions(path):
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in open(path):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        instructions.append(current + stripped)
        current = ""
    return instructions


def check_image(root, binary, hadolint):
    dockerfile = os.path.join(root, "Dockerfile")
    linted = subprocess.run([hadolint, "--no-color", dockerfile], cwd=root, capture_output=True, text=True)
    check(linted.returncode == 0, f"hadolint Dockerfile: {(linted.stdout + linted.stderr).strip() or 'clean'}")
    instructions = dockerfile_instructions(dockerfile)
    stages = [i for i in instructions if i.startswith("FROM ")]
    check(len(stages) == 2 and stages[-1] == "FROM debian:bookworm-slim",
          f"two stages, the last on debian:bookworm-slim: {stages}")
    final = instructions[instructions.index(stages[-1]):]
    check("USER 10001:10001" in final, "the final stage runs as an unprivileged user")
    check('VOLUME ["/data"]' in final and "EXPOSE 8080 9090" in final, "/data is a volume; 8080 and 9090 exposed")
    command = json.loads(next(i for i in final if i.startswith("CMD ")).split(" ", 1)[1])
    check(command[-2:] == ["--data-dir", "/data"], f"the data dir is the volume: {command}")
    healthcheck = next(i for i in final if i.startswith("HEALTHCHECK "))
    probe = json.loads(healthcheck[healthcheck.index("CMD [") + 4:])
    config_text = open(os.path.join(root, "deploy", "docker", "ccrelay.yaml")).read()
    config = yaml.safe_load(config_text)
    check(config["listen"] == "0.0.0.0:8080" and config["admin_listen"] == "0.0.0.0:9090",
          "the image's config listens on every address of the container")
    check("127.0.0.1/9090" in probe[2], "the HEALTHCHECK probes the admin port 9090")
    environment = {"CCRELAY_USERNAME": "hq", "CCRELAY_PASSWORD": "pw"}
    with RunningRelay(binary, config_text, None, environment) as relay:
        check(relay.started(), "ccrelay starts on the image's config")
        if not relay.started():
            return
        status = relay.post_form("any-source", "hq", "pw")
        check(status == 202, f"the image's config takes HQ's Basic auth on any source: {status}")
        refused = relay.post_form("any-source", "hq", "wrong")
        check(str(refused).startswith("401"), f"and refuses a wrong password: {refused}")
        # The HEALTHCHECK as Docker runs it, on the port this relay got.
        admin_port = relay.admin.rsplit(":", 1)[1]
        script = probe[2].replace("127.0.0.1/9090", f"127.0.0.1/{admin_port}")
        healthy = subprocess.run(probe[:2] + [script], timeout=10).returncode
        check(healthy == 0, f"the HEALTHCHECK passes while ccrelay serves: exit {healthy}")
        code = relay.stop()
        check(code == 0, f"it stops cleanly on SIGTERM: exit {code}")
        unhealthy = subprocess.run(probe[:2] + [script], timeout=10, capture_output=True).returncode
        check(unhealthy != 0, f"the HEALTHCHECK fails once it is gone: exit {unhealthy}")
    with RunningRelay(binary, config_text, None, {"CCRELAY_USERNAME": "hq"}) as relay:
        code = relay.process.wait(timeout=30)
        message = "".join(relay.log) + relay.process.stderr.read()
        check(code == 78 and "CCRELAY_PASSWORD" in message,
              f"without the password variable it exits 78 naming it: exit {code}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chart", required=True)
    parser.add_argument("--ccrelay", required=True, help="the ccrelay binary to start")
    parser.add_argument("--hadolint", required=True, help="the hadolint binary")
    arguments = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    chart = helm_chart.Chart.load(arguments.chart)
    dashboard_text = open(os.path.join(arguments.chart, "dashboards", "ccrelay.json")).read()
    check_image(root, os.path.abspath(arguments.ccrelay), arguments.hadolint)
    check_defaults(chart, arguments.chart)
    documents = check_full(chart, arguments.chart, dashboard_text)
    check_schema(chart)
    check_metrics_documented(root, dashboard_text)
    start_from_rendered(os.path.abspath(arguments.ccrelay), documents)
    failed = len(FAILURES)
    print(f"deploy: {CHECKS - failed} passed, {failed} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
