#!/usr/bin/env python3
"""Checks what kubernetes-validate cannot: custom resources and Careline's own rules.

Usage: check_crds.py [--builtin-out FILE] [--source-root DIR] [--unrendered] MANIFEST...

Each MANIFEST is a multi-document YAML file (a rendered overlay, or a file of examples).
Every document is either a built-in Kubernetes kind, appended to --builtin-out for
kubernetes-validate, or a custom resource checked here; any other kind is an error, so nothing
goes unvalidated.

Custom resources (required fields, types, references):
  keda.sh/v1alpha1              ScaledObject, TriggerAuthentication
  rabbitmq.com/v1beta1          RabbitmqCluster
  postgresql.cnpg.io/v1         Cluster
  monitoring.coreos.com/v1      PrometheusRule, PodMonitor

Cross-references inside one file: a ScaledObject's target Deployment exists and leaves
`replicas` to the autoscaler; its TriggerAuthentication exists.

Careline workloads (Deployments and Jobs labelled app.kubernetes.io/part-of=careline):
hardened security context, requests and limits, every env var name one the code reads, secrets
from `careline-secrets` by known keys, and for the four services: MIGRATE_ON_START=false,
probes /healthz and /readyz on the admin port, ADMIN_LISTEN_ADDR agreeing with that port, the
facilities file at CARELINE_CONFIG, a grace period longer than the 30 s drain.

--unrendered: the manifests are raw base files, not kustomize output (no kubectl): generated
ConfigMaps and patches are missing, so the checks that need them are left out.

Exit status 1 with one line per problem; 0 when everything holds.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import yaml

BUILTIN_GROUPS = {
    "",  # core: v1
    "apps",
    "batch",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "autoscaling",
}

# The services, their admin ports (README.md, "Configuration") and public listen variables.
SERVICES = {
    "ingest": {"admin": 9080, "public": ("INGEST_LISTEN_ADDR", 8080)},
    "webhook-consumer": {"admin": 9081, "public": ("WEBHOOK_LISTEN_ADDR", 8081)},
    "scheduler": {"admin": 9082, "public": None},
    "sender": {"admin": 9083, "public": None},
}
SECRET_NAME = "careline-secrets"
SECRET_KEYS = {
    "DATABASE_URL",
    "AMQP_URL",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
}
CONFIG_PATH = "/etc/careline/careline.toml"
DRAIN_SECONDS = 30
# Read by libraries rather than by a literal in our code.
ENV_READ_BY_LIBRARIES = {"RUST_LOG", "SSL_CERT_DIR", "SSL_CERT_FILE"}


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked: dict[str, int] = {}

    def error(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def count(self, kind: str) -> None:
        self.checked[kind] = self.checked.get(kind, 0) + 1


def dig(obj, *path, default=None):
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and 0 <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def require(report: Report, where: str, obj, path: tuple, kind=None, nonempty=True):
    value = dig(obj, *path)
    name = ".".join(str(p) for p in path)
    if value is None:
        report.error(where, f"missing required field {name}")
        return None
    if kind is not None and not isinstance(value, kind):
        report.error(where, f"{name} must be {getattr(kind, '__name__', kind)}, not {type(value).__name__}")
        return None
    if nonempty and isinstance(value, (str, list, dict)) and not value:
        report.error(where, f"{name} must not be empty")
        return None
    return value


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- custom resources ------------------------------------------------------------------------


def check_scaled_object(report: Report, where: str, doc: dict) -> None:
    require(report, where, doc, ("spec", "scaleTargetRef", "name"), str)
    minimum = dig(doc, "spec", "minReplicaCount", default=0)
    maximum = dig(doc, "spec", "maxReplicaCount", default=100)
    if not is_int(minimum) or not is_int(maximum) or minimum < 0 or maximum < 1 or minimum > maximum:
        report.error(where, f"replica bounds must be integers with 0 <= min <= max, max >= 1 (min {minimum!r}, max {maximum!r})")
    kind = dig(doc, "spec", "scaleTargetRef", "kind", default="Deployment")
    if kind not in ("Deployment", "StatefulSet"):
        report.error(where, f"scaleTargetRef.kind {kind!r} is not a Deployment or StatefulSet")
    triggers = require(report, where, doc, ("spec", "triggers"), list)
    for i, trigger in enumerate(triggers or []):
        at = f"{where} trigger {i}"
        kind = require(report, at, trigger, ("type",), str)
        metadata = require(report, at, trigger, ("metadata",), dict)
        if kind != "rabbitmq" or metadata is None:
            continue
        require(report, at, metadata, ("queueName",), str)
        mode = metadata.get("mode")
        if mode not in ("QueueLength", "MessageRate"):
            report.error(at, f"metadata.mode must be QueueLength or MessageRate, not {mode!r}")
        value = metadata.get("value")
        if not isinstance(value, str) or not re.fullmatch(r"\d+(\.\d+)?", value) or float(value) <= 0:
            report.error(at, f"metadata.value must be a positive number as a string, not {value!r}")
        protocol = metadata.get("protocol", "auto")
        if protocol not in ("auto", "amqp", "http"):
            report.error(at, f"metadata.protocol {protocol!r} is not auto, amqp or http")
        if mode == "MessageRate" and protocol == "amqp":
            report.error(at, "MessageRate needs the HTTP management API (protocol http)")
        if not (metadata.get("host") or metadata.get("hostFromEnv") or dig(trigger, "authenticationRef", "name")):
            report.error(at, "no broker address: set host, hostFromEnv or authenticationRef")


def check_trigger_authentication(report: Report, where: str, doc: dict) -> None:
    refs = require(report, where, doc, ("spec", "secretTargetRef"), list)
    for i, ref in enumerate(refs or []):
        for field in ("parameter", "name", "key"):
            require(report, f"{where} secretTargetRef {i}", ref, (field,), str)


def check_rabbitmq_cluster(report: Report, where: str, doc: dict) -> None:
    replicas = require(report, where, doc, ("spec", "replicas"))
    if replicas is not None and (not is_int(replicas) or replicas < 3 or replicas % 2 == 0):
        report.error(where, f"spec.replicas must be an odd integer >= 3 for quorum queues, not {replicas!r}")
    plugins = dig(doc, "spec", "rabbitmq", "additionalPlugins", default=[])
    if not isinstance(plugins, list):
        report.error(where, "spec.rabbitmq.additionalPlugins must be a list")
    storage = dig(doc, "spec", "persistence", "storage")
    if storage is not None and not re.fullmatch(r"\d+(Ki|Mi|Gi|Ti)", str(storage)):
        report.error(where, f"spec.persistence.storage {storage!r} is not a quantity like 20Gi")


def check_cnpg_cluster(report: Report, where: str, doc: dict) -> None:
    instances = require(report, where, doc, ("spec", "instances"))
    if instances is not None and (not is_int(instances) or instances < 1):
        report.error(where, f"spec.instances must be a positive integer, not {instances!r}")
    size = require(report, where, doc, ("spec", "storage", "size"), str)
    if size is not None and not re.fullmatch(r"\d+(Ki|Mi|Gi|Ti)", size):
        report.error(where, f"spec.storage.size {size!r} is not a quantity like 20Gi")
    if dig(doc, "spec", "bootstrap", "initdb") is not None:
        require(report, where, doc, ("spec", "bootstrap", "initdb", "database"), str)
        require(report, where, doc, ("spec", "bootstrap", "initdb", "owner"), str)


DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def check_prometheus_rule(report: Report, where: str, doc: dict) -> None:
    groups = require(report, where, doc, ("spec", "groups"), list)
    names = set()
    for gi, group in enumerate(groups or []):
        at = f"{where} group {gi}"
        name = require(report, at, group, ("name",), str)
        if name in names:
            report.error(at, f"duplicate group name {name!r}")
        names.add(name)
        rules = require(report, at, group, ("rules",), list)
        for ri, rule in enumerate(rules or []):
            rat = f"{at} rule {ri} ({rule.get('alert') or rule.get('record')})"
            if bool(rule.get("alert")) == bool(rule.get("record")):
                report.error(rat, "exactly one of alert and record is required")
            require(report, rat, rule, ("expr",), str)
            duration = rule.get("for")
            if duration is not None and not DURATION.fullmatch(str(duration)):
                report.error(rat, f"`for: {duration}` is not a Prometheus duration")
            if rule.get("alert") and not dig(rule, "labels", "severity"):
                report.error(rat, "labels.severity is required on alerts")
            if rule.get("alert") and not dig(rule, "annotations", "summary"):
                report.error(rat, "annotations.summary is required on alerts")


def check_pod_monitor(report: Report, where: str, doc: dict) -> None:
    require(report, where, doc, ("spec", "selector"), dict)
    endpoints = require(report, where, doc, ("spec", "podMetricsEndpoints"), list)
    for i, endpoint in enumerate(endpoints or []):
        if not (endpoint.get("port") or endpoint.get("portNumber")):
            report.error(f"{where} podMetricsEndpoints {i}", "port or portNumber is required")


CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): check_trigger_authentication,
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): check_rabbitmq_cluster,
    ("postgresql.cnpg.io/v1", "Cluster"): check_cnpg_cluster,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
}


# ---- Careline workloads ----------------------------------------------------------------------


def env_names_in_code(source_root: pathlib.Path) -> set[str]:
    names = set()
    for path in source_root.glob("crates/*/src/**/*.rs"):
        names.update(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', path.read_text(encoding="utf-8")))
    return names


def check_container_hardening(report: Report, where: str, pod: dict, container: dict) -> None:
    sc = container.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        report.error(where, "runAsNonRoot must be true")
    if sc.get("readOnlyRootFilesystem") is not True:
        report.error(where, "readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        report.error(where, "allowPrivilegeEscalation must be false")
    if "ALL" not in (dig(sc, "capabilities", "drop") or []):
        report.error(where, "capabilities.drop must contain ALL")
    if (dig(sc, "seccompProfile", "type") or dig(psc, "seccompProfile", "type")) != "RuntimeDefault":
        report.error(where, "seccompProfile.type must be RuntimeDefault")
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if not dig(container, "resources", bound, resource):
                report.error(where, f"resources.{bound}.{resource} is required")


def listen_port(value: str | None) -> int | None:
    match = re.fullmatch(r".*:(\d+)", value or "")
    return int(match.group(1)) if match else None


def check_workload(report: Report, where: str, doc: dict, configmaps: dict, code_env: set[str], rendered: bool) -> None:
    pod = dig(doc, "spec", "template", "spec", default={})
    containers = pod.get("containers") or []
    if not containers:
        report.error(where, "no containers")
        return
    for container in containers:
        cwhere = f"{where} container {container.get('name')}"
        check_container_hardening(report, cwhere, pod, container)

        env: dict[str, str | None] = {}
        for ref in container.get("envFrom") or []:
            name = dig(ref, "configMapRef", "name")
            if name not in configmaps:
                if rendered:
                    report.error(cwhere, f"envFrom names ConfigMap {name!r}, which is not in the output")
                continue
            env.update({k: str(v) for k, v in (configmaps[name].get("data") or {}).items()})
        for item in container.get("env") or []:
            secret = dig(item, "valueFrom", "secretKeyRef")
            if secret:
                if secret.get("name") != SECRET_NAME or secret.get("key") not in SECRET_KEYS:
                    report.error(cwhere, f"{item['name']} reads secret {secret.get('name')}/{secret.get('key')}; expected {SECRET_NAME} with one of {sorted(SECRET_KEYS)}")
                env[item["name"]] = None
            else:
                env[item["name"]] = item.get("value")
        for name in env:
            if name not in code_env and name not in ENV_READ_BY_LIBRARIES:
                report.error(cwhere, f"env {name} is read by no Careline code (typo?)")

        command = container.get("command") or []
        binary = pathlib.PurePosixPath(command[0]).name if command else None
        if doc["kind"] == "Job":
            continue
        if binary not in SERVICES:
            continue
        service = SERVICES[binary]
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if ports.get("admin") != service["admin"]:
            report.error(cwhere, f"container port `admin` must be {service['admin']}, not {ports.get('admin')}")
        if listen_port(env.get("ADMIN_LISTEN_ADDR")) != service["admin"]:
            report.error(cwhere, f"ADMIN_LISTEN_ADDR {env.get('ADMIN_LISTEN_ADDR')!r} does not listen on {service['admin']}")
        if service["public"]:
            variable, port = service["public"]
            if listen_port(env.get(variable)) != port or ports.get("http") != port:
                report.error(cwhere, f"{variable} and container port `http` must both be {port}")
        if env.get("MIGRATE_ON_START") != "false":
            report.error(cwhere, "MIGRATE_ON_START must be \"false\": the careline-migrate Job migrates")
        # CARELINE_CONFIG comes from a generated ConfigMap, present in rendered output only.
        if rendered and env.get("CARELINE_CONFIG") != CONFIG_PATH:
            report.error(cwhere, f"CARELINE_CONFIG must be {CONFIG_PATH}")
        config_dir = str(pathlib.PurePosixPath(CONFIG_PATH).parent)
        if not any(m.get("mountPath") == config_dir for m in container.get("volumeMounts") or []):
            report.error(cwhere, f"nothing is mounted at {config_dir}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = dig(container, probe, "httpGet") or {}
            if get.get("path") != path or get.get("port") not in ("admin", service["admin"]):
                report.error(cwhere, f"{probe} must GET {path} on the admin port")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not is_int(grace) or grace <= DRAIN_SECONDS:
            report.error(cwhere, f"terminationGracePeriodSeconds {grace} must exceed the {DRAIN_SECONDS} s drain")


def check_file(report: Report, path: pathlib.Path, builtin: list, code_env: set[str], rendered: bool) -> None:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as e:
        report.error(str(path), f"not valid YAML: {e}")
        return
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            report.error(str(path), "a document without apiVersion and kind")
            continue
        by_kind.setdefault(doc["kind"], {})[dig(doc, "metadata", "name", default="?")] = doc

    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        api, kind = doc["apiVersion"], doc["kind"]
        where = f"{path.name}: {kind}/{dig(doc, 'metadata', 'name', default='?')}"
        if not dig(doc, "metadata", "name"):
            report.error(where, "metadata.name is required")
        group = api.split("/")[0] if "/" in api else ""
        if group in BUILTIN_GROUPS:
            builtin.append(doc)
            if kind in ("Deployment", "Job") and dig(doc, "metadata", "labels", "app.kubernetes.io/part-of") == "careline":
                check_workload(report, where, doc, by_kind.get("ConfigMap", {}), code_env, rendered)
                report.count(f"careline {kind}")
            continue
        checker = CUSTOM.get((api, kind))
        if checker is None:
            report.error(where, f"{api} {kind} is neither a built-in kind nor a custom resource this script knows")
            continue
        checker(report, where, doc)
        report.count(kind)

        if kind == "ScaledObject" and rendered:
            target = dig(doc, "spec", "scaleTargetRef", "name")
            deployments = by_kind.get("Deployment", {})
            if target not in deployments:
                report.error(where, f"scaleTargetRef names Deployment {target!r}, which is not in {path.name}")
            elif "replicas" in deployments[target].get("spec", {}):
                report.error(where, f"Deployment {target} sets spec.replicas; with an autoscaler every apply would reset it")
            for trigger in dig(doc, "spec", "triggers", default=[]) or []:
                auth = dig(trigger, "authenticationRef", "name")
                if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                    report.error(where, f"authenticationRef {auth!r} is not in {path.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", type=pathlib.Path)
    parser.add_argument("--builtin-out", type=pathlib.Path, help="write the built-in documents here")
    parser.add_argument("--source-root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent.parent)
    parser.add_argument("--unrendered", action="store_true", help="raw base files, not kustomize output")
    args = parser.parse_args()

    report = Report()
    builtin: list = []
    code_env = env_names_in_code(args.source_root)
    if not code_env:
        report.error(str(args.source_root), "found no env var names in crates/*/src: wrong --source-root?")
    for path in args.manifests:
        check_file(report, path, builtin, code_env, rendered=not args.unrendered)
    if args.builtin_out:
        args.builtin_out.write_text(yaml.safe_dump_all(builtin, sort_keys=False), encoding="utf-8")

    for problem in report.problems:
        print(f"check_crds: {problem}", file=sys.stderr)
    checked = ", ".join(f"{n} {k}" for k, n in sorted(report.checked.items()))
    print(f"check_crds: {len(builtin)} built-in documents for kubernetes-validate; checked here: {checked or 'nothing'}")
    if report.problems:
        print(f"check_crds: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
