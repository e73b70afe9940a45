"""Classifier heads: training on real embeddings, ONNX export, manifest, load-time validation, CLI train/eval."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from switchpoint.cli import main
from switchpoint.ml import linear, mlp
from switchpoint.ml.data import DataError, read_jsonl, rows_digest, split_heldout
from switchpoint.ml.train import TrainOptions, encode_all, train_on_embeddings
from switchpoint.router.classifiers import models_dir
from switchpoint.router.classifiers.head import HeadError, load_head

ROOT = Path(__file__).resolve().parents[1]
MMLU = ROOT / "data" / "routing" / "routellm_mmlu.jsonl"


@pytest.fixture(scope="module")
def encoder():
    """The default encoder, as `switchpoint models build` installs it (CI builds the models first)."""
    from switchpoint.router.classifiers.encoder import EncoderError, load_encoder

    try:
        return load_encoder("minilm-static")
    except EncoderError as exc:  # make test builds the models first; a missing encoder is a failure, not a skip
        raise AssertionError(f"the default encoder is not built ({exc}): run `make models`") from exc


def _subject_rows(per_subject: int = 90) -> tuple[list[str], list[str]]:
    """A small real subset: the first rows of four MMLU subjects, labelled by subject."""
    wanted = {"mmlu/high_school_mathematics": "math", "mmlu/professional_law": "law",
              "mmlu/high_school_us_history": "history", "mmlu/college_medicine": "health"}
    texts, labels, seen = [], [], dict.fromkeys(wanted, 0)
    for line in MMLU.open(encoding="utf-8"):
        row = json.loads(line)
        if row["task"] in wanted and seen[row["task"]] < per_subject:
            seen[row["task"]] += 1
            texts.append(row["prompt"])
            labels.append(wanted[row["task"]])
    return texts, labels


def _synthetic(n: int = 400, dim: int = 8, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, dim)) + 2.0 * np.eye(k, dim)[y]
    texts = [f"row {i}" for i in range(n)]
    return x.astype(np.float32), texts, [f"c{v}" for v in y]


def _models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    return models


# --- training on a real subset --------------------------------------------------------------------------------


def test_head_trained_on_real_embeddings_beats_the_majority_and_round_trips(encoder, tmp_path: Path) -> None:
    texts, labels = _subject_rows()
    x = encode_all(encoder, texts)
    trained = train_on_embeddings(x, texts, labels, TrainOptions(name="subjects"), encoder.name)
    m = trained.manifest["metrics"]["heldout"]
    assert m["rows"] == trained.manifest["training"]["heldout_rows"] > 40
    assert m["accuracy"] > m["majority_accuracy"] + 0.3, m
    out = trained.write(tmp_path / "subjects")
    head = load_head(str(out))
    assert head.labels == ("health", "history", "law", "math") and head.kind == "multiclass"
    assert head.encoder == encoder.name and head.dim == encoder.dim
    onnx_probs = head.predict(x)
    assert onnx_probs.shape == (len(texts), 4)
    np.testing.assert_allclose(onnx_probs, trained.head.predict_proba(x), atol=1e-5)
    np.testing.assert_allclose(onnx_probs.sum(axis=1), 1.0, atol=1e-5)
    # A single vector is one row; a prompt about a statute is law.
    one = head.predict(encoder.encode_one("Is the contract void under the statute of frauds if it was oral?"))
    assert head.labels[int(np.argmax(one[0]))] == "law"


def test_binary_head_round_trip_and_threshold(tmp_path: Path) -> None:
    x, texts, labels = _synthetic(k=2)
    trained = train_on_embeddings(x, texts, labels, TrainOptions(name="bin", threshold="f1"), "minilm-static")
    assert trained.labels == ("c0", "c1") and trained.manifest["kind"] == "binary"
    assert set(trained.manifest["thresholds"]) == {"c1"} and 0.0 < trained.manifest["thresholds"]["c1"] < 1.0
    head = load_head(str(trained.write(tmp_path / "bin")), _models(tmp_path))
    probs = head.predict(x)
    assert probs.shape == (len(x), 2)
    np.testing.assert_allclose(probs, trained.head.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    m = trained.manifest["metrics"]["heldout"]
    assert {"precision", "recall", "roc_auc"} <= set(m) and m["roc_auc"] > 0.9


def test_positive_label_and_fixed_label_order(tmp_path: Path) -> None:
    x, texts, labels = _synthetic(k=2)
    trained = train_on_embeddings(x, texts, labels, TrainOptions(name="b", positive="c0"), "minilm-static")
    assert trained.labels == ("c1", "c0")
    with pytest.raises(ValueError, match="not one of"):
        train_on_embeddings(x, texts, labels, TrainOptions(name="b", positive="zz"), "minilm-static")
    x3, t3, l3 = _synthetic(k=3)
    with pytest.raises(ValueError, match="two labels"):
        train_on_embeddings(x3, t3, l3, TrainOptions(name="b", kind="binary"), "minilm-static")


def test_training_is_deterministic() -> None:
    x, texts, labels = _synthetic()
    a = train_on_embeddings(x, texts, labels, TrainOptions(name="a"), "minilm-static")
    b = train_on_embeddings(x, texts, labels, TrainOptions(name="a"), "minilm-static")
    np.testing.assert_array_equal(a.head.weights, b.head.weights)
    assert a.manifest == b.manifest


def test_manifest_contents(tmp_path: Path) -> None:
    x, texts, labels = _synthetic()
    trained = train_on_embeddings(x, texts, labels, TrainOptions(name="syn", holdout=0.25, seed=3), "minilm-static")
    trained.write(tmp_path / "syn")
    m = json.loads((tmp_path / "syn" / "head.json").read_text())
    assert m["name"] == "syn" and m["kind"] == "multiclass" and m["labels"] == ["c0", "c1", "c2"]
    assert m["encoder"] == "minilm-static" and m["dim"] == 8
    assert m["thresholds"] == {"c0": 0.0, "c1": 0.0, "c2": 0.0}
    t = m["training"]
    assert t["data_sha256"] == rows_digest(texts, labels) and len(t["data_sha256"]) == 64
    held = split_heldout(texts, 0.25, 3)
    assert t["rows"] == 400 and t["heldout_rows"] == sum(held) and t["train_rows"] == 400 - sum(held)
    assert t["holdout"] == 0.25 and t["seed"] == 3 and "sha256" in t["split"]
    assert set(m["metrics"]["heldout"]) >= {"accuracy", "macro_f1", "confusion", "per_label", "majority_accuracy"}
    assert m["model"]["l2"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0) and m["model"]["selection"]
    assert m["created_by"].startswith("switchpoint ")


def test_split_is_by_text_hash() -> None:
    texts = [f"prompt {i}" for i in range(2000)]
    held = split_heldout(texts, 0.2, 0)
    assert 0.17 < sum(held) / len(held) < 0.23
    assert split_heldout(list(reversed(texts)), 0.2, 0) == list(reversed(held))  # order does not matter
    assert split_heldout(["same", "same"], 0.5, 0)[0] == split_heldout(["same"], 0.5, 0)[0]
    assert split_heldout(texts, 0.2, 1) != held


# --- load-time validation --------------------------------------------------------------------------------------


@pytest.fixture()
def good_head(tmp_path: Path) -> Path:
    x, texts, labels = _synthetic()
    return train_on_embeddings(x, texts, labels, TrainOptions(name="syn"), "minilm-static").write(tmp_path / "h")


def _edit_manifest(head: Path, **changes) -> None:
    m = json.loads((head / "head.json").read_text())
    m.update(changes)
    (head / "head.json").write_text(json.dumps(m))


def test_missing_and_corrupt_files(good_head: Path, tmp_path: Path) -> None:
    models = _models(tmp_path)
    (good_head / "head.onnx").write_bytes(b"\x08\x07 this is not a protobuf graph")
    with pytest.raises(HeadError, match=r"head\.onnx: not a loadable ONNX model"):
        load_head(str(good_head), models)
    (good_head / "head.onnx").unlink()
    with pytest.raises(HeadError, match=r"head\.onnx: missing"):
        load_head(str(good_head), models)
    (good_head / "head.json").write_text("{not json")
    with pytest.raises(HeadError, match=r"head\.json: not a readable JSON manifest"):
        load_head(str(good_head), models)
    (good_head / "head.json").unlink()
    with pytest.raises(HeadError, match=r"head\.json: missing"):
        load_head(str(good_head), models)
    with pytest.raises(HeadError, match="no such head directory"):
        load_head(str(tmp_path / "nowhere"), models)


def test_label_count_must_match_the_outputs(good_head: Path, tmp_path: Path) -> None:
    _edit_manifest(good_head, labels=["c0", "c1"], thresholds={})
    with pytest.raises(HeadError, match=r"head\.onnx: outputs 3 values per row but the manifest lists 2 labels"):
        load_head(str(good_head), _models(tmp_path))


def test_unknown_encoder_and_bad_fields(good_head: Path, tmp_path: Path) -> None:
    models = _models(tmp_path)
    _edit_manifest(good_head, encoder="bert-gigantic")
    with pytest.raises(HeadError, match="encoder 'bert-gigantic' is unknown"):
        load_head(str(good_head), models)
    _edit_manifest(good_head, encoder="minilm-static", kind="regression")
    with pytest.raises(HeadError, match="kind must be multiclass or binary"):
        load_head(str(good_head), models)
    _edit_manifest(good_head, kind="multiclass", thresholds={"nope": 0.5})
    with pytest.raises(HeadError, match="thresholds"):
        load_head(str(good_head), models)
    m = json.loads((good_head / "head.json").read_text())
    del m["labels"]
    (good_head / "head.json").write_text(json.dumps(m))
    with pytest.raises(HeadError, match="manifest has no 'labels'"):
        load_head(str(good_head), models)


def test_dimension_must_match_the_encoder(good_head: Path, tmp_path: Path) -> None:
    models = _models(tmp_path)
    (models / "minilm-static").mkdir()
    (models / "minilm-static" / "encoder.json").write_text(json.dumps({"name": "minilm-static", "dim": 256}))
    with pytest.raises(HeadError, match="takes 8-dimensional embeddings but encoder 'minilm-static' produces 256"):
        load_head(str(good_head), models)
    _edit_manifest(good_head, dim=16)
    with pytest.raises(HeadError, match="takes 8-dimensional embeddings but the manifest says 16"):
        load_head(str(good_head), _models(tmp_path / "other"))


def test_predict_checks_the_input_shape(good_head: Path, tmp_path: Path) -> None:
    head = load_head(str(good_head), _models(tmp_path))
    with pytest.raises(HeadError, match=r"expected \(n, 8\)"):
        head.predict(np.zeros((2, 5), np.float32))
    assert head.predict(np.zeros((0, 8), np.float32)).shape == (0, 3)


# --- sources: builtin, file:// and http(s) ----------------------------------------------------------------------


def test_builtin_and_file_url(good_head: Path, tmp_path: Path) -> None:
    models = _models(tmp_path)
    with pytest.raises(HeadError, match="built-in head 'syn' is not installed"):
        load_head("builtin:syn", models)
    shutil.copytree(good_head, models / "heads" / "syn")
    assert load_head("builtin:syn", models).name == "syn"
    assert load_head(good_head.as_uri(), models).labels == ("c0", "c1", "c2")


def test_https_style_download_is_cached(good_head: Path, tmp_path: Path) -> None:
    models = _models(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(good_head.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{good_head.name}"
    try:
        head = load_head(url, models)
    finally:
        server.shutdown()
        server.server_close()
    assert head.name == "syn"
    cached = list((models / "downloads").iterdir())
    assert len(cached) == 1 and (cached[0] / "head.onnx").is_file()
    assert load_head(url, models).name == "syn"  # the server is gone: the cached copy is used
    with pytest.raises(HeadError, match="download failed"):
        load_head(f"http://127.0.0.1:{server.server_address[1]}/other", models)


def test_models_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHPOINT_MODELS", str(tmp_path))
    assert models_dir() == tmp_path


# --- data and CLI ------------------------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": 3, "label": "x"}\n{"label": "y"}\nnot json\n'
                    '{"text": "  ", "label": "x"}\n[1]\n{"text": "b", "label": "y"}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert [n for n, _ in err.value.problems] == [3, 4, 5, 6, 7]
    assert "line 3: 'text' is int, not a string" in str(err.value)
    assert "line 4: missing field 'text'" in str(err.value)
    rows = read_jsonl(path, skip_bad=True)
    assert rows.texts == ("a", "b") and len(rows.skipped) == 5
    path.write_text(json.dumps({"text": "line\u2028separator\x85inside", "label": "x"}, ensure_ascii=False) + "\r\n")
    assert read_jsonl(path).texts == ("line\u2028separator\x85inside",)


def test_cli_train_and_eval(encoder, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts, labels = _subject_rows(60)
    data = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": t, "label": lab}) for t, lab in zip(texts, labels, strict=True)]
    lines.insert(5, '{"text": "no label here"}')
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "head"

    assert main(["classifier", "train", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 6: missing field 'label'" in err and not out.exists()

    assert main(["classifier", "train", "--data", str(data), "--out", str(out), "--skip-bad", "--name", "subj"]) == 0
    captured = capsys.readouterr()
    assert "skipped line 6" in captured.err and "accuracy" in captured.out and (out / "head.onnx").is_file()
    manifest = json.loads((out / "head.json").read_text())
    assert manifest["name"] == "subj" and manifest["training"]["rows"] == len(texts)

    assert main(["classifier", "eval", "--head", str(out), "--data", str(data), "--skip-bad", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == manifest["training"]["heldout_rows"]
    assert report["accuracy"] == pytest.approx(manifest["metrics"]["heldout"]["accuracy"], abs=1e-4)
    assert len(report["confusion"]) == 4 and report["scope"].startswith("held-out")

    assert main(["classifier", "eval", "--head", str(out), "--data", str(data), "--skip-bad", "--all-rows"]) == 0
    text = capsys.readouterr().out
    assert f"{len(texts)} all rows" in text and "macro-F1" in text and "rows: true label" in text

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "hello", "label": "poetry"}) + "\n")
    assert main(["classifier", "eval", "--head", str(out), "--data", str(other), "--all-rows"]) == 2
    assert "poetry" in capsys.readouterr().err


def test_linear_export_matches_numpy_for_many_shapes() -> None:
    rng = np.random.default_rng(1)
    import onnxruntime as ort

    for kind, k in (("multiclass", 5), ("binary", 1)):
        head = linear.LinearHead(kind, rng.normal(size=(12, k)).astype(np.float32), rng.normal(size=k).astype(
            np.float32))
        sess = ort.InferenceSession(linear.to_onnx(head, "t").SerializeToString(), providers=["CPUExecutionProvider"])
        x = rng.normal(size=(7, 12)).astype(np.float32) * 3
        np.testing.assert_allclose(sess.run(None, {"embedding": x})[0], head.predict_proba(x), atol=1e-6)


def test_mlp_head_trains_exports_and_round_trips(tmp_path: Path) -> None:
    x, texts, labels = _synthetic(n=600, k=3)
    opts = TrainOptions(name="mlp", model="mlp")
    trained = train_on_embeddings(x, texts, labels, opts, "minilm-static")
    assert trained.manifest["model"]["type"] == "mlp" and 1 <= trained.manifest["model"]["epochs"] <= mlp.MAX_EPOCHS
    assert trained.manifest["metrics"]["heldout"]["accuracy"] > 0.8
    head = load_head(str(trained.write(tmp_path / "mlp")), _models(tmp_path))
    np.testing.assert_allclose(head.predict(x), trained.head.predict_proba(x), atol=1e-5)
    again = train_on_embeddings(x, texts, labels, opts, "minilm-static")
    np.testing.assert_array_equal(again.head.w1, trained.head.w1)  # seeded: deterministic


# --- default heads ------------------------------------------------------------------------------------------------


def test_default_head_data() -> None:
    from switchpoint.ml.defaults import head_data

    domain = head_data("domain")
    assert len(domain.texts) == 13986 and len(set(domain.labels)) == 14
    assert set(domain.options.labels) == set(domain.labels)
    mapping = json.loads((ROOT / "data" / "classifiers" / "mmlu_pro_categories.json").read_text())
    assert len(mapping["subjects"]) == 57 and mapping["subjects"]["high_school_geography"] == "other"
    difficulty = head_data("difficulty")
    assert difficulty.texts == domain.texts
    assert abs(difficulty.labels.count("needs_strong") / len(difficulty.labels) - 0.319) < 0.001
    jb = head_data("jailbreak")
    assert set(jb.labels) == {"benign", "jailbreak"} and len(set(jb.texts)) == len(jb.texts)
    assert jb.labels.count("jailbreak") > 700 and len(jb.sources) == len(jb.texts)
    with pytest.raises(ValueError, match="no default head"):
        head_data("sentiment")


def test_head_report_on_a_fixed_subset(encoder) -> None:
    from switchpoint.ml.defaults import head_report

    r = head_report(models_dir(), "jailbreak", encoder.name, max_rows=400)
    assert r["rows"] == 400 and r["train_rows"] + r["heldout_rows"] == 400
    assert r["accuracy"] > r["majority_accuracy"] and {"precision", "recall", "threshold"} <= set(r)
    assert r == {**head_report(models_dir(), "jailbreak", encoder.name, max_rows=400), "seconds": r["seconds"]}


def test_the_mlp_head_exported_to_onnx_computes_what_numpy_computes():
    import onnxruntime as ort

    from switchpoint.ml.mlp import fit_mlp, mlp_to_onnx

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    head, _, _ = fit_mlp(x, y, 3, "multiclass", epochs=5)
    session = ort.InferenceSession(mlp_to_onnx(head, "t").SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, head.predict_proba(x), atol=1e-5)
