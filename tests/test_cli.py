"""End-to-end CLI tests: the real argument parser and commands, on files made in tmp_path."""

import json
import subprocess
import sys

import numpy as np
import pytest

import textcnn
from textcnn.cli import main

from .conftest import write_csv

FAST = ["--embedding-size", "16", "--feature-size", "8", "--window-sizes", "2,3", "--epochs", "3",
        "--batch-size", "16", "--learning-rate", "0.01", "-q"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained(tmp_path, train_csv, dev_csv, capsys):
    out = tmp_path / "model"
    code, stdout, _ = run(capsys, "train", train_csv, "--dev", dev_csv, "--out", out, *FAST)
    assert code == 0 and f"saved the model to {out}" in stdout
    return out


def test_train_eval_predict_reload(trained, dev_csv, capsys, tmp_path):
    code, out, _ = run(capsys, "eval", trained, dev_csv, "--json")
    report = json.loads(out)
    assert code == 0 and {"accuracy", "macro_f1", "labels", "per_class", "confusion_matrix"} <= set(report)
    assert report["accuracy"] > 0.8

    code, out, _ = run(capsys, "eval", trained, dev_csv)
    assert "macro avg" in out and "confusion matrix" in out and "accuracy:" in out

    code, out, _ = run(capsys, "predict", trained, "a great film", "superb", "--format", "jsonl", "--top-k", "2")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["a great film", "superb"]
    assert all(set(r) == {"text", "label", "probability", "top_k"} and len(r["top_k"]) == 2 for r in rows)
    clf = textcnn.load(trained)
    np.testing.assert_allclose(clf.predict_proba(["superb"])[0].max(), rows[1]["probability"], rtol=1e-6)


def test_predict_from_files_and_stdin(trained, tmp_path, capsys, monkeypatch):
    lines = tmp_path / "texts.txt"
    lines.write_text("great\n\nawful story\n", encoding="utf-8")
    code, out, _ = run(capsys, "predict", trained, "--input", lines, "--format", "csv")
    rows = out.splitlines()
    assert code == 0 and rows[0] == "text,label,probability,top_k" and len(rows) == 4
    assert rows[2].startswith(',"') or rows[2].startswith(",")  # the empty line gets an answer too

    code, out, _ = run(capsys, "predict", trained, "--input", write_csv(tmp_path / "x.csv", ["good", "bad"], ["?", "?"]))
    assert code == 0 and len(out.splitlines()) == 2 and out.split("\t")[0] in ("pos", "neg")

    monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": __import__("io").BytesIO(b"great film\n")})())
    code, out, _ = run(capsys, "predict", trained, "--input", "-", "--format", "jsonl")
    assert code == 0 and json.loads(out)["text"] == "great film"


def test_config_file_and_flags(tmp_path, train_csv, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"embedding_size": 12, "feature_size": 5, "window_sizes": [2], "epochs": 1}))
    code, _, _ = run(capsys, "train", train_csv, "--out", tmp_path / "m", "--config", cfg, "--feature-size", "7", "-q")
    saved = textcnn.load(tmp_path / "m").config_
    assert code == 0 and (saved.embedding_size, saved.feature_size, saved.window_sizes) == (12, 7, (2,))


def test_summary_of_the_seed_config(capsys):
    code, out, _ = run(capsys, "summary", "--batch-size", "32", "--max-text-len", "35", "--embedding-size", "256",
                       "--feature-size", "100", "--window-sizes", "3,4,5,6", "--num-class", "2")
    assert code == 0
    for shape in ("32 x 35", "32 x 35 x 256", "32 x 256 x 35", "32 x 100 x 33", "32 x 100 x 30", "32 x 400 x 1", "32 x 400", "32 x 2"):
        assert shape in out
    assert out.count("32 x 100 x 1\n") == 4
    assert "L_out = floor(" in out


def test_summary_of_a_model_dir(trained, capsys):
    code, out, _ = run(capsys, "summary", trained, "--text-len", "10")
    assert code == 0 and "32 x 10 x 16" in out and "k=3: 10 - 3 + 1 = 8" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "missing.csv", "--out", "m"], "error: Cannot read 'missing.csv': the path does not exist"),
        (["train", "{train}", "--out", "m", "--dropout-rate", "1.5"], "error: --dropout-rate must be a float in [0, 1). Got 1.5 instead."),
        (["train", "{train}", "--out", "m", "--text-col", "body"], "no column 'body' in the header (columns: 'text', 'label'). Pass --text-col"),
        (["train", "{bad}", "--out", "m"], "bad.csv, line 3: the 'text' field is empty"),
        (["train", "{train}", "--out", "m", "--config", "nope.json"], "error: --config: 'nope.json' does not exist."),
        (["train", "{train}", "--out", "m", "--embedding-mode", "static"], "needs pretrained vectors"),
        (["eval", "nomodel", "{train}"], "error: 'nomodel' is not a directory"),
        (["predict", "{model}"], "Give texts to classify as arguments, or --input FILE"),
        (["predict", "{model}", "x", "--top-k", "0"], "The 'top_k' parameter must be an int >= 1"),
        (["summary", "--max-text-len", "2", "--window-sizes", "3,4"], "--max-text-len 2 is shorter than the widest window (4)"),
    ],
)
def test_errors_are_one_clear_line_with_exit_2(argv, message, tmp_path, train_csv, model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("text,label\ngood,pos\n ,neg\n", encoding="utf-8")
    argv = [a.format(train=train_csv, bad=tmp_path / "bad.csv", model=model_dir) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_bad_flag_types_name_the_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "x.csv", "--out", "m", "--epochs", "many"])
    assert e.value.code == 2 and "argument --epochs: invalid int value: 'many'" in capsys.readouterr().err


def test_skip_invalid_reports_and_trains(tmp_path, corpus, capsys):
    texts, labels = corpus
    path = write_csv(tmp_path / "t.csv", texts + [""], labels + ["pos"])
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m", "--skip-invalid", *FAST)
    assert code == 0 and "warning: Skipped 1 invalid row(s)" in err and f"(lines {len(texts) + 2})" in err


def test_module_entry_point_and_help():
    out = subprocess.run([sys.executable, "-m", "textcnn", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "predict" in out.stdout
    for command in ("train", "eval", "predict", "summary"):
        sub = subprocess.run([sys.executable, "-m", "textcnn", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: textcnn " + command in sub.stdout


def test_confusion_png(trained, dev_csv, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cm.png"
    code, _, _ = run(capsys, "eval", trained, dev_csv, "--confusion-png", png)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chinese_text_with_the_word_tokenizer_gets_advice(tmp_path, capsys):
    texts = ["中华女子学院本科层次仅专业招男生", "两天价网站背后重重迷雾做个网站究竟要多少钱"] * 20
    path = write_csv(tmp_path / "zh.csv", texts, ["edu", "tech"] * 20)
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m", "--tokenizer", "word", "--epochs", "1",
                       "--embedding-size", "8", "--feature-size", "4", "--window-sizes", "2")
    assert code == 0 and "Use --tokenizer char" in err
    code, _, _ = run(capsys, "train", path, "--out", tmp_path / "m2", "--epochs", "1", "-q",
                     "--embedding-size", "8", "--feature-size", "4", "--window-sizes", "2")
    assert textcnn.load(tmp_path / "m2").config_.tokenizer == "char"


def test_a_monitor_the_task_does_not_report_exits_2_before_training(tmp_path, train_csv, capsys):
    code, out, err = run(capsys, "train", train_csv, "--out", tmp_path / "m", "--monitor", "micro_f1", "--epochs", "1")
    assert code == 2 and "Traceback" not in err and "epoch 1/" not in err
    assert "error: The 'monitor' parameter (--monitor) must be one of 'auto', 'accuracy', 'macro_f1', 'loss'" in err
    assert not (tmp_path / "m").exists()
