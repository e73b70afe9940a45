"""`switchpoint route`: explain one decision offline, with the router's own pipeline."""

from __future__ import annotations

from typing import Any

from switchpoint.router.decision import describe_rule
from switchpoint.router.pipeline import RouteResult


def explanation(result: RouteResult) -> dict[str, Any]:
    req = result.request
    sel = result.selection
    rules = {d.name: d for d in result.policy.decisions} if result.policy else {}
    return {
        "model": req.model,
        "policy": result.policy_name or None,
        "workload": result.workload.label,
        "tokens": {"prompt": req.prompt_tokens, "input": req.input_tokens, "context": req.context_tokens},
        "signals": [{"name": s.name, "kind": s.kind, "fired": s.fired, "evidence": s.evidence} for s in result.signals],
        "rules": [
            {"decision": name, "priority": rules[name].priority, "rule": describe_rule(rules[name].rule),
             "matched": matched}
            for name, matched in result.outcome.evaluated if rules[name].rule is not None
        ],
        "decision": result.outcome.decision.name,
        "reason": result.outcome.reason,
        "pool": sel.candidate.pool.name,
        "hardware_class": sel.candidate.pool.hardware_class,
        "upstream_model": sel.candidate.model,
        "replica": sel.placement.replica.address,
        "prefill_replica": sel.placement.prefill.address if sel.placement.prefill else None,
        "uncached_tokens": sel.placement.uncached_tokens,
        "scheduling": sel.candidate.scheduling.profile,
        "replica_scores": dict(sel.placement.scores),
        "fallbacks": [f"{f.candidate.pool.name} {f.replica.address}" for f in sel.fallbacks],
        "skipped": list(sel.skipped),
        "selection": _selection(result),
    }


def _selection(result: RouteResult) -> dict[str, Any] | None:
    """The selection algorithm's evidence: predicted quality and cost per candidate, neighbours, lambda."""
    if result.ranking is None:
        return None
    ev = result.ranking.evidence
    return {
        "algorithm": ev.algorithm,
        "lambda": ev.lam,
        "order": [{"pool": c.key, "model": c.model, "quality": c.quality, "cost_usd": c.cost, "score": c.score,
                   "known": c.known} for c in ev.candidates],
        "neighbours": [{"id": n.id, "similarity": round(n.similarity, 4)} for n in ev.neighbours[:5]],
        "explored": ev.explored,
        "notes": list(ev.notes),
    }


def render(info: dict[str, Any]) -> str:
    lines = [
        f"model      {info['model']}  (policy {info['policy'] or '-'})",
        f"workload   {info['workload']}   tokens: prompt {info['tokens']['prompt']}, "
        f"input {info['tokens']['input']}, context {info['tokens']['context']}",
        "signals",
    ]
    width = max((len(s["name"]) for s in info["signals"]), default=0)
    for s in info["signals"]:
        mark = "FIRED" if s["fired"] else "  -  "
        lines.append(f"  {mark}  {s['name']:<{width}}  {s['kind']:<13} {s['evidence']}")
    if info["rules"]:
        lines.append("rules (by priority)")
        for r in info["rules"]:
            lines.append(f"  {'MATCH' if r['matched'] else '  -  '}  {r['priority']:>7}  {r['decision']}: {r['rule']}")
    lines += [
        f"decision   {info['decision']}: {info['reason']}",
        f"pool       {info['pool']} ({info['hardware_class']}), upstream model {info['upstream_model']}",
        f"replica    {info['replica']}" + (f"   prefill {info['prefill_replica']}" if info["prefill_replica"] else "")
        + f"   ({info['scheduling']}; {info['uncached_tokens']} prompt tokens to prefill)",
    ]
    if info["fallbacks"]:
        lines.append(f"fallbacks  {', '.join(info['fallbacks'])}")
    for skipped in info["skipped"]:
        lines.append(f"skipped    {skipped}")
    sel = info["selection"]
    if sel:
        lam = f", lambda {sel['lambda']:g}" if sel["lambda"] is not None else ""
        lines.append(f"selection  {sel['algorithm']}{lam}" + (" (exploring)" if sel["explored"] else ""))
        for c in sel["order"]:
            quality = "-" if c["quality"] is None else f"{c['quality']:.3f}"
            lines.append(f"    {c['pool']:<20} quality {quality:>6}  cost ${c['cost_usd']:.6f}"
                         + ("" if c["known"] else "  (not in the dataset)"))
        if sel["neighbours"]:
            lines.append("    nearest: " + ", ".join(f"{n['id']} {n['similarity']:.3f}" for n in sel["neighbours"]))
        for note in sel["notes"]:
            lines.append(f"    note: {note}")
    return "\n".join(lines)
