"""Distillation recipe experiments (issue 11), chosen on dev, seed 0: the script as it was run.

    python benchmarks/distill_dev.py mr plain plain_tv d10_tv d10r_tv d10r   # DATA_DIR, WORK_DIR: env, see below

Trains (or reuses) one ``--encoder minilm-l6`` teacher (seed 0) on DATASET, caches its logits over the
train set plus augmented copies, then trains each VARIANT's student on them (one line per variant to
``results/distill-dev.jsonl``): ``plain`` (labels only), ``_tv`` (the student starts from static vectors
distilled from the teacher's encoder: each word alone through it, mean of its pieces' states, PCA to
128, scaled to std 0.3), ``d10`` (10 augmented copies: word dropout and n-gram sampling), ``d10r`` (also
word replacement 0.15 by one of the word's 10 nearest words in those vectors). The product's
``textcnn.distill`` implements d10r_tv (its word lists differ in detail: neighbours for words of letters only).
Run with OMP_NUM_THREADS=1 to leave a core to other work, as it was.
"""
import csv, json, os, sys, time
from pathlib import Path
import numpy as np
import torch

import textcnn
from textcnn import TextCNNClassifier
from textcnn.distill import augment, soft_labels
from textcnn.labels import label_targets
from textcnn.encoder import load_encoder

name = sys.argv[1]
HERE = Path(__file__).resolve().parent
D = Path(os.environ.get("DATA_DIR", HERE.parent.parent / "shared" / "datasets")) / name
W = Path(os.environ.get("WORK_DIR", "/tmp/textcnn-distill-dev")) / name
W.mkdir(parents=True, exist_ok=True)

def read(split):
    with open(D / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]

(tr_x, tr_y), (dv_x, dv_y), (te_x, te_y) = read("train"), read("dev"), read("test")
log = lambda *a: print(time.strftime("%H:%M:%S"), *a, flush=True)

tdir = W / "teacher"
if not (tdir / "config.json").exists():
    t0 = time.time()
    teacher = TextCNNClassifier(encoder="minilm-l6", seed=0, verbose=0, device="cpu")
    teacher.fit(tr_x, tr_y, validation_data=(dv_x, dv_y))
    teacher.save(tdir)
    log("teacher trained", time.time() - t0, "dev", teacher.score(dv_x, dv_y), "test", teacher.score(te_x, te_y))
teacher = textcnn.load(tdir)

def neighbours(k=10):
    f = W / f"nn{k}.json"
    if f.exists():
        return json.loads(f.read_text())
    teacher_vectors()
    v = np.load(W / "tv128.npy"); words = (W / "tv128.vocab.txt").read_text(encoding="utf-8").split("\n")[:len(v)]
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    from textcnn.tokenizers import make_tokenizer
    wt = make_tokenizer("word")
    train_words = sorted({w.lower() for t in tr_x for w in wt.tokenize(t)})
    index = {w: i for i, w in enumerate(words)}
    out = {}
    for s0 in range(0, len(train_words), 2000):
        chunk = [w for w in train_words[s0:s0 + 2000] if w in index and w.isalpha()]
        sims = v[[index[w] for w in chunk]] @ v.T
        top = np.argpartition(-sims, k + 1, axis=1)[:, :k + 1]
        for w, row in zip(chunk, top):
            out[w] = [words[j] for j in row if words[j] != w][:k]
    f.write_text(json.dumps(out))
    return out

def augment_replace(texts, copies, seed, p_drop=0.1, p_rep=0.15, p_ngram=0.25, max_n=5):
    nn = neighbours()
    rng = np.random.default_rng(seed)
    seen, out = set(texts), []
    for text in texts:
        words = text.split()
        for _ in range(copies):
            kept = []
            for w, r, c in zip(words, rng.random(len(words)), rng.integers(0, 10, len(words))):
                if r < p_drop:
                    continue
                if r < p_drop + p_rep and w.lower() in nn and nn[w.lower()]:
                    cands = nn[w.lower()]
                    w = cands[int(c) % len(cands)]
                kept.append(w)
            kept = kept or words
            if len(kept) > 1 and rng.random() < p_ngram:
                n = int(rng.integers(1, min(max_n, len(kept)) + 1))
                st = int(rng.integers(0, len(kept) - n + 1))
                kept = kept[st:st + n]
            new = " ".join(kept)
            if new and new not in seen:
                seen.add(new); out.append(new)
    return out

def transfer(copies, seed=0, replace=False):
    f = W / f"logits-c{copies}{'r' if replace else ''}-s{seed}.npz"
    if f.exists():
        z = np.load(f, allow_pickle=False)
        return json.loads(str(z["texts"])), z["logits"]
    t0 = time.time()
    texts = tr_x + (augment_replace(tr_x, copies, seed) if replace else augment(tr_x, copies, seed=seed))
    logits = teacher.decision_function(texts)
    np.savez(f, texts=json.dumps(texts), logits=logits)
    log("teacher labelled", len(texts), time.time() - t0)
    return texts, logits

def teacher_vectors(dims=128, scale=0.3):
    f = W / f"tv{dims}.npy"
    if f.exists():
        return str(f)
    enc = load_encoder("minilm-l6")
    from textcnn.tokenizers import make_tokenizer
    wt = make_tokenizer("word")
    words = sorted({w.lower() for t in tr_x for w in wt.tokenize(t)})
    vocab = enc._backend.get_vocab()
    extra = sorted(w for w in vocab if w.isalpha() and not w.startswith("##") and w not in set(words))
    words = words + extra
    t0 = time.time()
    pieces = [p or [enc.unk_id] for p in enc.encode(words, 16).pieces]
    out = np.zeros((len(words), enc.hidden_size), np.float32)
    order = np.argsort([len(p) for p in pieces], kind="stable")
    for s in range(0, len(words), 512):
        rows = order[s:s + 512]
        batch = [pieces[i] for i in rows]
        width = max(map(len, batch))
        st = enc.states(batch, width)  # (B, w, H)
        n = torch.tensor([len(p) for p in batch]).unsqueeze(1)
        out[rows] = (st.sum(1) / n).numpy()
    log("word states", len(words), time.time() - t0)
    x = out - out.mean(0)
    u, sv, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:dims].T
    y = (y / y.std() * scale).astype(np.float32)
    np.save(f, y)
    (W / f"tv{dims}.vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return str(f)

def student(params, copies, alpha=0.5, temperature=1.0, tag="", replace=False):
    t0 = time.time()
    clf = TextCNNClassifier(seed=0, verbose=0, device="cpu", **params)
    if copies is None:
        clf.fit(tr_x, tr_y, validation_data=(dv_x, dv_y))
    else:
        texts, logits = transfer(copies, replace=replace)
        proba = soft_labels(logits, temperature)
        one_hot = np.eye(len(teacher.classes_), dtype=np.float32)[label_targets(tr_y, teacher.classes_, False, "training")]
        n = len(tr_x)
        proba[:n] = alpha * proba[:n] + (1 - alpha) * one_hot
        guessed = [teacher.classes_[i] for i in proba[n:].argmax(1)]
        clf.fit(texts, tr_y + guessed, validation_data=(dv_x, dv_y), soft_targets=(list(teacher.classes_), proba))
    row = {"variant": tag, "dev": clf.score(dv_x, dv_y) * 100, "test": clf.score(te_x, te_y) * 100,
           "best_epoch": clf.best_epoch_, "seconds": round(time.time() - t0), "params": params, "copies": copies,
           "alpha": alpha, "T": temperature}
    log(json.dumps(row))
    with open(HERE / "results" / "distill-dev.jsonl", "a") as f:
        f.write(json.dumps({"dataset": name, "seed": 0, **row}) + "\n")

V = {
    "plain": lambda: student({}, None, tag="plain"),
    "plain_tv": lambda: student({"embeddings": teacher_vectors()}, None, tag="plain_tv"),
    "d10": lambda: student({}, 10, tag="d10"),
    "d10_tv": lambda: student({"embeddings": teacher_vectors()}, 10, tag="d10_tv"),
    "d10_tv_a1": lambda: student({"embeddings": teacher_vectors()}, 10, alpha=1.0, tag="d10_tv_a1"),
    "d10_tv_T2": lambda: student({"embeddings": teacher_vectors()}, 10, temperature=2.0, tag="d10_tv_T2"),
    "d10_tv_e5": lambda: student({"embeddings": teacher_vectors(), "epochs": 5}, 10, tag="d10_tv_e5"),
    "d10r_tv": lambda: student({"embeddings": teacher_vectors()}, 10, tag="d10r_tv", replace=True),
    "d10r": lambda: student({}, 10, tag="d10r", replace=True),
    "d3_tv": lambda: student({"embeddings": teacher_vectors()}, 3, tag="d3_tv"),
}
for v in sys.argv[2:]:
    V[v]()
