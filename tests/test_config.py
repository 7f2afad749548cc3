import dataclasses

import pytest

from textcnn import ConfigError, TextCNNClassifier, TextCNNConfig
from textcnn.cli import build_parser, flag


def test_defaults_are_valid_and_round_trip():
    cfg = TextCNNConfig()
    assert TextCNNConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["window_sizes"] is None  # resolved from the tokenizer at fit time
    explicit = TextCNNConfig(window_sizes=[2, 3])
    assert explicit.window_sizes == (2, 3) and TextCNNConfig.from_dict(explicit.to_dict()) == explicit


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dropout_rate", 1.5, r"The 'dropout_rate' parameter must be a float in \[0, 1\). Got 1.5 instead."),
        ("embedding_size", 0, r"The 'embedding_size' parameter must be None or an int >= 1. Got 0 instead."),
        ("window_sizes", (), r"'window_sizes' parameter must be None or a non-empty list of ints"),
        ("embedding_mode", "dynamic", r"'embedding_mode' parameter must be one of 'rand', 'static'"),
        ("num_class", 1, r"'num_class' parameter must be None or an int >= 2. Got 1"),
        ("learning_rate", -1.0, r"'learning_rate' parameter must be None or a float > 0"),
        ("patience", -1, r"'patience' parameter must be an int >= 0"),
        ("device", "tpu", r"'device' parameter must be one of 'auto', 'cpu', 'cuda'"),
        ("max_norm", 0, r"'max_norm' parameter must be None or a float > 0"),
        ("class_weight", "auto", r"'class_weight' parameter must be one of None, 'balanced'"),
        ("dev_fraction", 1.0, r"'dev_fraction' parameter must be a float in \(0, 1\)"),
        ("max_vocab_size", 0, r"'max_vocab_size' parameter must be None or an int >= 1"),
        ("label_sep", "", r"'label_sep' parameter must be a non-empty string"),
        ("tokenizer", "", r"'tokenizer' parameter must be a tokenizer name"),
        ("seed", 1.5, r"'seed' parameter must be an int"),
        ("embedding_lr_scale", 0, r"'embedding_lr_scale' parameter must be None or a float > 0. Got 0"),
        ("vector_vocab", -1, r"'vector_vocab' parameter must be None or an int >= 0. Got -1"),
    ],
)
def test_bad_values_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TextCNNConfig(**{field: value})


def test_static_modes_need_vectors_and_rand_refuses_them():
    with pytest.raises(ConfigError, match="needs pretrained vectors"):
        TextCNNConfig(embedding_mode="static")
    with pytest.raises(ConfigError, match="random initialisation, but embeddings were given"):
        TextCNNConfig(embedding_mode="rand", embeddings="vectors.txt")
    with pytest.raises(ConfigError, match=r"vector_vocab=10 adds words from pretrained vectors, but none were given"):
        TextCNNConfig(vector_vocab=10)
    TextCNNConfig(vector_vocab=0)  # 0 and None (the default) need no vectors


def test_unknown_key_suggests_closest_name():
    with pytest.raises(ConfigError, match="Unknown parameter 'dropout'. Did you mean 'dropout_rate'"):
        TextCNNConfig.from_dict({"dropout": 0.1})
    with pytest.raises(ConfigError, match="Unknown parameter 'embedding_dim'. Did you mean 'embedding_size'"):
        TextCNNClassifier().set_params(embedding_dim=3)


def test_names_agree_in_python_config_and_cli():
    """One name per setting: the config field, the estimator parameter and the kebab-case flag."""
    fields = TextCNNConfig.field_names()
    params = set(TextCNNClassifier().get_params()) - {"verbose"}
    assert params == set(fields)
    defaults = TextCNNConfig()
    assert all(getattr(TextCNNClassifier(), f) == getattr(defaults, f) for f in fields)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {opt for action in train._actions for opt in action.option_strings}
    assert {flag(f) for f in fields} <= flags


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TextCNNConfig().epochs = 3


def test_window_sizes_flag_takes_a_list_or_none():
    parse = build_parser().parse_args
    assert parse(["train", "t.csv", "--out", "m", "--window-sizes", "2,3"]).window_sizes == (2, 3)
    assert parse(["train", "t.csv", "--out", "m", "--window-sizes", "none"]).window_sizes is None  # by tokenizer
