"""One self-contained HTML page from a replay result (`gateway.archives.replay.result`).

Opened on air-gapped admin machines, so nothing is fetched: no scripts at all, inline CSS, plots
as inline SVG. Subjects, summaries and sources come from the mail itself -- attacker-controlled
-- so every piece of text goes through `_e` (html.escape), and a strict Content-Security-Policy
forbids anything but inline style and data: images even if an escape were ever missed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)
_SHORT = {"quarantine": "quar."}  # threshold names drawn over narrow histograms
SWEEP_ROWS = 60  # the full sweep is in --json; the page shows a readable sample

_COLOURS = {
    "phish": "#c0392b",
    "spam": "#e67e22",
    "ham": "#2e86c1",
    "malformed": "#7f8c8d",
}
_FALLBACK = ("#8e44ad", "#16a085", "#b7950b", "#34495e", "#d35400", "#1abc9c")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;
vertical-align:top}th{background:#f4f6f7;text-align:left}td.n{text-align:right;
font-variant-numeric:tabular-nums}
.note{background:#fdebd0;border:1px solid #e59866;padding:.5em 1em}
.muted{color:#777}.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}
figcaption{font-weight:600}code{font-size:.92em}.rules td:nth-child(2){max-width:28em}
details{margin:.5em 0}summary{cursor:pointer}.ok{color:#1e8449}.bad{color:#c0392b}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{100 * float(value):.2f} %"
    if isinstance(value, float):
        return f"{value:.2f}"
    return _e(value)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def colour(label: str, index: int = 0) -> str:
    return _COLOURS.get(label, _FALLBACK[index % len(_FALLBACK)])


# --------------------------------------------------------------------------- tables


def _table(
    head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", numeric: Sequence[int] = ()
) -> str:
    """Rows are already-escaped HTML cells; `numeric` are the column indexes aligned right."""
    out = [f'<table class="{_e(cls)}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = [
            f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _metrics_table(doc: dict[str, Any]) -> str:
    columns = [("configured", doc)]
    if "compare" in doc:
        columns.append(("compare-config", doc["compare"]))
    keys = [
        ("positives", False),
        ("negatives", False),
        ("tp", False),
        ("fp", False),
        ("fn", False),
        ("tn", False),
        ("precision", True),
        ("recall", True),
        ("f1", True),
        ("fpr", True),
        ("fpr_upper95", True),
        ("recall_lower95", True),
    ]
    rows = []
    for key, pct in keys:
        name = _FIGURE_NAMES.get(key, key)
        rows.append([_e(name)] + [_num(col["metrics"].get(key), pct) for _, col in columns])
    thr = [_e("thresholds (tag/quarantine/reject)")]
    for _, col in columns:
        t = col.get("thresholds") or {}
        thr.append(_e(" / ".join(_num(t.get(k)) for k in ("tag", "quarantine", "reject"))))
    rows.append(thr)
    head = ["figure"] + [name for name, _ in columns]
    return _table(head, rows, "metrics", numeric=range(1, len(columns) + 1))


_FIGURE_NAMES = {
    "fpr": "false-positive rate",
    "fpr_upper95": "false-positive rate, 95 % upper bound",
    "recall_lower95": "recall, 95 % lower bound",
}


def _confusion_table(m: dict[str, Any]) -> str:
    """The 2 x 2 table: what the labels say against what brandgate did."""
    head = ["", "flagged (tag or worse)", "passed", "total"]
    rows = [
        [
            "<b>positive</b> (should be flagged)",
            f"TP {_num(m['tp'])}",
            f"FN {_num(m['fn'])}",
            _num(m["positives"]),
        ],
        [
            "<b>negative</b> (should pass)",
            f"FP {_num(m['fp'])}",
            f"TN {_num(m['tn'])}",
            _num(m["negatives"]),
        ],
    ]
    return _table(head, rows, "confusion", numeric=(1, 2, 3))


def _brand_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No messages.</p>"
    head = [
        "brand claimed",
        "positives",
        "flagged",
        "recall",
        "negatives",
        "flagged (FP)",
        "other",
        "other flagged",
    ]
    body = [
        [
            _e(r["brand"]),
            _num(r["positive"]),
            _num(r["positive_flagged"]),
            _num(r["recall"], True),
            _num(r["negative"]),
            _num(r["negative_flagged"]),
            _num(r["other"]),
            _num(r["other_flagged"]),
        ]
        for r in rows
    ]
    return _table(head, body, "brands", numeric=range(1, len(head)))


def _brands(rows: list[dict[str, Any]], shown: int = 12) -> str:
    """The brands with the most mail in view, the rest one click away."""
    if len(rows) <= shown:
        return _brand_table(rows)
    return (
        _brand_table(rows[:shown])
        + f"<details><summary>{len(rows) - shown} more brands</summary>"
        + _brand_table(rows[shown:])
        + "</details>"
    )


def _per_label_table(per_label: dict[str, dict[str, Any]]) -> str:
    head = ["label", "kind", "total", "pass", "tag", "quarantine", "reject", "flagged", "errors"]
    rows = []
    for label, row in per_label.items():
        rows.append([_e(label), _e(row["kind"])] + [_num(row.get(k)) for k in head[2:]])
    return _table(head, rows, "per-label", numeric=range(2, len(head)))


def _rule_table(rules: list[dict[str, Any]]) -> str:
    head = [
        "rule",
        "description",
        "hits",
        "positives",
        "% pos",
        "negatives",
        "% neg",
        "other",
        "S/O",
        "score sum",
        "share",
    ]
    rows = []
    for r in rules:
        rows.append(
            [
                f"<code>{_e(r['rule'])}</code>",
                _e(r["description"]),
                _num(r["hits"]),
                _num(r["hits_positive"]),
                f"{r['pct_positive']:.1f}",
                _num(r["hits_negative"]),
                f"{r['pct_negative']:.1f}",
                _num(r["hits_other"]),
                "–" if r["so"] is None else f"{r['so']:.3f}",
                f"{r['score_sum']:.1f}",
                f"{100 * r['score_share']:.1f} %",
            ]
        )
    return _table(head, rows, "rules", numeric=range(2, len(head)))


def _message_list(title: str, block: dict[str, Any], open_: bool = False) -> str:
    head = ["source", "label", "verdict", "score", "brand", "summary", "rules"]
    rows = []
    for m in sorted(block["shown"], key=lambda m: -(m.get("score") or 0.0)):
        rows.append(
            [
                f"<code>{_e(m['source'])}</code>",
                _e(m["label"]),
                _e(m["verdict"]),
                _num(m["score"]),
                _e(m["brand"]),
                _e(m["summary"]),
                _e(" ".join(m["rules"])),
            ]
        )
    more = f" ({block['omitted']} more not listed)" if block.get("omitted") else ""
    summ = f"{_e(title)}: {block['total']}{_e(more)}"
    body = _table(head, rows, "messages", numeric=(3,)) if rows else "<p>None.</p>"
    return f"<details{' open' if open_ else ''}><summary>{summ}</summary>{body}</details>"


def _changed_list(block: dict[str, Any]) -> str:
    head = ["source", "label", "before", "after"]
    rows = []
    for m in block["shown"]:
        cells = [f"<code>{_e(m['source'])}</code>", _e(m["label"])]
        for side in (m["before"], m["after"]):
            cells.append(
                f"<b>{_e(side['verdict'])}</b> {_num(side['score'])}<br>{_e(side['summary'])}"
                f"<br><code>{_e(' '.join(side['rules']))}</code>"
            )
        rows.append(cells)
    trans = ", ".join(f"{_e(k)}: {v}" for k, v in block["transitions"].items()) or "none"
    more = f" ({block['omitted']} more not listed)" if block.get("omitted") else ""
    return (
        f"<p>Verdicts changed: <b>{block['total']}</b>{_e(more)}; transitions: {trans}; "
        f"scores changed: {block['score_changed']}.</p>"
        + (_table(head, rows, "changed") if rows else "")
    )


def _sweep_table(sweep: dict[str, Any]) -> str:
    points = sweep["points"]
    marks: dict[float, list[str]] = {}
    for key, name in (
        ("recommended_tag", "recommended tag"),
        ("recommended_quarantine", "recommended quarantine"),
        ("configured_tag", "configured tag"),
        ("configured_quarantine", "configured quarantine"),
    ):
        if sweep.get(key):
            marks.setdefault(sweep[key]["threshold"], []).append(name)
    step = max(1, len(points) // SWEEP_ROWS)
    keep = [p for i, p in enumerate(points) if i % step == 0 or p["threshold"] in marks]
    head = ["threshold", "FP", "FN", "FPR", "recall", "precision", ""]
    rows = [
        [
            _num(float(p["threshold"])),
            _num(p["fp"]),
            _num(p["fn"]),
            _num(p["fpr"], True),
            _num(p["recall"], True),
            _num(p["precision"], True),
            _e(", ".join(marks.get(p["threshold"], []))),
        ]
        for p in keep
    ]
    note = f"{len(points)} candidate thresholds"
    if step > 1:
        note += f"; every {ordinal(step)} shown here, all of them in the JSON output"
    return f"<p class=muted>{_e(note)}.</p>" + _table(head, rows, "sweep", numeric=range(6))


def _recommendation(sweep: dict[str, Any]) -> str:
    def line(name: str, target: float, point: dict[str, Any] | None) -> str:
        if point is None:
            return (
                f"<li>{_e(name)}: no threshold reaches a false-positive rate of "
                f"{_num(target, True)} (or there are no negatives).</li>"
            )
        upper = point.get("fpr_upper95")
        caveat = ""
        if upper is not None and upper > target:
            # With n negatives and no FP, the rate is only known to be below about 3/n.
            need = math.ceil(-math.log(0.05) / target) if target > 0 else None
            caveat = (
                f" <b>Not shown to meet the target:</b> with {point['fp']} false "
                f"{'positive' if point['fp'] == 1 else 'positives'} in {point['negatives']} "
                f"negatives the false-positive rate is only known to be below "
                f"{_num(upper, True)} (95 % confidence)"
                + (
                    f"; about {need} negatives are needed to show {_num(target, True)}"
                    if need
                    else ""
                )
                + "."
            )
        return (
            f"<li>{_e(name)}: lowest threshold with FPR ≤ {_num(target, True)} is "
            f"<b>{_num(float(point['threshold']))}</b>: FP {point['fp']} in "
            f"{point['negatives']}, FN {point['fn']}, "
            f"recall {_num(point['recall'], True)}, "
            f"precision {_num(point['precision'], True)}; 95 % upper bound of the "
            f"false-positive rate {_num(upper, True)}.{caveat}</li>"
        )

    return (
        "<ul>"
        + line("tag", sweep["target_fpr"], sweep.get("recommended_tag"))
        + line("quarantine", sweep["target_fpr_quarantine"], sweep.get("recommended_quarantine"))
        + "</ul>"
    )


# --------------------------------------------------------------------------- SVG plots


def _svg_open(width: int, height: int, label: str, cls: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{_e(cls)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
    )


def histogram_svg(
    label: str, counts: list[int], low: float, width: float, thresholds: dict[str, float], idx: int
) -> str:
    """Bars of message counts per score bin for one label, with the threshold lines."""
    w, h, ml, mb, mt, mr = 360, 200, 38, 28, 8, 8
    pw, ph = w - ml - mr, h - mt - mb
    n = max(1, len(counts))
    top = max(counts) if counts and max(counts) > 0 else 1
    # Square-root heights: the zero-score bin of ham is often a hundred times taller than the
    # rest, which a linear scale would flatten to nothing.
    scale = math.sqrt(top)
    bw = pw / n
    out = [_svg_open(w, h, f"score histogram for {label}", "histogram")]
    out.append(f"<title>{_e(f'Scores of {label} messages')}</title>")
    out.append(
        f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" stroke="#999"/>'
        f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" stroke="#999"/>'
    )
    fill = colour(label, idx)
    for i, c in enumerate(counts):
        if c <= 0:
            continue
        bh = ph * math.sqrt(c) / scale
        x, y = ml + i * bw, mt + ph - bh
        lo = low + i * width
        out.append(
            f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 0.5):.1f}" '
            f'height="{bh:.1f}" fill="{fill}"><title>{_e(f"{lo:g} to <{lo + width:g}: {c}")}'
            "</title></rect>"
        )
    hi = low + n * width
    # Close thresholds on a wide score range would put their names on top of each other (and
    # over the count at the top of the axis): each name goes on the first free row.
    rows: list[list[tuple[float, float]]] = [[(ml - 4 - _text_width(str(top), 10), ml)]]
    for name, t in sorted(thresholds.items(), key=lambda kv: kv[1]):
        if low <= t <= hi:
            x = ml + pw * (t - low) / (hi - low)
            short = _SHORT.get(name, name)
            span = (x - 2 - _text_width(short, 9), x)
            row = _free_row(rows, span)
            out.append(
                f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#333" '
                f'stroke-dasharray="3,3"><title>{_e(f"{name} threshold {t:g}")}</title></line>'
                f'<text x="{x - 2:.1f}" y="{mt + 8 + 11 * row}" font-size="9" '
                f'text-anchor="end" fill="#333">{_e(short)}</text>'
            )
    out.append(
        f'<text x="{ml - 4}" y="{mt + 10}" font-size="10" text-anchor="end">{top}</text>'
        f'<text x="{ml - 4}" y="{mt + ph}" font-size="10" text-anchor="end">0</text>'
    )
    for i in range(0, n + 1, max(1, n // 8)):
        x = ml + i * bw
        out.append(
            f'<text x="{x:.1f}" y="{h - 14}" font-size="10" text-anchor="middle">'
            f"{low + i * width:g}</text>"
        )
    out.append(
        f'<text x="{ml + pw / 2:.1f}" y="{h - 2}" font-size="10" text-anchor="middle">score</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _text_width(text: str, size: float) -> float:
    """A generous width of SVG text (0.6 em a character: wider than most sans-serif text)."""
    return 0.6 * size * len(text)


def _free_row(rows: list[list[tuple[float, float]]], span: tuple[float, float]) -> int:
    """The first row in which the horizontal span (x0, x1) meets no other; it is taken."""
    for i, taken in enumerate(rows):
        if all(span[1] + 2 <= a or b + 2 <= span[0] for a, b in taken):
            taken.append(span)
            return i
    rows.append([span])
    return len(rows) - 1


def pr_curve_svg(points: list[dict[str, Any]], marks: dict[str, dict[str, Any] | None]) -> str:
    """Precision against recall over the threshold sweep, with the named operating points."""
    # The legend below the plot has one line per operating point: side by side, a long name
    # ran into the next one.
    shown_marks = [
        p for p in marks.values() if p and p["precision"] is not None and p["recall"] is not None
    ]
    w, m, line = 400, 42, 16
    pw, ph = w - 2 * m, 300 - 2 * m
    h = m + ph + 50 + line * max(0, len(shown_marks) - 1) + 8

    def xy(p: dict[str, Any]) -> tuple[float, float]:
        return m + pw * float(p["recall"]), m + ph * (1 - float(p["precision"]))

    out = [_svg_open(w, h, "precision/recall curve", "pr-curve")]
    out.append("<title>Precision / recall over all thresholds</title>")
    out.append(f'<rect x="{m}" y="{m}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for i in range(0, 11, 2):
        v = i / 10
        out.append(
            f'<text x="{m + pw * v:.1f}" y="{m + ph + 14}" font-size="10" '
            f'text-anchor="middle">{v:.1f}</text>'
            f'<text x="{m - 4}" y="{m + ph * (1 - v) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{v:.1f}</text>'
        )
    out.append(
        f'<text x="{m + pw / 2}" y="{m + ph + 28}" font-size="11" '
        'text-anchor="middle">recall</text>'
        f'<text x="12" y="{m + ph / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {m + ph / 2})">precision</text>'
    )
    usable = [p for p in points if p["precision"] is not None and p["recall"] is not None]
    if usable:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(p) for p in usable))
        out.append(f'<polyline points="{path}" fill="none" stroke="#2e86c1" stroke-width="2"/>')
    # The operating points are often on top of each other: each gets its own colour and
    # shape, named in a legend below the plot rather than in labels that would overlap.
    legend_y = m + ph + 50
    shown = 0
    for i, (name, p) in enumerate(marks.items()):
        if p is None or p["precision"] is None or p["recall"] is None:
            continue
        x, y = xy(p)
        fill = _MARK_COLOURS[i % len(_MARK_COLOURS)]
        tip = f"{name}: threshold {float(p['threshold']):g}"
        out.append(_marker(i, x, y, fill, tip))
        ly = legend_y + shown * line
        out.append(
            _marker(i, m + 5, ly - 4, fill, tip)
            + f'<text x="{m + 14:.1f}" y="{ly:.1f}" font-size="11">{_e(tip)}</text>'
        )
        shown += 1
    out.append("</svg>")
    return "".join(out)


_MARK_COLOURS = ("#c0392b", "#27ae60", "#8e44ad", "#d35400")


def _marker(i: int, x: float, y: float, fill: str, tip: str) -> str:
    title = f"<title>{_e(tip)}</title>"
    if i % 2 == 0:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}">{title}</circle>'
    # a diamond, so that two points at one place stay apart to the eye
    pts = f"{x:.1f},{y - 6:.1f} {x + 6:.1f},{y:.1f} {x:.1f},{y + 6:.1f} {x - 6:.1f},{y:.1f}"
    return f'<polygon points="{pts}" fill="none" stroke="{fill}" stroke-width="2">{title}</polygon>'


def _histograms(doc: dict[str, Any]) -> str:
    hist = doc["histogram"]
    figs = []
    ordered = [lb for lb in doc["per_label"] if lb in hist["counts"]]
    for i, label in enumerate(ordered):
        counts = hist["counts"][label]
        svg = histogram_svg(label, counts, hist["low"], hist["width"], doc["thresholds"], i)
        figs.append(f"<figure><figcaption>{_e(label)} ({sum(counts)})</figcaption>{svg}</figure>")
    if not figs:
        return "<p>No messages.</p>"
    note = "<p class=muted>Bar heights are proportional to the square root of the count.</p>"
    return note + '<div class="plots">' + "".join(figs) + "</div>"


# --------------------------------------------------------------------------- the page


def _paths(paths: list[str], shown: int = 5) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return " ".join(paths[:shown]) + more


def render(doc: dict[str, Any]) -> str:
    sweep = doc["sweep"]
    rate = f", {doc['rate']} messages/s" if doc.get("rate") else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="referrer" content="no-referrer">',
        # An empty inline icon, so that no browser goes looking for /favicon.ico.
        '<link rel="icon" href="data:,">',
        "<title>brandgate replay report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>brandgate replay</h1>",
        f'<p class="muted">{_e(doc["messages"])} messages from '
        f"<code>{_e(_paths(doc['paths']))}</code>; labels from <code>{_e(doc['labels']['from'])}"
        f"</code> (positive: {_e(', '.join(doc['labels']['positive']))}; negative: "
        f"{_e(', '.join(doc['labels']['negative']))}); config <code>"
        f"{_e(doc.get('config') or '(shipped)')}</code>; generated {_e(doc['generated'])}"
        f"{_e(rate)}.</p>",
    ]
    for note in doc.get("notes") or ([doc["note"]] if doc.get("note") else []):
        parts.append(f'<p class="note">{_e(note)}</p>')
    parts += [
        '<h2 id="metrics">Metrics at the configured thresholds</h2>',
        _confusion_table(doc["metrics"]),
        _metrics_table(doc),
        "<h2>Verdicts per label</h2>",
        _per_label_table(doc["per_label"]),
        '<h2 id="brands">Per brand claimed</h2>',
        _brands(doc.get("brands") or []),
        '<h2 id="histogram">Score histogram per label</h2>',
        _histograms(doc),
        '<h2 id="pr">Precision / recall</h2>',
        pr_curve_svg(
            sweep["points"],
            {
                "configured": sweep.get("configured_tag"),
                "recommended": sweep.get("recommended_tag"),
            },
        ),
        "<h2>Threshold sweep</h2>",
        _recommendation(sweep),
        "<details><summary>Sweep table</summary>" + _sweep_table(sweep) + "</details>",
        '<h2 id="rules">Rules</h2>',
        "<p class=muted>S/O = % of positives hit / (% of positives + % of negatives): "
        "1.0 fires only on positives, 0.0 only on negatives.</p>",
        _rule_table(doc["rules"]),
        "<p>Never fired: "
        + (", ".join(f"<code>{_e(r)}</code>" for r in doc["rules_never_fired"]) or "none")
        + "</p>",
        '<h2 id="errors">False positives and false negatives</h2>',
        _message_list("False positives", doc["false_positives"], open_=True),
        _message_list("False negatives", doc["false_negatives"]),
    ]
    skipped = doc.get("not_mail") or {}
    if skipped.get("total"):
        rows = [
            [f"<code>{_e(x['source'])}</code>", _e(x["label"]), _e(x["why"])]
            for x in skipped["shown"]
        ]
        parts += [
            f'<h2 id="not-mail">Not mail, not scored: {skipped["total"]}</h2>',
            _table(["source", "label", "why"], rows, "not-mail"),
        ]
    if "compare" in doc:
        cmp = doc["compare"]
        parts += [
            f'<h2 id="compare">Config diff: <code>{_e(cmp["config"])}</code></h2>',
            _changed_list(cmp["changed"]),
            "<h3>Verdicts per label under the compared config</h3>",
            _per_label_table(cmp["per_label"]),
            _recommendation(cmp["sweep"]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
