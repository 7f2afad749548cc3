from textcnn.vocab import PAD_ID, UNK_ID, Vocab


def test_build_orders_by_frequency_and_applies_limits():
    docs = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    v = Vocab.build(docs)
    assert v.itos[:5] == ["<pad>", "<unk>", "a", "b", "c"]
    assert "d" in v
    assert "d" not in Vocab.build(docs, min_freq=2)
    assert len(Vocab.build(docs, max_size=4)) == 4


def test_encode_maps_unknown_tokens_to_unk_and_round_trips():
    v = Vocab.build([["x", "y"]])
    assert v.encode(["y", "zzz"]) == [v.stoi["y"], UNK_ID]
    assert PAD_ID == 0
    assert Vocab.from_json(v.to_json()).itos == v.itos


def test_extended_appends_new_tokens_in_order_within_the_size_limit():
    v = Vocab.build([["a", "b", "a"]])
    w = v.extended(["c", "a", "d", "c", "e"], max_size=6)
    assert w.itos == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert w.counts == v.counts == {"a": 2, "b": 1}
    assert v.itos == ["<pad>", "<unk>", "a", "b"]  # the original is unchanged
    assert v.extended(["c"]).itos[-1] == "c"


def test_a_vocabulary_of_one_off_words_warns_and_names_the_setting():
    import pytest

    from textcnn import TextCNNClassifier
    from textcnn.vocab import vocabulary_warning

    texts = [f"word{i} other{i} thing{i}" for i in range(40)]  # each word seen once (36 train texts): min_freq=2 keeps none
    with pytest.warns(UserWarning, match=r"The vocabulary keeps 0 of the 108 distinct training tokens, covering 0% "
                                         r"of the training tokens.*lower --min-freq \(min_freq=2 .*--min-freq 1 keeps"):
        TextCNNClassifier(embedding_size=8, feature_size=4, window_sizes=(1,), epochs=1, verbose=0).fit(
            texts, ["a", "b"] * 20)
    v = Vocab.build([["a", "b", "c", "a", "d"]], max_size=3)  # keeps "a": 40% of the tokens
    assert "raise --max-vocab-size (max_vocab_size=3)" in vocabulary_warning(v, v.seen, 1, 3)
    v = Vocab.build([["a", "a", "b", "b", "c"]], min_freq=2)
    assert vocabulary_warning(v, v.seen, 2, None) is None  # 80% of the tokens kept: no warning
