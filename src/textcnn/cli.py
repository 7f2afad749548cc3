"""The ``textcnn`` command: a thin layer over the public Python API.

Config flags are generated from :class:`TextCNNConfig`'s fields (``dropout_rate`` -> ``--dropout-rate``),
so Python, ``config.json`` and the command line share one set of names. Bad input ends with one
``error:`` line naming the file, line or flag and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from . import TextCNNConfig, __version__, card, read_records, runtime, streaming
from .config import TUNE_RESCORE, TUNE_SEARCH_SHARE
from .errors import ConfigError, TextCNNError
from .labels import detect_multi_label, normalise_labels

EXIT_USAGE = 2
DISTILL_COPIES = 10  # textcnn.distill.DEFAULT_COPIES, without importing torch for --help
EXIT_BUG = 1


def load(model_dir):
    """textcnn.load, imported with PyTorch on first use: the commands that need none run without it."""
    from . import load as load_model

    return load_model(model_dir)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda s: None if s.lower() in ("none", "null") else parse(s)


def _int_list(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 3,4,5, got {s!r}") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str, "tuple[int, ...]": _int_list,
    "int | None": _optional(int), "float | None": _optional(float), "str | None": _optional(str),
    "tuple[int, ...] | None": _optional(_int_list),
}


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per config field; defaults are suppressed so we know which flags were given."""
    group = parser.add_argument_group("model and training (TextCNNConfig fields; defaults in brackets)")
    for f in dataclasses.fields(TextCNNConfig):
        if f.name in skip:
            continue
        help_text = f"{f.metadata.get('help', '')} [{_show(f.default)}]"
        if f.type in ("bool", "bool | None"):
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag(f.name), type=_PARSERS[f.type], default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Config values: those of --config FILE.json, overridden by the flags given; defaults for the rest."""
    return TextCNNConfig.from_dict(given_config(args)).to_dict()


def given_config(args: argparse.Namespace) -> dict[str, Any]:
    """Only the config values given: in --config FILE.json or as flags (checked, with flag names in errors)."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--config: '{path}' does not exist.") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config: '{path}' is not valid JSON (line {e.lineno}: {e.msg}).") from None
        if not isinstance(values, dict):
            raise ConfigError(f"--config: '{path}' must hold a JSON object of config fields.")
        values = values.get("config", values)  # a model's config.json works too
    for name in TextCNNConfig.field_names():
        if name in vars(args):
            values[name] = getattr(args, name)
    try:
        TextCNNConfig.from_dict(values)
    except ConfigError as e:
        raise ConfigError(_flag_names(str(e))) from None
    return values


def _flag_names(message: str) -> str:
    for name in TextCNNConfig.field_names():
        message = message.replace(f"The '{name}' parameter", f"{flag(name)}").replace(f"'{name}'", f"'{name}' ({flag(name)})")
    return message


def add_input_flags(parser: argparse.ArgumentParser, format_flag: str = "--format", extra_formats: tuple[str, ...] = ()) -> None:
    parser.add_argument(format_flag, dest="input_format", choices=["csv", "tsv", "jsonl", "fasttext", "lines", *extra_formats],
                        help="input format; by default from the extension (.csv .tsv .jsonl; others: fastText / one text per line)")
    parser.add_argument("--text-col", default="text", help="column (or JSON field) holding the text [text]")
    parser.add_argument("--label-col", default="label", help="column (or JSON field) holding the label [label]")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip rows with an empty text, a missing label or bad bytes, and report them")


def _read(args, path, labeled: bool = True):
    records = read_records(path, fmt=args.input_format, text_col=args.text_col, label_col=args.label_col,
                           labeled=labeled, skip_invalid=args.skip_invalid)
    if records.skipped_summary():
        print(f"warning: {records.skipped_summary()}", file=sys.stderr)
        for line, why in records.skipped[:5]:
            print(f"  line {line}: {why}", file=sys.stderr)
    return records


def _check_labels(records, multi: bool, sep: str) -> None:
    """The labels' own problems (one that splits into nothing), named by file and line."""
    normalise_labels(records.labels, multi, sep, where=lambda i: f"{records.source}, line {records.lines[i]}")


@contextlib.contextmanager
def _warnings_as_lines():
    """The library's warnings as one 'warning: ...' line each on stderr, shown when they happen."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr, flush=True)
        yield


# ----- commands -----

def cmd_train(args) -> int:
    from . import distributed

    params = config_from_args(args)
    world = distributed.init(params["device"])  # under torchrun: join the other ranks
    try:
        return _train(args, params, world)
    finally:
        distributed.finish()


def _train(args, params: dict, world) -> int:
    from . import TextCNNClassifier

    quiet = args.quiet or not world.main  # one voice: rank 0's
    clf = TextCNNClassifier(**params, verbose=0 if quiet else 1 + args.verbose)
    if world.size > 1 and world.main:
        clf._log(f"distributed training: {world.size} processes ({world.backend}), each on 1/{world.size} of the "
                 f"batches; {world.size} x {params['batch_size']} texts per step")
    if _out_of_core(args, params):
        with _warnings_as_lines():
            clf.fit_files(args.train_file, args.dev, cache_dir=args.cache_dir, fmt=args.input_format,
                          text_col=args.text_col, label_col=args.label_col, skip_invalid=args.skip_invalid,
                          callbacks=_checkpointer(args, world))
    else:
        _fit_in_memory(args, params, clf, world)
    card.record_files(clf, train=args.train_file, dev=args.dev)
    if world.main:
        clf.save(args.out)
        print(f"saved the model to {args.out}")
    return 0


OUT_OF_CORE_BYTES = 256 * 2**20  # training files from this size on go through the token cache


def _out_of_core(args, params: dict) -> bool:
    """The token cache for --cache-dir, Parquet, and files of 256 MB or more (not for standard input)."""
    if args.train_file == "-" or args.in_memory:
        return False
    if params.get("encoder") and Path(args.train_file).suffix.lower() not in (".parquet", ".pq"):
        return False  # texts in memory; their encoder states are cached (under --cache-dir when large)
    path = Path(args.train_file)
    big = path.is_file() and path.stat().st_size >= OUT_OF_CORE_BYTES
    return bool(args.cache_dir) or big or path.suffix.lower() in (".parquet", ".pq")


def _read_train_dev(args, multi_label: bool | None, label_sep: str):
    """TRAIN_FILE and --dev (None without it) read into memory, their labels checked by file and line."""
    train = _read(args, args.train_file)
    multi, _, _ = detect_multi_label(train.labels, multi_label, label_sep)
    _check_labels(train, multi, label_sep)
    dev = None
    if args.dev:
        dev = _read(args, args.dev)
        _check_labels(dev, multi, label_sep)
    return train, dev


def _dev_pair(dev) -> tuple:
    """(texts, labels) of --dev, or (None, None) without it."""
    return (None, None) if dev is None else (dev.texts, dev.labels)


def _stderr_log(quiet: bool) -> Callable[[str], None]:
    return (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))


def _fit_in_memory(args, params: dict, clf, world) -> None:
    train, dev = _read_train_dev(args, params["multi_label"], params["label_sep"])
    validation = None if dev is None else _dev_pair(dev)
    with _warnings_as_lines():
        clf.fit(train.texts, train.labels, validation_data=validation, callbacks=_checkpointer(args, world),
                cache_dir=args.cache_dir)


def cmd_tune(args) -> int:
    from .tune import parse_budget, tune, write_trials

    budget = parse_budget(args.budget)
    fixed = given_config(args)
    base = TextCNNConfig.from_dict(fixed)
    train, dev = _read_train_dev(args, base.multi_label, base.label_sep)
    with _warnings_as_lines():
        result = tune(train.texts, train.labels, *_dev_pair(dev), budget_s=budget, fixed=fixed,
                      max_trials=args.trials, rescore=args.rescore, log=_stderr_log(args.quiet))
    card.record_files(result.best, train=args.train_file, dev=args.dev)
    result.best.save(args.out)
    trials_path = Path(args.trials_out or default_trials_path(args.out))
    write_trials(result.trials, trials_path)
    print(f"saved the best model (dev {result.monitor} {result.best_score:.4f}) to {args.out}; "
          f"{len(result.trials)} trial(s) in {trials_path}")
    return 0


def cmd_distill(args) -> int:
    from .distill import distill

    teacher = load(args.teacher_dir)
    params = config_from_args(args)
    train, dev = _read_train_dev(args, params["multi_label"], params["label_sep"])
    with _warnings_as_lines():
        student = distill(teacher, train.texts, train.labels, *_dev_pair(dev), copies=args.copies,
                          alpha=args.alpha, temperature=args.temperature, teacher_vectors=not args.no_teacher_vectors,
                          params={**params, "verbose": 0 if args.quiet else 1}, log=_stderr_log(args.quiet))
    card.record_files(student, train=args.train_file, dev=args.dev)
    student.training_data_["distilled"]["teacher"] = Path(args.teacher_dir).name
    student.save(args.out)
    print(f"saved the student model to {args.out}")
    return 0


def default_trials_path(out: str) -> Path:
    """MODEL_DIR.trials.csv beside the model directory (whose files the manifest lists)."""
    path = Path(out)
    return path.with_name(path.name + ".trials.csv")


def _checkpointer(args, world) -> list:
    """--checkpoint-every / --resume as a Checkpointer callback (none without them)."""
    from .checkpoint import Checkpointer, parse_every

    if not args.checkpoint_every and not args.resume:
        return []
    steps, seconds = parse_every(args.checkpoint_every) if args.checkpoint_every else (None, None)
    directory = Path(args.checkpoint_dir or default_checkpoint_dir(args.out))
    return [Checkpointer(directory, every_steps=steps, every_seconds=seconds, resume=args.resume, write=world.main)]


def default_checkpoint_dir(out: str) -> Path:
    """MODEL_DIR.checkpoint beside the model directory (inside it, the model's atomic save would remove it)."""
    path = Path(out)
    return path.with_name(path.name + ".checkpoint")


def _load_verbose(args):
    clf = runtime.load_predictor(args.model_dir, getattr(args, "runtime", "torch"))
    clf.verbose = 1 + args.verbose if args.verbose else 0  # -v: the prediction path on stderr
    return clf


def cmd_eval(args) -> int:
    clf = _load_verbose(args)
    test = _read(args, args.test_file)
    _check_labels(test, clf.multi_label_, clf.config_.label_sep)
    report = clf.evaluate(test.texts, test.labels)
    if args.confusion_png:
        from .plots import save_confusion_png

        save_confusion_png(report, args.confusion_png)
    if not args.no_update_card:
        _record_test(args, clf, report)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


def _record_test(args, clf, report: dict) -> None:
    """The test metrics go into the model card; a model directory we may not write to is only warned about."""
    if args.test_file == "-":
        return
    try:
        card.record_test(args.model_dir, clf, args.test_file, report)
    except OSError as e:
        print(f"warning: the model card was not updated ({e.strerror or e}); pass --no-update-card to skip it",
              file=sys.stderr)


def cmd_card(args) -> int:
    facts = card.read_facts(args.model_dir)
    if facts is None:  # saved before model cards: the facts the model itself holds
        facts = card.card_facts(load(args.model_dir))
    if args.json:
        print(json.dumps(facts, ensure_ascii=False, indent=1))
    else:
        sys.stdout.write(card.render_card(facts))
    return 0


def format_report(r: dict) -> str:
    names = r["labels"]
    width = max(12, max(len(n) for n in names) + 2)
    lines = [f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for n in names:
        c = r["per_class"][n]
        lines.append(f"{n:<{width}}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10}")
    lines.append("")
    avgs = ("micro", "macro") if r["task"] == "multi-label" else ("macro", "weighted")
    for avg in avgs:
        p, rec = r.get(f"{avg}_precision"), r.get(f"{avg}_recall")
        lines.append(f"{avg + ' avg':<{width}}{p:>10.4f}{rec:>10.4f}{r[avg + '_f1']:>10.4f}{r['n']:>10}")
    label = "exact-match accuracy" if r["task"] == "multi-label" else "accuracy"
    lines.append(f"{label}: {r['accuracy']:.4f}  ({r['n']} texts)")
    if r["task"] == "single-label":
        lines += ["", "confusion matrix (rows: true, columns: predicted)"]
        cell = max(6, max(len(n) for n in names) + 1)
        lines.append(" " * width + "".join(f"{n[:cell - 1]:>{cell}}" for n in names))
        for n, row in zip(names, r["confusion_matrix"]):
            lines.append(f"{n:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def _check_one_source(args, verb: str) -> None:
    """TEXT arguments or --input, exactly one of them."""
    if bool(args.texts) == bool(args.input):
        raise ConfigError(f"Give texts to {verb} as arguments, or --input FILE (--input - for standard input), not both.")


def _add_runtime_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=list(runtime.RUNTIMES), default="torch",
                   help="predict with PyTorch, or with the exported graph through textcnn.runtime (no PyTorch; "
                        "run 'textcnn export' first) [torch]")


def cmd_predict(args) -> int:
    _check_one_source(args, "classify")
    if args.output is not None:
        return _predict_stream(args)
    if args.output_file_format is not None:
        raise ConfigError("--output-format needs --output FILE (or --output - for standard output).")
    if args.input and (args.input_format or streaming.detect_input_format(args.input)) == "parquet":
        raise ConfigError("Parquet input needs --output FILE (or --output - for JSONL on standard output).")
    clf = _load_verbose(args)
    texts = args.texts or _read(args, args.input, labeled=False).texts
    records = clf.predict_records(texts, top_k=args.top_k)
    out = sys.stdout
    if args.output_format == "jsonl":
        for rec in records:
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    elif args.output_format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "label", "probability", "top_k"])
        for rec in records:
            label, prob = _label_and_prob(rec)
            writer.writerow([rec["text"], label, prob, "|".join(f"{t['label']}:{t['probability']:.4f}" for t in rec["top_k"])])
    else:
        for rec in records:
            label, prob = _label_and_prob(rec)
            extra = "" if args.top_k == 1 else "  (" + ", ".join(f"{t['label']} {t['probability']:.4f}" for t in rec["top_k"]) + ")"
            out.write(f"{label}\t{prob}\t{rec['text']}{extra}\n")
    return 0


def _predict_stream(args) -> int:
    """--input FILE --output FILE: chunk by chunk, every input column passed through (textcnn.streaming)."""
    if args.texts:
        raise ConfigError("--output writes the predictions for --input FILE; give texts in a file, not as arguments.")
    if args.output_format is not None:
        raise ConfigError("--format is for printing without --output. With --output, the file's extension gives the "
                          "format, or pass --output-format.")
    clf = _load_verbose(args)
    result = streaming.predict_file(
        clf, args.input, args.output, input_format=args.input_format, output_format=args.output_file_format,
        text_col=args.text_col, chunk_size=args.chunk_size, top_k=args.top_k, skip_invalid=args.skip_invalid,
        progress=not args.quiet)
    if result.skipped_summary():
        print(f"warning: {result.skipped_summary()}", file=sys.stderr)
        for line, why in result.skipped[:5]:
            print(f"  {result.unit} {line}: {why}", file=sys.stderr)
    if not args.quiet:
        rate = result.rows / max(result.seconds, 1e-9)
        where = "standard output" if args.output == "-" else f"'{args.output}'"
        print(f"wrote {result.rows} predictions to {where} in {result.seconds:.1f} s ({rate:,.0f} texts/s)", file=sys.stderr)
    return 0


def _label_and_prob(rec: dict) -> tuple[str, str]:
    if "labels" in rec:
        return "|".join(map(str, rec["labels"])), "|".join(f"{p:.4f}" for p in rec["probabilities"])
    return str(rec["label"]), f"{rec['probability']:.4f}"


def cmd_summary(args) -> int:
    from .model import build_model, min_length
    from .summary import render_summary

    encoder = None
    if args.model_dir:
        clf = load(args.model_dir)
        model, cfg = clf.model_, clf.config_
        encoder = clf.tokenizer_ if cfg.encoder else None
    else:
        params = config_from_args(args)
        params["num_class"] = params["num_class"] or 2
        cfg = TextCNNConfig.from_dict(params)
        if cfg.encoder:
            from .encoder import load_encoder

            encoder = load_encoder(cfg.encoder)
            cfg = cfg.replace(embedding_size=encoder.hidden_size, max_text_len=min(cfg.max_text_len, encoder.max_pieces))
        model = build_model(cfg, args.vocab_size)
    length = args.text_len or cfg.max_text_len
    widest = min_length(model.window_sizes)  # a config's window_sizes may be None: the model's are resolved
    if length < widest:
        raise ConfigError(f"--max-text-len {length} is shorter than the widest window ({widest}); "
                          "the seed's MaxPool1d(max_text_len - h + 1) needs at least that.")
    print(render_summary(model, args.batch_size, length, encoder))
    return 0


def cmd_explain(args) -> int:
    from rich.console import Console

    from .explain import corpus_top_ngrams
    from .explain_view import render_corpus, render_explanation

    _check_one_source(args, "explain")
    if args.top_ngrams is not None and args.top_ngrams < 1:
        raise ConfigError(f"--top-ngrams must be an int >= 1. Got {args.top_ngrams} instead.")
    clf = load(args.model_dir)
    classes = None if args.class_label is None else [args.class_label]
    if args.input:
        texts = _read(args, args.input, labeled=False).texts
        tops = corpus_top_ngrams(clf, texts, top=args.top_ngrams or 20)
        if args.output_format == "json":
            print(json.dumps(tops, ensure_ascii=False))
        else:
            render_corpus(Console(), tops, len(texts))
        return 0
    explanations = clf.explain(args.texts, classes=classes)
    if args.output_format == "json":
        for exp in explanations:
            print(json.dumps(exp, ensure_ascii=False))
        return 0
    console = Console()
    for exp in explanations:
        render_explanation(console, exp, args.class_label, args.top_ngrams or 5)
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx

    out = export_onnx(args.model_dir, args.out, int8=args.int8)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); predict without PyTorch with: "
          f"textcnn.runtime.load({str(args.model_dir)!r}{', int8=True' if args.int8 else ''})")
    return 0


def cmd_serve(args) -> int:
    from .server import run_server, settings_from_args

    return run_server(args.model_dir, host=args.host, port=args.port, settings=settings_from_args(args),
                      runtime=args.runtime)


# ----- parser -----

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textcnn", description="Train, evaluate, explain and serve TextCNN text classifiers.")
    parser.add_argument("--version", action="version", version=f"textcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model on a labelled file and save it",
                       description="Train a TextCNN on TRAIN_FILE and save the model directory to --out.")
    p.add_argument("train_file", metavar="TRAIN_FILE")
    p.add_argument("--dev", metavar="DEV_FILE", help="dev set for early stopping (default: a stratified 10%% of train)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="where to save the model directory")
    p.add_argument("--config", metavar="FILE.json", help="config values as JSON (flags given override them)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say more (which code paths run)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--checkpoint-every", metavar="N|Nm",
                   help="write a checkpoint every N training steps, or every N minutes with Nm (and at each epoch end)")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="where checkpoints go [MODEL_DIR.checkpoint]")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint of an interrupted run with the same data and flags")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="read the files row by row into an on-disk token cache in DIR (reused by later runs); "
                        "used anyway, in $TEXTCNN_CACHE_DIR or ~/.cache/textcnn, for Parquet and files of 256 MB or more; "
                        "with --encoder, where the texts' encoder states are kept when too large for memory")
    p.add_argument("--in-memory", action="store_true", help="read the training file into memory whatever its size")
    add_input_flags(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="search the settings that matter within a time budget, on dev; save the best model",
                       description="Like fastText's autotune: Optuna (TPE, median pruning) tries settings (learning rate, "
                                   "dropout, filters, windows, epochs, batch size, n-gram channel) for --budget, each trained on "
                                   "TRAIN_FILE and scored on --dev; the library defaults are tried first. Flags given "
                                   "(e.g. --embeddings, --seed) are fixed, not searched. Needs: pip install 'textcnn[tune]'")
    p.add_argument("train_file", metavar="TRAIN_FILE")
    p.add_argument("--dev", metavar="DEV_FILE", help="dev set every trial is scored on (default: a stratified 10%% of train)")
    p.add_argument("--budget", default="10m", metavar="TIME", help="time for the whole search: 600, 90s, 10m, 1h [10m]")
    p.add_argument("--trials", type=int, metavar="N", help="stop searching after N trials even if time is left")
    p.add_argument("--rescore", type=int, default=TUNE_RESCORE, metavar="K",
                   help=f"train the K best settings again with the next seed in the last {1 - TUNE_SEARCH_SHARE:.0%} of "
                        f"the budget; the best mean dev score wins (0: off) [{TUNE_RESCORE}]")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="where to save the best model")
    p.add_argument("--trials-out", metavar="FILE.csv", help="the table of trials [MODEL_DIR.trials.csv]")
    p.add_argument("--config", metavar="FILE.json", help="fixed config values as JSON (flags given override them)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per trial")
    add_input_flags(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("distill", help="train a fast model on a (slower) teacher model's soft targets",
                       description="Train a TextCNN (word vectors: the fast prediction paths) on TEACHER_DIR's class "
                                   "probabilities over TRAIN_FILE and augmented copies of it (word dropout, n-gram "
                                   "sampling; with an --encoder teacher also word replacement by nearest words in the "
                                   "encoder's static vectors, which the student starts from), mixed with the true "
                                   "labels by --alpha; early stopping on --dev's labels.")
    p.add_argument("teacher_dir", metavar="TEACHER_DIR")
    p.add_argument("train_file", metavar="TRAIN_FILE")
    p.add_argument("--dev", metavar="DEV_FILE", help="dev set for early stopping (default: a stratified 10%% of train, "
                   "held out before augmenting)")
    p.add_argument("--out", required=True, metavar="STUDENT_DIR", help="where to save the student model")
    p.add_argument("--copies", type=int, default=DISTILL_COPIES, metavar="N",
                   help=f"augmented texts per training text [{DISTILL_COPIES}]")
    p.add_argument("--alpha", type=float, default=0.5, help="the teacher's share of the target on labelled texts [0.5]")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the teacher's logits [1.0]")
    p.add_argument("--no-teacher-vectors", action="store_true",
                   help="with an --encoder teacher, start the student from random vectors rather than the encoder's "
                        "static word vectors (--embeddings also replaces them)")
    p.add_argument("--config", metavar="FILE.json", help="the student's config values as JSON (flags given override them)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_input_flags(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="evaluate a saved model on a labelled file",
                       description="Accuracy, macro/weighted P/R/F1, per-class scores and the confusion matrix. The headline "
                                   "scores are added to the model card (MODEL_DIR/README.md) unless --no-update-card.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("test_file", metavar="TEST_FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--confusion-png", metavar="FILE", help="draw the confusion matrix to a PNG (needs matplotlib)")
    p.add_argument("--no-update-card", action="store_true",
                   help="do not add the test metrics to the model card (MODEL_DIR/README.md and card.json)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say which prediction path runs")
    add_input_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("card", help="print a model's card: labels, training data, settings, metrics, limits",
                       description="Print MODEL_DIR's model card (the README.md written when it was saved, with the "
                                   "test metrics of 'textcnn eval').")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("predict", help="classify texts given as arguments or in a file",
                       description="Classify TEXT arguments, or --input FILE (one text per line, or csv/tsv/jsonl/fastText). "
                                   "With --output FILE: stream --input (csv/tsv/jsonl/parquet/lines) in chunks to a "
                                   "csv/tsv/jsonl/parquet file, every input column followed by the predictions.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--input", metavar="FILE", help="file of texts; - reads standard input")
    p.add_argument("--top-k", type=int, default=1, help="also list the K most probable labels [1]")
    p.add_argument("--format", dest="output_format", choices=["text", "jsonl", "csv"], default=None,
                   help="what to print without --output [text]")
    p.add_argument("--output", metavar="FILE", help="write the input rows with their predictions to FILE (.csv .tsv .jsonl "
                   ".parquet), written in chunks and renamed into place when complete; - streams JSONL to standard output")
    p.add_argument("--output-format", dest="output_file_format", choices=list(streaming.OUTPUT_FORMATS),
                   help="format of --output; by default from its extension")
    p.add_argument("--chunk-size", type=int, default=streaming.DEFAULT_CHUNK_SIZE, metavar="ROWS",
                   help=f"rows read, classified and written at a time with --output [{streaming.DEFAULT_CHUNK_SIZE}]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar with --output")
    _add_runtime_flag(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="say which prediction path runs")
    add_input_flags(p, format_flag="--input-format", extra_formats=("parquet",))
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="the seed tutorial's shape walk-through for a config or a model",
                       description="Shapes of every step of the forward pass, computed on real tensors.")
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR", help="use this model's config")
    p.add_argument("--batch-size", type=int, default=32, help="batch size to show [32]")
    p.add_argument("--text-len", type=int, help="text length to show [max-text-len]")
    p.add_argument("--vocab-size", type=int, default=5000, help="vocabulary size without a model [5000]")
    p.add_argument("--config", metavar="FILE.json", help="config values as JSON")
    add_config_flags(p, skip=("batch_size",))
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("explain", help="which n-grams drove a prediction (exact, per class)",
                       description="Each filter's contribution to a class's logit, on the n-gram that won its max-pool. "
                                   "With --input FILE: the n-grams that most often drive each class over a corpus.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--input", metavar="FILE", help="corpus mode: a file of texts; - reads standard input")
    p.add_argument("--class", dest="class_label", metavar="LABEL", help="class to explain [the predicted one]")
    p.add_argument("--top-ngrams", type=int, metavar="N", help="n-grams to list per text [5], per class with --input [20]")
    p.add_argument("--format", dest="output_format", choices=["text", "json"], default="text", help="output format [text]")
    add_input_flags(p, format_flag="--input-format")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="write the model as an ONNX graph, for textcnn.runtime (no PyTorch)",
                       description="Export MODEL_DIR's model to ONNX (token ids -> logits, any batch size and length), "
                                   "into the model directory by default. Needs: pip install 'textcnn[onnx]'")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="graph format [onnx]")
    p.add_argument("--out", metavar="FILE", help="where to write the graph [MODEL_DIR/model.onnx, or model.int8.onnx]")
    p.add_argument("--int8", action="store_true", help="quantize the weights to int8 (dynamic quantization)")
    p.set_defaults(func=cmd_export)

    from .server import add_serve_flags

    p = sub.add_parser("serve", help="a REST server and web page for a model",
                       description="Serve MODEL_DIR over HTTP: /v1/predict, /v1/explain, /v1/health, /v1/metadata, "
                                   "the API docs at /docs and a web page at /. Needs: pip install 'textcnn[serve]'")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    _add_runtime_flag(p)
    add_serve_flags(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TextCNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"error: {e.strerror or e}: '{e.filename}'. Check the path and permissions.", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - bad input never gets here (it raises TextCNNError): a bug
        if os.environ.get("TEXTCNN_TRACEBACK"):
            raise
        print(f"error: unexpected {type(e).__name__}: {' '.join(str(e).split())}. This is a bug in textcnn {__version__}, please report it "
              "with the command you ran (TEXTCNN_TRACEBACK=1 shows the traceback).", file=sys.stderr)
        return EXIT_BUG
