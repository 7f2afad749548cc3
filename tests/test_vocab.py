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
