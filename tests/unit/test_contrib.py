"""contrib/: the Prometheus alert rules and the Grafana dashboard name only what we export."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from biaswatch.catalog.tallies import Tallies
from biaswatch.service.metrics import Live, Metrics

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "biaswatch-alerts.yml"
DASHBOARD = CONTRIB / "grafana-biaswatch.json"
# node_exporter's textfile collector's own metric: when it last read our file.
NODE_EXPORTER = {"node_textfile_mtime_seconds"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset"}


def exported() -> set[str]:
    """Every sample name the service writes, with one row of each kind in the catalog."""
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    tallies = Tallies(
        frames=(("cryo", "valid", 1),),
        sets=(("cryo", "failed", 1), ("cryo", "closed", 1)),
        masters=(("cryo", "rejected", 1),),
        last_accepted=(("cryo", now),),
        latencies=(("cryo", 1.0),),
        combines=(("cryo", 1.0),),
    )
    metrics = Metrics(None, "127.0.0.1:1", 15.0, lambda: now)
    metrics.alarm("no_master", camera="cryo")
    metrics.note(Live(("cryo",), frozenset(), frozenset()))
    metrics.write(tallies)
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels left out)."""
    bare = re.sub(r'"(\\.|[^"\\])*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", bare))
    return names - PROMQL_WORDS


def rules() -> list[dict[str, Any]]:
    """The alert rules of contrib/biaswatch-alerts.yml."""
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_metric_names_of_promql() -> None:
    """metric_names finds the metrics of an expression, not its functions, labels or words."""
    expr = 'histogram_quantile(0.95, sum by (camera, le) (rate(a_bucket{x="y(z)"}[1d]))) > b'
    assert metric_names(expr) == {"a_bucket", "b"}


def test_alert_rules_parse_and_are_described() -> None:
    """Each alert rule has a unique name, an expression, a severity and a summary."""
    loaded = rules()
    names = [rule["alert"] for rule in loaded]
    assert len(names) == len(set(names))
    assert {"BiaswatchNoAcceptedMaster", "BiaswatchCameraStalled", "BiaswatchCombineFailed"} <= set(
        names
    )
    for rule in loaded:
        assert rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]


def test_alert_rules_name_only_exported_metrics() -> None:
    """Every metric an alert rule reads is one the service exports (or node_exporter's)."""
    known = exported() | NODE_EXPORTER
    for rule in rules():
        assert metric_names(str(rule["expr"])) <= known, rule["alert"]


def test_dashboard_names_only_exported_metrics() -> None:
    """The Grafana dashboard parses, its panel ids are unique, and it reads only our metrics."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    known = exported()
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    titles = " ".join(p["title"] for p in panels)
    assert "latency" in titles and "verdict" in titles and "last accepted master" in titles
    for expr in exprs:
        assert metric_names(expr) - {"label_values", "camera"} <= known, expr
