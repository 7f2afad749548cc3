"""Terminal views of explanations (rich): the text coloured by contribution, and corpus n-gram tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text


def pick_class(exp: dict, label: str | None) -> dict:
    """The class explanation to show: ``label``, else the predicted (most probable) class."""
    if label is None:
        label = str(exp["prediction"]["top_k"][0]["label"])
    return next(c for c in exp["classes"] if str(c["label"]) == str(label))


def token_style(score: float, scale: float) -> str:
    """A background from red (against the class) through none to green (for it)."""
    if scale <= 0 or score == 0:
        return ""
    a = min(1.0, abs(score) / scale)
    base = (46, 160, 67) if score > 0 else (207, 34, 46)
    r, g, b = (round(255 + (c - 255) * a) for c in base)
    fg = "white" if a > 0.55 else "black"
    return f"{fg} on rgb({r},{g},{b})"


def coloured_text(exp: dict, cls: dict) -> Text:
    """The original text, each used token on a background by its score; whitespace kept as typed."""
    text, tokens, scores = exp["text"], exp["tokens"], cls["token_scores"]
    scale = max((abs(s) for s in scores), default=0.0)
    out = Text()
    pos = 0
    for tok, score in zip(tokens, scores):
        out.append(text[pos:tok["start"]])
        out.append(text[tok["start"]:tok["end"]], style=token_style(score, scale))
        pos = tok["end"]
    out.append(text[pos:], style="dim")  # cut by max_text_len, or trailing space
    return out


def render_explanation(console: Console, exp: dict, label: str | None, top: int) -> None:
    """Prediction, the coloured text and the top n-grams for one class."""
    cls = pick_class(exp, label)
    pred = exp["prediction"]
    shown = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in pred["top_k"][:3])
    console.print(Text.assemble(("predicted: ", "bold"), shown))
    attributed = cls["logit"] - cls["bias"]
    channel = sum(g["contribution"] for g in cls.get("channel_ngrams", []))
    parts = (f"n-grams {attributed:+.3f}" if "channel_ngrams" not in cls else
             f"convolution n-grams {attributed - channel:+.3f} + n-gram channel {channel:+.3f}")
    console.print(Text.assemble(
        ("explaining: ", "bold"), (str(cls["label"]), "bold cyan"),
        f"  logit {cls['logit']:+.3f} = bias {cls['bias']:+.3f} + {parts}"))
    console.print(coloured_text(exp, cls))
    if exp["truncated"]:
        console.print(f"[dim](cut to the first {len(exp['tokens'])} of {exp['n_tokens']} tokens: max_text_len)[/dim]")
    console.print(ngram_table(cls["ngrams"], top, "filters", lambda g: str(g["filters"])))
    if "channel_ngrams" in cls:  # each n-gram's share of the n-gram channel's mean bag
        console.print(ngram_table(cls["channel_ngrams"], top, "n-gram channel", lambda g: "bag"))
    console.print()


def ngram_table(ngrams: list[dict], top: int, source: str, source_of) -> Table:
    """The ``top`` n-grams for the class and up to 3 most against it, with their contributions."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("contribution", justify="right")
    table.add_column(source, justify="right")
    table.add_column("n-gram")
    for g in ngrams[:top] + [g for g in ngrams[-top:] if g["contribution"] < 0 and g not in ngrams[:top]][-3:]:
        colour = "green" if g["contribution"] > 0 else "red"
        table.add_row(f"[{colour}]{g['contribution']:+.3f}[/{colour}]", source_of(g), g["text"])
    return table


def render_corpus(console: Console, tops: dict[str, list[dict]], n_texts: int) -> None:
    """Per class: the n-grams that most often drive its predictions."""
    console.print(f"[bold]n-grams that most often drive each predicted class[/bold] ({n_texts} texts)")
    for label, rows in tops.items():
        table = Table(title=f"{label}", title_justify="left", title_style="bold cyan", box=None, pad_edge=False)
        table.add_column("n-gram")
        table.add_column("texts", justify="right")
        table.add_column("mean contribution", justify="right")
        for row in rows:
            table.add_row(row["ngram"], str(row["texts"]), f"{row['mean_contribution']:+.3f}")
        if not rows:
            table.add_row("[dim](never predicted)[/dim]", "", "")
        console.print(table)
        console.print()
