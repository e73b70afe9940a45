"""`switchpoint classifier train|eval`: train a head from labelled JSONL, or measure one on labelled JSONL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from switchpoint.ml.data import DataError, read_jsonl, split_heldout


def add_parser(sub: argparse._SubParsersAction, models_arg) -> None:
    """Register `classifier train` and `classifier eval` under ``sub`` (the top-level subcommands)."""
    p = sub.add_parser("classifier", help="train or evaluate an ONNX classifier head",
                       description="Train a classifier head on sentence embeddings, or evaluate one")
    cls = p.add_subparsers(dest="classifier", required=True)

    t = cls.add_parser("train", help="train a head from JSONL rows {text, label}; writes head.onnx + head.json",
                       description="Train a head: a fixed hash split holds out --holdout of the rows, the rest "
                                   "trains a logistic-regression head (L2 chosen on a validation part of the "
                                   "training rows), and the held-out metrics go into head.json")
    t.add_argument("--data", type=Path, required=True, metavar="FILE.jsonl")
    t.add_argument("--out", type=Path, required=True, metavar="DIR", help="head directory to write")
    t.add_argument("--encoder", default="minilm-static", help="encoder name or directory (default: minilm-static)")
    t.add_argument("--name", default=None, help="head name (default: the --out directory's name)")
    t.add_argument("--holdout", type=float, default=0.2, help="share of rows held out for the metrics (0.2)")
    t.add_argument("--seed", type=int, default=0, help="salt of the hash split (0)")
    t.add_argument("--positive", default=None,
                   help="binary heads (two labels): the positive label (default: the last in sorted order)")
    t.add_argument("--threshold", default="0.5",
                   help="binary heads: the positive label's threshold, or 'f1' to pick the best-F1 threshold on "
                        "the validation part (0.5)")
    t.add_argument("--class-weight", choices=["balanced", "none"], default="balanced")
    t.add_argument("--skip-bad", action="store_true", help="leave bad rows out (each is still reported)")
    t.add_argument("--json", action="store_true", help="print the manifest as JSON")
    models_arg(t)
    t.set_defaults(run=run_train)

    e = cls.add_parser("eval", help="accuracy, macro-F1 and confusion matrix of a head on labelled JSONL",
                       description="Evaluate a head on JSONL rows {\"text\", \"label\"}: by default the rows the "
                                   "head's own split rule holds out (so its training file can be passed); "
                                   "--all-rows uses every row (an independent test file)")
    e.add_argument("--head", required=True, help="head directory, file:// or https:// URL, or builtin:<name>")
    e.add_argument("--data", type=Path, required=True, metavar="FILE.jsonl")
    e.add_argument("--all-rows", action="store_true", help="evaluate on every row, not only the held-out split")
    e.add_argument("--skip-bad", action="store_true", help="leave bad rows out (each is still reported)")
    e.add_argument("--json", action="store_true")
    models_arg(e)
    e.set_defaults(run=run_eval)


def _read(path: Path, skip_bad: bool):
    try:
        rows = read_jsonl(path, skip_bad=skip_bad)
    except DataError as exc:
        print(f"switchpoint: {path}: {len(exc.problems)} bad row(s) (fix them, or pass --skip-bad):", file=sys.stderr)
        for line, cause in exc.problems:
            print(f"  line {line}: {cause}", file=sys.stderr)
        return None
    for line, cause in rows.skipped:
        print(f"switchpoint: {path}: skipped line {line}: {cause}", file=sys.stderr)
    return rows


def run_train(args: argparse.Namespace) -> int:
    from switchpoint.ml.train import TrainOptions, train_head
    from switchpoint.router.classifiers.encoder import EncoderError, load_encoder

    rows = _read(args.data, args.skip_bad)
    if rows is None:
        return 2
    try:
        encoder = load_encoder(args.encoder, args.models)
    except EncoderError as exc:
        print(f"switchpoint: {exc}", file=sys.stderr)
        return 2
    threshold: float | str = args.threshold if args.threshold == "f1" else float(args.threshold)
    opts = TrainOptions(name=args.name or args.out.resolve().name, holdout=args.holdout, seed=args.seed,
                        positive=args.positive, threshold=threshold, weighting=args.class_weight,
                        description=f"{args.data} ({len(rows)} rows" +
                                    (f", {len(rows.skipped)} bad rows skipped)" if rows.skipped else ")"))
    try:
        trained = train_head(rows.texts, rows.labels, encoder, opts, args.out)
    except ValueError as exc:
        print(f"switchpoint: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(trained.manifest, indent=2))
        return 0
    m = trained.manifest["metrics"]["heldout"]
    tr = trained.manifest["training"]
    print(f"head '{opts.name}' ({trained.manifest['kind']}, {len(trained.labels)} labels) on {encoder.name}: "
          f"{tr['train_rows']} training rows, {tr['heldout_rows']} held out")
    _print_metrics(trained.labels, m)
    print(f"wrote {args.out / 'head.onnx'} and {args.out / 'head.json'}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from switchpoint.ml.metrics import report
    from switchpoint.ml.train import encode_all
    from switchpoint.router.classifiers.encoder import EncoderError, load_encoder
    from switchpoint.router.classifiers.head import HeadError, load_head

    try:
        head = load_head(args.head, args.models)
        encoder = load_encoder(head.encoder, args.models)
    except (HeadError, EncoderError) as exc:
        print(f"switchpoint: {exc}", file=sys.stderr)
        return 2
    rows = _read(args.data, args.skip_bad)
    if rows is None:
        return 2
    unknown = sorted(set(rows.labels) - set(head.labels))
    if unknown:
        print(f"switchpoint: {args.data}: label(s) {', '.join(unknown)} are not among the head's labels "
              f"({', '.join(head.labels)})", file=sys.stderr)
        return 2
    texts, labels = rows.texts, rows.labels
    scope = "all rows"
    training = head.manifest.get("training", {})
    if not args.all_rows and "holdout" in training:
        held = split_heldout(texts, float(training["holdout"]), int(training.get("seed", 0)))
        texts = tuple(t for t, h in zip(texts, held, strict=True) if h)
        labels = tuple(lab for lab, h in zip(labels, held, strict=True) if h)
        scope = f"held-out rows (holdout {training['holdout']}, seed {training.get('seed', 0)})"
    if not texts:
        print("switchpoint: no rows to evaluate", file=sys.stderr)
        return 2
    probs = head.predict(encode_all(encoder, texts))
    index = {lab: i for i, lab in enumerate(head.labels)}
    y = np.array([index[lab] for lab in labels])
    if head.kind == "binary":
        threshold = head.thresholds.get(head.labels[1], 0.5)
        m = report(head.labels, y, (probs[:, 1] >= threshold).astype(np.int64), positive_score=probs[:, 1])
        m["threshold"] = threshold
    else:
        m = report(head.labels, y, probs.argmax(axis=1))
    m["scope"] = scope
    m["head"] = head.name
    m["encoder"] = encoder.name
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"head '{head.name}' on {encoder.name}, {m['rows']} {scope}")
    _print_metrics(head.labels, m)
    return 0


def _print_metrics(labels: tuple[str, ...], m: dict) -> None:
    from switchpoint.ml.metrics import confusion_table

    line = (f"accuracy {m['accuracy']:.4f}   macro-F1 {m['macro_f1']:.4f}   "
            f"(majority label '{m['majority_label']}' alone: accuracy {m['majority_accuracy']:.4f})")
    if "precision" in m:
        line += f"\n{labels[1]}: precision {m['precision']:.4f}  recall {m['recall']:.4f}  ROC AUC {m.get('roc_auc')}"
    print(line)
    print(confusion_table(labels, m["confusion"]))
