"""`switchpoint route`: explain one decision offline, with the router's own pipeline."""

from __future__ import annotations

from typing import Any

from switchpoint.router.decision import describe_rule
from switchpoint.router.pipeline import RouteResult
from switchpoint.router.selection import Selection


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
        "objective": objective_evidence(result.selection),
    }


def objective_evidence(sel: Selection) -> dict[str, Any] | None:
    """The joint decision's evidence: the objective, and each candidate's predicted TTFT and verdict."""
    objective = sel.objective
    if objective is None:
        return None
    target = objective.ttft_ms
    chosen = sel.candidate.pool.name
    return {
        "ttft_ms": target, "tpot_ms": objective.tpot_ms, "max_quality_loss": objective.max_quality_loss,
        "spilled": sel.spilled,
        "candidates": [
            {"pool": p.pool, "replica": p.replica, "predicted_ttft_ms": round(p.prediction.ttft_ms, 1),
             "queue_ms": round(p.prediction.queue_s * 1e3, 1), "prefill_ms": round(p.prediction.prefill_s * 1e3, 1),
             "steps_ms": round(p.prediction.steps_s * 1e3, 1),
             "transfer_ms": round(p.prediction.transfer_s * 1e3, 1), "saturated": p.prediction.saturated,
             "quality": p.quality,
             "verdict": "chosen" if p.pool == chosen else
             ("passed over: would miss" if target is not None and p.prediction.misses(target / 1000)
              # predicted, not chosen, and within the objective: only an early spill passes such a pool over
              else "passed over: its quality lead does not pay for its prefill in the headroom left")}
            for p in sel.predicted
        ],
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
    objective = info["objective"]
    if objective:
        stated = [f"{k} {objective[k]:g}" for k in ("ttft_ms", "tpot_ms", "max_quality_loss")
                  if objective[k] is not None]
        lines.append("objective  " + ", ".join(stated) + ("   (spilled)" if objective["spilled"] else ""))
        for c in objective["candidates"]:
            lines.append(f"    {c['pool']:<20} predicted TTFT {c['predicted_ttft_ms']:>8.0f} ms  (queue "
                         f"{c['queue_ms']:.0f}, prefill {c['prefill_ms']:.0f}, steps {c['steps_ms']:.0f}, transfer "
                         f"{c['transfer_ms']:.0f}{', KV saturated' if c['saturated'] else ''})  {c['verdict']}")
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
