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
