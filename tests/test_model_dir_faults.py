"""Faults in model directories: damaged files, killed writers, readers racing writers.

A damaged directory gives ModelFormatError (the CLI: one line, exit 2), never another exception
and never a silently different model; a save killed at any instant leaves the old or the new
model loadable; a reader never sees a mixture.
"""

from __future__ import annotations

import fcntl
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import textcnn
from textcnn import ModelFormatError
from textcnn.atomicdir import exchange, temp_prefix
from textcnn.cli import main

from .test_serialization import DATA, PROBE, edit_json

FILES = ["config.json", "vocab.json", "labels.json", "tokenizer.json", "model.safetensors", "history.json",
         "manifest.json"]
WRITER = Path(__file__).parent / "model_writer.py"


@pytest.fixture(scope="module")
def reference(model_dir):
    clf = textcnn.load(model_dir)
    return clf.classes_.tolist(), clf.predict_proba(PROBE)


def damaged_copies(mode: str, data: bytes, rng: random.Random) -> list[bytes | None]:
    """New contents for a file (None: delete it; b"<dir>": a directory in its place)."""
    middle = len(data) // 2
    if mode == "half":
        return [data[:middle]]
    if mode == "zero":
        return [b""]
    if mode == "delete":
        return [None]
    if mode == "directory":
        return [b"<dir>"]
    if mode == "flip-middle":  # the lowest bit (a digit or letter one off) and the whole byte
        return [_flip(data, middle, 0x01), _flip(data, middle, 0xFF)]
    return [_flip(data, rng.randrange(len(data)), rng.randrange(1, 256)) for _ in range(12)]  # "flip-random"


def _flip(data: bytes, at: int, mask: int) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


def damage(model: Path, name: str, content: bytes | None) -> None:
    file = model / name
    if file.exists():
        file.unlink()
    if content == b"<dir>":
        file.mkdir()
        (file / "x").write_text("x")
    elif content is not None:
        file.write_bytes(content)


def refused_or_identical(model: Path, name: str, reference) -> str:
    """Loads a damaged copy: a ModelFormatError naming the damaged file (or the manifest that would
    have vouched for it), or a model answering exactly as the original; any other outcome fails."""
    try:
        clf = textcnn.load(model)
    except ModelFormatError as e:
        assert name in str(e) or "manifest.json" in str(e), str(e)
        assert "\n" not in str(e)
        return "refused"
    classes, proba = reference
    assert clf.classes_.tolist() == classes, f"damaged {name} loaded as other classes"
    np.testing.assert_allclose(clf.predict_proba(PROBE), proba, rtol=1e-6, err_msg=f"damaged {name} loaded")
    return "identical"


@pytest.mark.parametrize("mode", ["half", "zero", "delete", "directory", "flip-middle", "flip-random"])
@pytest.mark.parametrize("name", FILES)
def test_every_damaged_file_is_refused(model_dir, tmp_path, reference, name, mode):
    rng = random.Random(f"{name}-{mode}")
    outcomes = []
    for i, content in enumerate(damaged_copies(mode, (model_dir / name).read_bytes(), rng)):
        model = tmp_path / f"m{i}"
        shutil.copytree(model_dir, model)
        damage(model, name, content)
        outcomes.append(refused_or_identical(model, name, reference))
    if name != "manifest.json":  # every byte of the others is covered by its checksum
        assert set(outcomes) == {"refused"}
    else:  # a flip in the manifest's whitespace (space -> tab) changes nothing
        assert outcomes.count("refused") >= len(outcomes) - 2


@pytest.mark.parametrize("mode", ["half", "zero", "delete", "directory"])
@pytest.mark.parametrize("name", FILES[:-1])
def test_damaged_format1_files_are_refused(tmp_path, name, mode):
    """Directories of textcnn 0.1 have no checksums: a flipped byte inside a string cannot be caught
    there, but a truncated, emptied, missing or replaced file is."""
    reference = textcnn.load(DATA / "model-format1")
    reference = reference.classes_.tolist(), reference.predict_proba(PROBE)
    content = damaged_copies(mode, (DATA / "model-format1" / name).read_bytes(), random.Random(0))[0]
    model = tmp_path / "m"
    shutil.copytree(DATA / "model-format1", model)
    damage(model, name, content)
    outcome = refused_or_identical(model, name, reference)
    assert outcome == "refused" or (name, mode) == ("history.json", "delete")  # optional in format 1


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("content", [b"", b"<dir>", b"[]", None])
def test_the_cli_gives_one_line_for_a_damaged_model(model_dir, tmp_path, capsys, name, content):
    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    damage(model, name, content)
    if content == b"[]" and name not in ("manifest.json", "model.safetensors"):  # JSON of the wrong type,
        edit_json(model, name, {} if name == "history.json" else [])  # re-signed: the JSON itself is wrong
    code, err = cli(capsys, "predict", model, "a great film")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and name in err, err
    assert "bug" not in err and "Traceback" not in err


def test_the_cli_reports_an_unexpected_error_as_a_bug_in_one_line(model_dir, capsys, monkeypatch):
    def broken(args):
        raise KeyError("never raised on purpose")

    monkeypatch.setattr("textcnn.cli.cmd_predict", broken)
    monkeypatch.delenv("TEXTCNN_TRACEBACK", raising=False)
    code, err = cli(capsys, "predict", model_dir, "x")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: unexpected KeyError: 'never raised on purpose'. This is a bug in textcnn")


def test_leftovers_of_killed_writers_are_removed_by_the_next_save(fitted, tmp_path):
    target = tmp_path / "m"
    fitted.save(target)
    dead = tmp_path / (temp_prefix(target) + "deadbeef")
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    busy = tmp_path / (temp_prefix(target) + "0busy000")  # a live writer holds its lock
    busy.mkdir()
    other = tmp_path / ".m.backup"  # not our prefix: not ours to remove
    other.mkdir()
    lock = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert textcnn.load(target).classes_.tolist() == fitted.classes_.tolist()  # never read instead of the model
        fitted.save(target)
        assert not dead.exists() and busy.exists() and other.exists()
    finally:
        os.close(lock)
    fitted.save(target)
    assert not busy.exists()


def test_the_fallback_without_rename_exchange_still_replaces_the_model(fitted, model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("textcnn.atomicdir.exchange", lambda a, b: None)  # as on macOS, or a filesystem refusing it
    target = tmp_path / "m"
    shutil.copytree(DATA / "model-format1", target)
    old = os.umask(0o022)
    try:
        fitted.save(target)
    finally:
        os.umask(old)
    assert textcnn.load(target).classes_.tolist() == fitted.classes_.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert (target.stat().st_mode & 0o777) == 0o755


# ----- killed writers and racing readers (a real subprocess, SIGKILL) -----

class Writer:
    """tests/model_writer.py, driven line by line; every wait has a timeout, none is a sleep."""

    def __init__(self, root: Path, models: dict[str, Path], target: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(textcnn.__file__).parents[1])}
        self.target = target
        self.proc = subprocess.Popen([sys.executable, str(WRITER), str(models["a"]), str(models["b"]), str(target)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.expected = {}
        for path in models.values():
            clf = textcnn.load(path)
            self.expected[tuple(clf.classes_)] = clf.predict_proba(PROBE)
        assert self.line() == "loaded"

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("<eof>")

    def line(self) -> str:
        return self.lines.get(timeout=120)

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def check(self) -> str:
        """The target loads as one of the two models, complete; returns which (by its classes)."""
        clf = textcnn.load(self.target)
        key = tuple(clf.classes_)
        assert key in self.expected, key
        np.testing.assert_allclose(clf.predict_proba(PROBE), self.expected[key], rtol=1e-6)
        return key[0]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def writer(model_dir, tmp_path_factory):
    probe = tmp_path_factory.mktemp("probe")
    (probe / "x").mkdir()
    (probe / "y").mkdir()
    if exchange(probe / "x", probe / "y") is not True:
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here: saves use the two-rename fallback, "
                    "whose window the atomicdir docstring documents")
    root = tmp_path_factory.mktemp("writer")
    a = textcnn.load(model_dir)
    b = textcnn.load(model_dir)
    b.classes_ = np.array(["NEG", "POS"], dtype=object)  # tells the models apart, with other weights too
    with torch.no_grad():
        b.model_.fc.bias.add_(1.0)
    a.save(root / "a")
    b.save(root / "b")
    a.save(root / "target")
    w = Writer(root, {"a": root / "a", "b": root / "b"}, root / "target")
    yield w
    w.close()


def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_model(writer):
    writer.send("count")
    steps = int(writer.line().split()[1])
    seen = set()
    for k in range(1, 2 * steps + 2):  # every step of two saves in a row, and the first of a third
        writer.send(f"kill {k}")
        assert writer.line() == f"killed {k}"
        seen.add(writer.check())
    assert seen == {"neg", "NEG"}
    writer.send(f"kill {steps // 2}")  # mid-save: leaves a temporary directory ...
    assert writer.line() == f"killed {steps // 2}"
    prefix = temp_prefix(writer.target)
    assert [p for p in writer.target.parent.iterdir() if p.name.startswith(prefix)]
    textcnn.load(writer.target).save(writer.target)  # ... which the next save removes
    assert not [p for p in writer.target.parent.iterdir() if p.name.startswith(prefix)]


def test_a_reader_whose_version_is_replaced_mid_read_reads_the_new_one(writer):
    writer.send("race")
    assert writer.line() == "loaded NEG"  # B, saved (and A deleted) while the load was reading A
    assert writer.line() == "exited"


def test_readers_racing_a_writer_killed_at_random_moments(writer):
    rng = random.Random(12)
    for _ in range(5):
        writer.send("run")
        pid = int(writer.line().split()[1])
        assert writer.line() == "ready"
        for _ in range(rng.randint(5, 25)):  # each load races the saves; their count sets the kill moment
            writer.check()
        os.kill(pid, 9)
        assert writer.line() == "killed"
        writer.check()
