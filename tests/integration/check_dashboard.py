#!/usr/bin/env python3
"""Keeps doc/grafana-dashboard.json and doc/metrics.md in step with the metrics calyx serves.

    check_dashboard.py DASHBOARD_JSON METRICS_CPP METRICS_MD

The metric families and label names are read from src/cp/metrics.cpp (the one place that
defines them), not from a copy of the list. Checked:
  - the dashboard is valid JSON, schemaVersion >= 36, queries go to the ${DS_PROMETHEUS}
    datasource variable;
  - every panel (except rows) has at least one target with a PromQL expression;
  - every calyx_* name in a query (targets and variable queries) is a served family, every
    label a query selects or groups by is one calyx or Prometheus attaches, every $variable is
    defined by the dashboard or built into Grafana;
  - every served family appears on the dashboard and in doc/metrics.md.
The integration test (metrics_test, EveryDashboardQueryReturnsSeries) runs the same queries on
a real Prometheus; this check needs nothing but python3, so it runs with the unit tests.
Exit status 0 when all hold; otherwise 1 and one line per problem.
"""
import json
import re
import sys

GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
TARGET_LABELS = {"instance", "job"}  # what Prometheus attaches to every scraped series
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))  # a collapsed row holds its panels


def labels_used(expr):
    """Label names in matchers ({port=~"..."}) and in by/without/on/ignoring clauses."""
    names = set()
    for selector in re.findall(r"\{([^}]*)\}", expr):
        # A matcher is NAME OP "VALUE"; the values may contain anything but a quote.
        names.update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"', selector))
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in clause.split(",") if n.strip())
    return names


def main(dashboard_path, metrics_cpp_path, metrics_md_path):
    problems = []
    try:
        with open(metrics_cpp_path, encoding="utf-8") as f:
            source = f.read()
        with open(metrics_md_path, encoding="utf-8") as f:
            doc = f.read()
    except OSError as e:
        print(e)
        return 1
    families = set(re.findall(r'family\(\s*"(calyx_[a-z0-9_]+)"', source))
    # Label keys as metrics.cpp writes them: {"port", p.name}, {{"result", "sent"}}, ...
    labels = set(re.findall(r'\{\s*"([a-z_]+)"\s*,', source)) | TARGET_LABELS
    if len(families) < 20:  # the parse itself must not silently find nothing
        problems.append(f"{metrics_cpp_path}: found only {len(families)} metric families: "
                        f"{sorted(families)} (did the family(...) calls change shape?)")

    try:
        with open(dashboard_path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{dashboard_path}: not valid JSON: {e}")
        return 1

    if dashboard.get("schemaVersion", 0) < 36:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} < 36")
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    if "DS_PROMETHEUS" not in variables:
        problems.append("no datasource variable DS_PROMETHEUS")

    queries = []  # (where, expr)
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query":
            queries.append((f"variable ${v.get('name')}", q.get("query") if isinstance(q, dict) else q))
    for p in walk_panels(dashboard.get("panels", [])):
        if p.get("type") == "row":
            continue
        where = f"panel {p.get('title')!r}"
        targets = [t for t in p.get("targets", []) if t.get("expr", "").strip()]
        if not targets:
            problems.append(f"{where}: no query")
        for t in p.get("targets", []):
            ds = t.get("datasource", p.get("datasource", {}))
            if not isinstance(ds, dict) or ds.get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"{where}: datasource {ds!r} is not ${{DS_PROMETHEUS}}")
        queries += [(where, t["expr"]) for t in targets]

    used = set()
    for where, expr in queries:
        for name in re.findall(r"\bcalyx_[A-Za-z0-9_]+", expr):
            used.add(name)
            if name not in families:
                problems.append(f"{where}: {name} is not a metric calyx serves: {expr}")
        for label in labels_used(expr) - labels - PROMQL_WORDS:
            problems.append(f"{where}: label {label!r} is on no calyx series: {expr}")
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
            if var not in variables and var not in GRAFANA_BUILTINS:
                problems.append(f"{where}: undefined variable ${var}: {expr}")

    for name in sorted(families - used):
        problems.append(f"{name} is served but on no dashboard panel")
    for name in sorted(families):
        if f"`{name}`" not in doc and f"`{name}{{" not in doc:
            problems.append(f"{metrics_md_path}: {name} is not documented")

    for p in problems:
        print(p)
    print(f"{len(queries)} queries, {len(used & families)} of {len(families)} metric families used: "
          + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
