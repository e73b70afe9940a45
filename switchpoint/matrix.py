"""`switchpoint matrix`: the Workload x Router x Pool matrix of a running router, from its /metrics.

Rows are workload classes, columns are decisions (the Router dimension) with the pool they
sent to; each cell counts routed requests and, when Reports arrived, their median TTFT
(estimated from the histogram buckets, as Prometheus's histogram_quantile does).
"""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

Cell = tuple[str, str, str]  # workload, decision, pool


def read_matrix(text: str) -> tuple[dict[Cell, float], dict[Cell, float]]:
    """(requests per cell, median TTFT in seconds per cell) from Prometheus text."""
    requests: dict[Cell, float] = defaultdict(float)
    buckets: dict[Cell, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            cell = (s.labels.get("workload", ""), s.labels.get("decision", ""), s.labels.get("pool", ""))
            if s.name == "switchpoint_route_requests_total":
                requests[cell] += s.value
            elif s.name == "switchpoint_request_ttft_seconds_bucket":
                buckets[cell].append((float(s.labels["le"]), s.value))
    return dict(requests), {cell: q for cell, b in buckets.items() if (q := _median(b)) is not None}


def _median(buckets: list[tuple[float, float]]) -> float | None:
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= total / 2:
            if le == float("inf"):
                return prev_le
            share = (total / 2 - prev_count) / (count - prev_count) if count > prev_count else 0
            return prev_le + (le - prev_le) * share
        prev_le, prev_count = le, count
    return None


def render(requests: dict[Cell, float], ttft: dict[Cell, float]) -> str:
    if not requests:
        return "no routed requests yet"
    columns = sorted({(d, p) for _, d, p in requests})
    rows = sorted({w for w, _, _ in requests})
    width = max(14, *(len(f"{d} -> {p}") for d, p in columns))
    corner = "workload / decision -> pool"
    lines = [f"{corner:<28}" + "".join(f"{d + ' -> ' + p:>{width + 2}}" for d, p in columns)]
    for w in rows:
        cells = []
        for d, p in columns:
            n = requests.get((w, d, p), 0)
            median = ttft.get((w, d, p))
            text = f"{n:.0f}" + (f" ({median * 1000:.0f} ms)" if median is not None else "") if n else "-"
            cells.append(f"{text:>{width + 2}}")
        lines.append(f"{w:<28}" + "".join(cells))
    total = sum(requests.values())
    lines.append(f"\n{total:.0f} requests; cells: routed requests (median TTFT from Reports)")
    return "\n".join(lines)


def run(metrics_url: str, as_json: bool) -> int:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    requests, ttft = read_matrix(text)
    if as_json:
        print(json.dumps([{"workload": w, "decision": d, "pool": p, "requests": n,
                           "ttft_p50_ms": round(ttft[(w, d, p)] * 1000, 1) if (w, d, p) in ttft else None}
                          for (w, d, p), n in sorted(requests.items())]))
    else:
        print(render(requests, ttft))
    return 0
