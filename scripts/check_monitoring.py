#!/usr/bin/env python3
"""Lints the Grafana dashboard and checks the metric names of the dashboard and the alert rules.

Usage: check_monitoring.py [--dashboard FILE] [--rules FILE] [--source-root DIR]

Dashboard: valid JSON with a title, a uid and a non-empty `panels` list; every panel (rows may
nest panels) has a `type`, a `title` and `targets`, each target a non-empty PromQL `expr` with
balanced brackets; every `$variable` an expression uses is defined in `templating`.

Metric names: every careline_* name in the dashboard's and the rules' expressions is either
emitted by the code (a `counter!`, `gauge!` or `histogram!` in crates/*/src; histograms also as
_bucket/_sum/_count) or listed in the rules file's comment block of metrics not emitted yet.
A listed name that the code now emits is reported, so the list stays true.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import yaml

GRAFANA_BUILTINS = {"__range", "__interval", "__rate_interval", "__range_s", "__interval_ms", "__name", "__all"}
METRIC = re.compile(r"\b(careline_[a-z0-9_]+)\b")
EMITTED = re.compile(r"\b(counter|gauge|histogram)!\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"", re.S)
PENDING_HEADER = "the code does not emit yet"
PENDING_ITEM = re.compile(r"^#\s+-\s+(careline_[a-z0-9_]+)")


def emitted_metrics(source_root: pathlib.Path) -> dict[str, str]:
    metrics = {}
    for path in source_root.glob("crates/*/src/**/*.rs"):
        for kind, name in EMITTED.findall(path.read_text(encoding="utf-8")):
            metrics[name] = kind
    return metrics


def pending_metrics(rules_text: str) -> set[str]:
    pending, inside = set(), False
    for line in rules_text.splitlines():
        if PENDING_HEADER in line:
            inside = True
            continue
        if inside:
            match = PENDING_ITEM.match(line)
            if match:
                pending.add(match.group(1))
            elif not line.startswith("#"):
                break
    return pending


def balanced(expr: str) -> bool:
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], None
    escaped = False
    for ch in expr:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and quote is None


def lint_dashboard(path: pathlib.Path, problems: list[str]) -> list[str]:
    """Returns every expression in the dashboard."""
    try:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        problems.append(f"{path}: not valid JSON: {e}")
        return []
    for field in ("title", "uid"):
        if not isinstance(dashboard.get(field), str) or not dashboard[field]:
            problems.append(f"{path}: `{field}` is required")
    variables = {v.get("name") for v in (dashboard.get("templating") or {}).get("list", []) if isinstance(v, dict)}
    panels = dashboard.get("panels")
    if not isinstance(panels, list) or not panels:
        problems.append(f"{path}: `panels` must be a non-empty list")
        return []

    exprs: list[str] = []
    ids: set = set()

    def visit(panel, where: str) -> None:
        if not isinstance(panel, dict):
            problems.append(f"{where}: a panel must be an object")
            return
        title = panel.get("title")
        where = f"{where} ({title!r})"
        for field in ("type", "title"):
            if not isinstance(panel.get(field), str) or not panel[field]:
                problems.append(f"{where}: `{field}` is required")
        if panel.get("id") in ids:
            problems.append(f"{where}: duplicate panel id {panel.get('id')}")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            for i, child in enumerate(panel.get("panels") or []):
                visit(child, f"{where} > panel {i}")
            return
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{where}: `targets` must be a non-empty list")
            return
        for i, target in enumerate(targets):
            expr = target.get("expr") if isinstance(target, dict) else None
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where} target {i}: `expr` is required")
                continue
            if not balanced(expr):
                problems.append(f"{where} target {i}: unbalanced brackets or quotes in {expr!r}")
            for name in re.findall(r"\$\{?(\w+)", expr):
                if name not in variables and name not in GRAFANA_BUILTINS:
                    problems.append(f"{where} target {i}: ${name} is not a dashboard variable")
            exprs.append(expr)

    for i, panel in enumerate(panels):
        visit(panel, f"{path.name} panel {i}")
    return exprs


def rule_exprs(path: pathlib.Path, problems: list[str]) -> list[str]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path}: not valid YAML: {e}")
        return []
    exprs = []
    for doc in docs:
        groups = (doc.get("spec") or {}).get("groups") if doc.get("kind") == "PrometheusRule" else doc.get("groups")
        for group in groups or []:
            for rule in group.get("rules") or []:
                expr = rule.get("expr")
                if isinstance(expr, str):
                    if not balanced(expr):
                        problems.append(f"{path.name} {rule.get('alert') or rule.get('record')}: unbalanced brackets or quotes")
                    exprs.append(expr)
    if not exprs:
        problems.append(f"{path}: no rule expressions found")
    return exprs


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", type=pathlib.Path, default=root / "deploy/monitoring/grafana-dashboard.json")
    parser.add_argument("--rules", type=pathlib.Path, default=root / "deploy/monitoring/prometheus-rules.yaml")
    parser.add_argument("--source-root", type=pathlib.Path, default=root)
    args = parser.parse_args()

    problems: list[str] = []
    notes: list[str] = []
    dashboard_exprs = lint_dashboard(args.dashboard, problems)
    rules = rule_exprs(args.rules, problems)

    emitted = emitted_metrics(args.source_root)
    if not emitted:
        problems.append(f"{args.source_root}: found no metrics in crates/*/src: wrong --source-root?")
    known = set(emitted)
    for name, kind in emitted.items():
        if kind == "histogram":
            known.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    pending = pending_metrics(args.rules.read_text(encoding="utf-8")) if args.rules.exists() else set()

    used: set[str] = set()
    for source, exprs in (("dashboard", dashboard_exprs), ("rules", rules)):
        for expr in exprs:
            for name in METRIC.findall(expr):
                used.add(name)
                if name not in known and name not in pending:
                    problems.append(f"{source}: {name} is neither emitted by crates/*/src nor listed as not emitted yet in {args.rules.name}")
    for name in sorted(pending & known):
        notes.append(f"{name} is emitted now: remove it from the not-emitted-yet list in {args.rules.name}")
    for name in sorted(pending - used):
        notes.append(f"{name} is listed as not emitted yet but nothing uses it")

    for note in notes:
        print(f"check_monitoring: note: {note}")
    for problem in dict.fromkeys(problems):  # once each, in order
        print(f"check_monitoring: {problem}", file=sys.stderr)
    print(
        f"check_monitoring: {len(dashboard_exprs)} dashboard and {len(rules)} rule expressions; "
        f"{len(used & known)} metrics emitted by the code, {len(used & pending)} not emitted yet: "
        f"{', '.join(sorted(used & pending)) or 'none'}"
    )
    if problems:
        print(f"check_monitoring: {len(dict.fromkeys(problems))} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
