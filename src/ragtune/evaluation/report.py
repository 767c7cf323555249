"""report.html: one self-contained file (inline CSS, SVG charts and JS), written from Results."""

from __future__ import annotations

import html
import math
from pathlib import Path

from .compare import Results
from .metrics import METRIC, METRICS

COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
e = html.escape


def _val(a: dict, key: str):
    v = a.get(key)
    return v["mean"] if isinstance(v, dict) else v


def _cell(a: dict, key: str) -> str:
    return METRIC[key].format(a.get(key), interval=True)


def bar_chart(title: str, names: list[str], values: list, width: int = 360, pct: bool = False) -> str:
    """Bars with interval whiskers; values are floats or {mean, low, high}."""
    h, pad, bw = 180, 30, max(12, (width - 60) // max(len(names), 1) - 14)
    vals = [(v["mean"], v["low"], v["high"]) if isinstance(v, dict) else (v, None, None) for v in values]
    scale = 100 if pct else 1
    top = max([((hi if hi is not None else m) or 0) * scale for m, lo, hi in vals if m is not None] + [1e-9])
    parts = [
        f'<svg class="chart" width="{width}" height="{h + 60}" role="img" aria-label="{e(title)}"><text x="4" y="14" class="ct">{e(title)}</text>'
    ]
    for i, (name, (m, lo, hi)) in enumerate(zip(names, vals)):
        x = 40 + i * (bw + 14)
        if m is None or (isinstance(m, float) and math.isnan(m)):
            parts.append(f'<text x="{x}" y="{h}" class="cl">n/a</text>')
        else:
            bh = (m * scale) / top * (h - pad)
            parts.append(
                f'<rect x="{x}" y="{h - bh:.1f}" width="{bw}" height="{bh:.1f}" fill="{COLOURS[i % 8]}"><title>{e(name)}: {m * scale:.2f}</title></rect>'
            )
            parts.append(f'<text x="{x}" y="{h - bh - 4:.1f}" class="cl">{m * scale:.1f}</text>')
            if lo is not None:
                y1, y2 = h - lo * scale / top * (h - pad), h - hi * scale / top * (h - pad)
                cx = x + bw / 2
                parts.append(
                    f'<line x1="{cx}" x2="{cx}" y1="{y1:.1f}" y2="{y2:.1f}" class="wh"/><line x1="{cx - 5}" x2="{cx + 5}" y1="{y2:.1f}" y2="{y2:.1f}" class="wh"/><line x1="{cx - 5}" x2="{cx + 5}" y1="{y1:.1f}" y2="{y1:.1f}" class="wh"/>'
                )
        parts.append(f'<text x="{x}" y="{h + 16}" class="cl">{e(name)}</text>')
    parts.append(f'<line x1="36" x2="{width}" y1="{h}" y2="{h}" class="ax"/></svg>')
    return "".join(parts)


def scatter(names: list[str], xs: list[float], ys: list[float], xlabel: str, ylabel: str, width: int = 420) -> str:
    h = 240
    xmax, ymax = max(xs + [1e-9]) * 1.15, max(ys + [1e-9]) * 1.15
    parts = [
        f'<svg class="chart" width="{width}" height="{h + 40}" role="img" aria-label="accuracy against cost"><text x="4" y="14" class="ct">{e(ylabel)} against {e(xlabel)}</text>'
    ]
    parts.append(
        f'<line x1="40" x2="{width - 10}" y1="{h}" y2="{h}" class="ax"/><line x1="40" x2="40" y1="20" y2="{h}" class="ax"/>'
    )
    for i, (n, x, y) in enumerate(zip(names, xs, ys)):
        px, py = 40 + x / xmax * (width - 60), h - y / ymax * (h - 30)
        parts.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{COLOURS[i % 8]}"><title>{e(n)}: {y:.1f} at {x:.3g}</title></circle><text x="{px + 8:.1f}" y="{py - 6:.1f}" class="cl">{e(n)}</text>'
        )
    parts.append(f'<text x="{width // 2}" y="{h + 30}" class="cl">{e(xlabel)}</text></svg>')
    return "".join(parts)


def radar(names: list[str], axes: list[str], rows: list[list[float]], size: int = 360) -> str:
    """Each axis normalised to [0, 1] across strategies (1 = best on that axis)."""
    c, r = size / 2, size / 2 - 60
    n = len(axes)
    pt = lambda i, v: (c + r * v * math.sin(2 * math.pi * i / n), c - r * v * math.cos(2 * math.pi * i / n))  # noqa: E731
    parts = [
        f'<svg class="chart" width="{size + 40}" height="{size}" role="img" aria-label="radar of all axes"><text x="4" y="14" class="ct">All axes, normalised (outer = best)</text>'
    ]
    for ring in (0.25, 0.5, 0.75, 1.0):
        parts.append(
            '<polygon class="ring" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in (pt(i, ring) for i in range(n)))
            + '"/>'
        )
    for i, a in enumerate(axes):
        x, y = pt(i, 1.12)
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" class="cl" text-anchor="middle">{e(a)}</text>')
    for j, (name, row) in enumerate(zip(names, rows)):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (pt(i, v) for i, v in enumerate(row)))
        parts.append(
            f'<polygon points="{pts}" fill="{COLOURS[j % 8]}" fill-opacity="0.15" stroke="{COLOURS[j % 8]}" stroke-width="2"><title>{e(name)}</title></polygon>'
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="key" style="background:{COLOURS[j % 8]}"></span>{e(n)}' for j, n in enumerate(names)
    )
    return "".join(parts) + f"<div>{legend}</div>"


def _latency(agg: dict) -> float:
    """A strategy's latency for one question asked alone; results written before it was measured
    have only the time per answer in batches."""
    alone = agg.get("latency_alone_s")
    return alone if alone is not None else agg["latency_p50_s"]


def _radar_rows(res: Results, names: list[str]) -> tuple[list[str], list[list[float]]]:
    axes = [
        ("accuracy", lambda n: _val(res.aggregates[n], "f1"), True),
        ("hallucination", lambda n: _hallucination_score(res.aggregates[n]), True),
        ("freshness", lambda n: _val(res.aggregates[n], "fresh_rate"), True),
        ("transparency", lambda n: _val(res.aggregates[n], "citation_precision") or 0.0, True),
        ("cost", lambda n: res.costs[n]["per_1000_questions_usd"] + res.costs[n]["setup_usd"], False),
        ("latency", lambda n: _latency(res.aggregates[n]), False),
    ]
    rows = [[0.0] * len(axes) for _ in names]
    for i, (_, f, higher) in enumerate(axes):
        vals = [f(n) for n in names]
        known = [v for v in vals if v is not None]
        lo, hi = (min(known), max(known)) if known else (0, 0)
        for j, v in enumerate(vals):
            if v is None:
                continue
            norm = 1.0 if hi == lo else (v - lo) / (hi - lo)
            rows[j][i] = 0.1 + 0.9 * (norm if higher else 1 - norm)
    return [a[0] for a in axes], rows


def _hallucination_score(a: dict) -> float:
    """Higher is better: abstains on unanswerable, does not answer without support."""
    abst = _val(a, "abstain_unanswerable")
    unsup = a.get("unsupported")
    parts = [x for x in (abst, None if unsup is None else 1 - unsup) if x is not None]
    return sum(parts) / len(parts) if parts else 0.0


def _lead(p: dict, a: str) -> tuple[float, float, float]:
    """`a`'s lead in paired test `p` and its 95% interval (low, high), whichever way round the test was taken."""
    if p["a"] == a:
        return p["diff"], p["low"], p["high"]
    return -p["diff"], -p["high"], -p["low"]


def recommendation(res: Results) -> list[str]:
    """Sentences written from the measured numbers; nothing canned is claimed without them."""
    names = list(res.aggregates)
    f1 = {n: _val(res.aggregates[n], "f1") for n in names}
    best = max(names, key=lambda n: f1[n])
    sig = {(p["a"], p["b"], p["metric"]): p for p in res.paired}

    def test(a, b, metric="f1"):
        return sig.get((a, b, metric)) or sig.get((b, a, metric))

    out = []
    beaten, ties = [], []
    for n in names:
        if n == best:
            continue
        p = test(best, n)
        (beaten if p and p["p_value"] < 0.05 else ties).append(
            f"{n} (F1 {f1[n]:.1f}, p={p['p_value']:.3f})" if p else n
        )
    out.append(
        f"Most accurate: <b>{e(best)}</b> with F1 {f1[best]:.1f} on {res.aggregates[best]['n_answerable']} held-out questions. "
        + (f"It is significantly better than {', '.join(beaten)}. " if beaten else "")
        + (f"Its lead over {', '.join(ties)} is within noise (paired bootstrap p ≥ 0.05). " if ties else "")
    )
    base = next((n for n in names if n == "base"), None)
    for n in names:
        if n != base and base and _strategy(res, n).get("adapter"):
            p = test(n, base)
            if f1[n] < f1[base]:
                a = res.aggregates[n]
                why = []
                if a.get("false_abstention"):
                    why.append(f"it abstains on {100 * a['false_abstention']:.0f}% of answerable questions")
                labelled = res.costs[n].get("labelled_examples")
                if labelled:
                    why.append(f"it was trained on only {labelled} labelled examples")
                out.append(
                    f"The fine-tuned strategy <b>{e(n)}</b> scores below the base model (F1 {f1[n]:.1f} vs {f1[base]:.1f}"
                    + (f", p={p['p_value']:.3f}" if p else "")
                    + ")"
                    + (f"; the data suggest why: {'; '.join(why)}." if why else ".")
                )
    abst = {n: _val(res.aggregates[n], "abstain_unanswerable") for n in names}
    if any(v is not None for v in abst.values()):
        ab = max((n for n in names if abst[n] is not None), key=lambda n: abst[n])
        unsup = ", ".join(
            f"{e(n)} {100 * res.aggregates[n]['unsupported']:.0f}%"
            for n in names
            if res.aggregates[n].get("unsupported") is not None
        )
        if abst[ab] == 0:
            out.append(
                f"Hallucination: no strategy abstained on the {res.aggregates[ab]['n_unanswerable']} questions the index cannot answer — "
                "every one of them got an invented answer"
                + (f"; answers not supported by the retrieved text: {unsup}." if unsup else ".")
            )
        else:
            out.append(
                f"Hallucination: on questions the index cannot answer, <b>{e(ab)}</b> abstains most ({100 * abst[ab]:.0f}%); "
                + ", ".join(f"{e(n)} {100 * abst[n]:.0f}%" for n in names if n != ab and abst[n] is not None)
                + (f"; unsupported answers: {unsup}." if unsup else ".")
            )
    fresh = {n: res.aggregates[n].get("fresh_rate") for n in names}
    if any(v is not None for v in fresh.values()):
        fr = max((n for n in names if fresh[n] is not None), key=lambda n: fresh[n])
        re_s = res.freshness.get("reingest", {}).get("wall_s")
        edited = [r for r in res.records if r.kind == "edited" and r.retrieved]
        found = sum(r.gold_rank is not None for r in edited) / len(edited) if edited else None
        lead = (
            f"<b>{e(fr)}</b> gives the new value most often ({100 * fresh[fr]:.0f}%)"
            if fresh[fr]
            else "no strategy gave the new value"
        )
        if found is not None:
            lead += f" (retrieval brought the edited passage for {100 * found:.0f}% of these questions)"
        out.append(
            f"Freshness: after {len(res.freshness.get('edits', []))} facts changed, {lead}"
            + (f"; absorbing the change took {re_s:.1f} s of incremental re-ingest" if re_s is not None else "")
            + "; a fine-tuned model without retrieval only learns it by re-training"
            + "".join(
                f" ({e(n)}: {res.costs[n]['update_cost_s']:.0f} s)"
                for n in names
                if res.costs[n].get("update_by") == "re-training" and res.costs[n].get("update_cost_s")
            )
            + "."
        )
    def usd(n: str) -> str:
        return f"{res.costs[n]['per_1000_questions_usd']:.4f}"

    low = min(usd(n) for n in names)  # as shown: strategies that print the same figure tie
    cheapest = [n for n in names if usd(n) == low]
    out.append(
        f"Cost: <b>{e(' and '.join(cheapest))}</b> {'is' if len(cheapest) == 1 else 'are'} cheapest to run "
        f"(${low} per 1,000 questions on CPU)"
        + "".join(
            ("; " if i == 0 else ", ") + f"{e(n)} ${usd(n)} + ${res.costs[n]['setup_usd']:.4f} set-up"
            for i, n in enumerate(n for n in names if n not in cheapest)
        )
        + "."
    )
    def as_fresh(n: str) -> bool:
        """n is as fresh as the best: it gives the new value as often, or the best's lead is within noise
        (a few edited facts: one edit more or less is not a difference; results without the test compare rates)."""
        if (fresh.get(n) or 0) >= (fresh.get(best) or 0):
            return True
        p = test(best, n, "fresh")
        return p is not None and p["p_value"] >= 0.05

    # The pick: the most accurate, unless a cheaper one is statistically tied with it and as fresh.
    pick = best
    for n in names:
        p = test(best, n)
        if (
            n != best
            and p
            and p["p_value"] >= 0.05
            and as_fresh(n)
            and res.costs[n]["setup_usd"] + res.costs[n]["per_1000_questions_usd"]
            < res.costs[pick]["setup_usd"] + res.costs[pick]["per_1000_questions_usd"]
        ):
            pick = n
    # What "within noise" means at this size: the lead it set aside, and that lead's interval.
    tie = test(best, pick) if pick != best else None
    lead = _lead(tie, best) if tie and "low" in tie else None
    out.append(
        f"<b>Recommendation for this data: {e(pick)}</b>"
        + (" — as accurate and as fresh as the best within noise, and cheaper." if pick != best else ".")
        + (f" {e(best)} − {e(pick)}: F1 {lead[0]:+.1f}, 95% interval [{lead[1]:+.1f}, {lead[2]:+.1f}] on "
           f"{res.aggregates[best]['n_answerable']} questions: a real lead of that size would go unseen here; more "
           "questions (a bigger budget, or your own labelled ones) narrow it." if lead else "")
    )
    if (res.questions or {}).get("source") == "synthetic":
        tuned = [
            n for n in names
            if n != pick and _strategy(res, n).get("adapter") and _strategy(res, n).get("retrieval", True)
            and (p := test(n, pick)) and p["p_value"] >= 0.05
        ]  # fmt: skip
        if tuned:
            syn, real, significant = zip(*SYNTHETIC_VS_REAL.values())
            out.append(
                f"These test questions are synthetic, and on synthetic questions a fine-tuned reader's lead can be "
                f"understated: on SQuAD articles tested both ways, {len(syn)} runs measured rag+ft − rag "
                f"at {min(syn):+.1f} to {max(syn):+.1f} F1 on the synthetic questions and at {min(real):+.1f} to "
                f"{max(real):+.1f} on the real questions of the same documents, p &lt; 0.05 in "
                f"{sum(significant)} (README, \"How far to trust the synthetic test\"). So for <b>{e(', '.join(tuned))}</b> a tie here means \"not shown\", not \"no gain\": "
                "test it on your own labelled questions (<code>ragtune evaluate ... --questions real.jsonl</code>; a "
                "paired test on n questions tells apart about 66/√n F1) before ruling it out."
            )
    return out


# What the synthetic test misses (benchmarks/evaluate_folder.py, 100 SQuAD paragraphs, synthetic test questions
# and the paragraphs' 444 real ones; runs of 2026-12-06/07, I-K with the first question writer, L-N with the current
# one, all with the reader before noun phrases; O as N with them; P (seed 4) and Q (seed 3) as O with noun-phrase
# targets and the round trip at ten; R (seed 4) and S (seed 3) as P with the learnt target scorer): rag+ft − rag in
# F1 on the synthetic test, on the real questions, and whether the real lead had p < 0.05.
# The synthetic questions are vaguer and their targets less certain, so a better reader gains less on them
# (benchmarks/synthetic_gap.py).
SYNTHETIC_VS_REAL = {"I": (2.0, 3.1, True), "J": (1.0, 4.8, True), "K": (-1.9, 2.7, True), "L": (2.2, 0.6, False),
                     "M": (3.1, 5.0, True), "N": (-0.2, 5.1, True), "O": (3.5, 5.6, True), "P": (0.8, 8.7, True),
                     "Q": (3.9, 8.4, True), "R": (4.5, 7.3, True),
                     "S": (5.0, 7.7, True)}  # fmt: skip


def _strategy(res: Results, name: str) -> dict:
    """The comparison's settings of strategy `name` (retrieval, adapter, generator); {} if it has none."""
    return next((s for s in res.strategies if s["name"] == name), {})


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}th{background:#f4f4f4}small{color:#777}
.chart{margin:6px 12px 6px 0;background:#fff}.ct{font-weight:600;font-size:12px}.cl{font-size:11px}.wh{stroke:#222}.ax{stroke:#999}
.ring{fill:none;stroke:#ddd}.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}.ok{color:#2a7a2a}.bad{color:#b22}
.syn{background:#eef;border-radius:3px;padding:0 3px}details{margin:2px 0}#q{width:320px;padding:4px}.charts{display:flex;flex-wrap:wrap}tr.hide{display:none}"""

JS = """function applyFilter(){const q=document.getElementById('q').value.toLowerCase();const k=document.getElementById('kind').value;
const c=document.getElementById('correct').value;let shown=0;for(const tr of document.querySelectorAll('#drill tbody tr')){
const okText=(!q||tr.dataset.text.includes(q));const okKind=(!k||tr.dataset.kind===k);const okC=(!c||tr.dataset.correct.split(' ').includes(c));
const v=okText&&okKind&&okC;tr.classList.toggle('hide',!v);if(v)shown++;}document.getElementById('shown').textContent=shown;}"""


def _runs_on(runtime: dict | None) -> str:
    """A model's runtime record (devices.describe) as "transformers, cpu, bfloat16"; "-" when not recorded."""
    runtime = runtime or {}
    return ", ".join(str(runtime[k]) for k in ("backend", "device", "dtype") if runtime.get(k)) or "-"


def render(res: Results) -> str:
    names = list(res.aggregates)
    A = res.aggregates
    rows = "".join(
        f"<tr><th>{e(n)}</th>"
        + "".join(f"<td>{m.format(A[n].get(m.key), interval=True)}</td>" for m in METRICS)
        + f"<td>${res.costs[n]['setup_usd']:.4f}</td><td>${res.costs[n]['per_1000_questions_usd']:.4f}</td></tr>"
        for n in names
    )
    summary = f"<div style='overflow-x:auto'><table><tr><th>strategy</th>{''.join(f'<th>{e(m.label)}</th>' for m in METRICS)}<th>set-up cost</th><th>per 1,000 questions</th></tr>{rows}</table></div>"
    paired = "".join(
        f"<tr><td>{e(p['a'])} − {e(p['b'])}</td><td>{p['metric'].upper()}</td><td>{p['diff']:+.1f} [{p['low']:+.1f}, {p['high']:+.1f}]</td>"
        f"<td>{p['p_value']:.3f}</td><td>{'yes' if p['p_value'] < 0.05 else 'no'}</td></tr>"
        for p in res.paired
    )
    C = res.costs
    dims = [
        (
            "Dynamic vs static (fresh after edits; cost to absorb a change)",
            lambda n: (
                f"{_cell(A[n], 'fresh_rate')}; {C[n]['update_by']}"
                + (f" ({C[n]['update_cost_s']:.1f} s)" if C[n].get("update_cost_s") else "")
            ),
        ),
        (
            "Hallucination (abstains on unanswerable; unsupported answers)",
            lambda n: f"{_cell(A[n], 'abstain_unanswerable')}; {_cell(A[n], 'unsupported')}",
        ),
        ("Accuracy (EM / F1)", lambda n: f"{_val(A[n], 'em'):.1f} / {_val(A[n], 'f1'):.1f}"),
        (
            "Transparency (citation precision / recall)",
            lambda n: f"{_cell(A[n], 'citation_precision')} / {_cell(A[n], 'citation_recall')}",
        ),
        (
            "Cost (set-up; per question; peak memory; disk)",
            lambda n: (
                f"{C[n]['setup_wall_s']:.0f} s; {C[n]['per_question_wall_s']:.2f} s; {C[n]['peak_rss_mb']:.0f} MB; {(C[n]['index_bytes'] + C[n]['adapter_bytes']) / 1e6:.1f} MB"
            ),
        ),
        ("Runs on (generator: backend, device, dtype)", lambda n: e(_runs_on(res.runtime.get(n)))),
        (
            "Complexity (set-up steps; labelled examples)",
            lambda n: (
                f"{len(C[n]['setup_steps'])} steps: {e(', '.join(C[n]['setup_steps']))}; {C[n]['labelled_examples']} labelled"
            ),
        ),
    ]
    dim_rows = "".join(f"<tr><th>{e(d)}</th>" + "".join(f"<td>{f(n)}</td>" for n in names) + "</tr>" for d, f in dims)
    charts = [bar_chart(f"{lab} (95% CI)", names, [A[n][k] for n in names]) for lab, k in (("F1", "f1"), ("EM", "em"))]
    charts.append(
        bar_chart("Abstains on unanswerable (%)", names, [A[n]["abstain_unanswerable"] for n in names], pct=True)
    )
    charts.append(bar_chart("Fresh after edits (%)", names, [A[n]["fresh_rate"] for n in names], pct=True))
    charts.append(bar_chart("Unsupported answers (%)", names, [A[n]["unsupported"] for n in names], pct=True))
    charts.append(bar_chart("Latency, one question alone (s)", names, [_latency(A[n]) for n in names]))
    charts.append(
        scatter(
            names,
            [C[n]["setup_usd"] + C[n]["per_1000_questions_usd"] for n in names],
            [_val(A[n], "f1") for n in names],
            "cost: set-up + 1,000 questions (USD)",
            "F1",
        )
    )
    axes, rrows = _radar_rows(res, names)
    charts.append(radar(names, axes, rrows))
    ratings = ""
    if res.ratings:
        ratings = (
            "<h2>Human ratings</h2><table><tr><th>strategy</th><th>mean rating</th><th>n</th><th>automatic F1</th></tr>"
            + "".join(
                f"<tr><td>{e(n)}</td><td>{r['mean']:.2f}</td><td>{r['n']}</td><td>{_val(A[n], 'f1'):.1f}</td></tr>"
                for n, r in res.ratings.items()
                if n in A
            )
            + "</table>"
        )
    phases = ""
    if res.phases:
        phases = (
            "<h2>Time per phase</h2><table>"
            + "".join(f"<tr><td>{e(k)}</td><td>{v:.1f} s</td></tr>" for k, v in res.phases.items())
            + "</table>"
        )
    fresh = ""
    if res.freshness.get("edits"):
        fresh = (
            "<h2>Edited facts</h2><table><tr><th>question</th><th>old</th><th>new</th><th>kind</th></tr>"
            + "".join(
                f"<tr><td>{e(x['question'])}</td><td>{e(x['old'])}</td><td>{e(x['new'])}</td><td>{x['kind']}</td></tr>"
                for x in res.freshness["edits"]
            )
            + "</table>"
        )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ragtune comparison</title><style>{CSS}</style></head><body>
<h1>RAG, fine-tuning, or both? — measured</h1>
<p>{len(names)} strategies answered the same {A[names[0]]["n_answerable"]} held-out questions, {A[names[0]]["n_unanswerable"]} unanswerable ones and {A[names[0]]["n_edited"]} questions about edited facts, with the same greedy decoding. Intervals are 95% bootstrap intervals over questions.</p>
<h2>Recommendation</h2>{"".join(f"<p>{s}</p>" for s in recommendation(res))}
{"".join(f"<p><i>{e(n)}</i></p>" for n in res.notes)}
<h2>Summary</h2>{summary}
<h2>The classic RAG-vs-fine-tuning dimensions, measured</h2><table><tr><th>dimension</th>{"".join(f"<th>{e(n)}</th>" for n in names)}</tr>{dim_rows}</table>
{f"<p>Embedder: {e(res.runtime['embedder'].get('name', ''))} ({e(_runs_on(res.runtime['embedder']))}).</p>" if res.runtime.get("embedder") else ""}
<h2>Are the differences real?</h2><table><tr><th>pair</th><th>metric</th><th>difference [95% CI]</th><th>p (paired bootstrap)</th><th>significant</th></tr>{paired}</table>
<h2>Charts</h2><div class="charts">{"".join(charts)}</div>
{ratings}{phases}{fresh}
{tuning_section(res)}
{questions_section(res)}
<h2>Per question</h2>{drilldown(res)}
<script>{JS}</script></body></html>"""


def tuning_section(res: Results) -> str:
    """Tuned retrieval settings, and each gate's operating point with its abstention curve."""
    t = getattr(res, "tuning", None) or {}
    out = []
    r = t.get("retrieval") or {}
    if r.get("chosen"):
        c = r["chosen"]
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{s['recall@1']:.3f}</td><td>{s['recall@5']:.3f}</td><td>{s['mrr@10']:.3f}</td></tr>"
            for name, s in {**r["before"], "hybrid (tuned)": r["after"]}.items()
        )
        out.append(
            f"<h2>Retrieval, tuned to these documents</h2><p>Chosen on {r.get('questions', 0)} training questions (never the test): "
            f"fusion <b>{e(c['fusion'])}</b>, dense weight <b>{c['dense_weight']}</b>, {c['candidates']} candidates per retriever, "
            f"k = {c['k']}, context budget {c['context_tokens']} tokens.</p>"
            f"<table><tr><th>retriever</th><th>R@1</th><th>R@5</th><th>MRR@10</th></tr>{rows}</table>"
        )
    for name, g in (t.get("gates") or {}).items():
        if not g:
            continue
        cal = g.get("calibration", {})
        curve = cal.get("curve", [])
        chart = scatter(
            [f"t={x['threshold']:.2f}" if i % 8 == 0 else "" for i, x in enumerate(curve)],
            [100 * x["false_abstention"] for x in curve],
            [100 * x["abstention"] for x in curve],
            "false abstention on answerable (%)",
            "abstention on unanswerable (%)",
        ) if curve else ""  # fmt: skip
        source = (
            f"ragtune's default gate, not calibrated on this index (<code>ragtune tune</code> calibrates one): fitted on "
            f"{e(cal.get('fitted_on', 'questions of other documents'))}"
            if cal.get("default") else
            f"Calibrated on {cal.get('answerable', 0)} answerable and {cal.get('unanswerable', 0)} unanswerable questions "
            f"({'validation questions, which its adapter never trained on,' if cal.get('split') == 'validation' else 'training questions'} "
            "asked again with their document kept out of retrieval)"
        )  # fmt: skip
        out.append(
            f"<h3>Answerability gate of {e(name)}</h3><p>{source}. Threshold {g['threshold']:.3f}: abstains on {100 * cal.get('abstention', 0):.0f}% of unanswerable, "
            f"{100 * cal.get('false_abstention', 0):.0f}% of answerable calibration questions (target at most "
            f"{100 * g['target_false_abstention']:.0f}%). Evidence read: {e(', '.join(g['features']))}.</p>{chart}"
        )
    return "".join(out)


def questions_section(res: Results) -> str:
    """Where the questions came from: synthetic or real, what each filter removed, examples with passages."""
    q = res.questions
    if not q:
        return ""
    syn = q.get("synthetic") or {}
    steps = syn.get("steps", [])
    rows = "".join(
        f"<tr><td>{e(s['name'])}</td><td>{s['removed']}</td><td>{e('; '.join(s['examples'][:2]))}</td></tr>"
        for s in steps
    )
    examples = "".join(
        f"<tr><td>{e(x['question'])}</td><td>{e(x['answer'])}</td><td><small>{e(x['context'])}</small></td><td>{e(x['doc_id'])}</td></tr>"
        for x in syn.get("samples", [])[:10]
    )
    source = q.get("source", "synthetic")
    head = (
        "The test questions are <b>real</b> labelled questions you supplied; synthetic ones trained the fine-tuned strategies."
        if source == "real"
        else "The test questions are <b>synthetic</b>: ragtune wrote them from your documents. Read the examples and vet a sample "
        "(<code>ragtune rate-sheet --questions</code>) before trusting small differences."
    )
    return (
        f"<h2>The questions</h2><p>{head}</p><p>{syn.get('kept', 0)} synthetic questions kept from {syn.get('attempts', 0)} asked of "
        f"{e(str(syn.get('generator', '')))}, {syn.get('per_minute', 0):.1f} per minute; {syn.get('documents_with_questions', 0)} of "
        f"{syn.get('documents', 0)} documents have one. Unanswerable questions come from {len(q.get('held_out_documents', []))} "
        f"documents kept out of the index."
        + (f" Split: {', '.join(f'{n} {k}' for k, n in q['splits'].items())}." if q.get("splits") else "")
        + (f" The {q['untested']} questions the round-trip reader answered itself (its first answer was the target) are "
           "trained on and calibrate the gates, never tested on: they were kept because the base model — the reader of "
           "<i>rag</i> — got them right, so a test of them would favour it." if q.get("untested") else "")
        + "</p>"
        f"<table><tr><th>filter</th><th>removed</th><th>examples caught</th></tr>{rows}</table>"
        f"<h3>Ten examples, with the passage each was written from</h3><table><tr><th>question</th><th>answer</th><th>passage</th>"
        f"<th>document</th></tr>{examples}</table>"
    )


def _synthetic_mark(res: Results, kind: str) -> str:
    """Questions ragtune wrote itself are marked; unanswerable ones are always synthetic in `evaluate`."""
    if not res.questions or not (kind == "unanswerable" or res.questions.get("source") == "synthetic"):
        return ""
    return " <small class='syn'>synthetic</small>"


def drilldown(res: Results) -> str:
    by_q: dict[tuple, dict] = {}
    for r in res.records:
        by_q.setdefault((r.kind, r.question_id), {})[r.strategy] = r
    names = list(res.aggregates)
    rows = []
    for (kind, _qid), recs in by_q.items():
        first = next(iter(recs.values()))
        correct = []
        cells = []
        for n in names:
            r = recs.get(n)
            if r is None:
                cells.append("<td>–</td>")
                continue
            ok = r.abstained if kind == "unanswerable" else bool(r.fresh) if kind == "edited" else r.f1 >= 0.5
            correct.append(f"{n}:{'ok' if ok else 'bad'}")
            cites = "".join(
                f"<details><summary>[{i + 1}] {e(c)}</summary>{e(s)}</details>"
                for i, (c, s) in enumerate(zip(r.cited, r.cited_snippets))
            )
            score = "" if kind != "answerable" else f" <small>EM {r.em:.0f} F1 {r.f1:.2f}</small>"
            cells.append(
                f"<td class='{'ok' if ok else 'bad'}'>{e(r.answer)}{' <small>(abstained)</small>' if r.abstained else ''}{score}{cites}</td>"
            )
        text = (first.question + " " + " ".join(r.answer for r in recs.values())).lower()
        rows.append(
            f"<tr data-kind='{kind}' data-correct='{e(' '.join(correct))}' data-text='{e(text)}'><td>{e(first.question)}{_synthetic_mark(res, kind)}<br><small>{kind}; gold: {e(' | '.join(first.gold))}</small></td>{''.join(cells)}</tr>"
        )
    opts = "".join(
        f"<option value='{e(n)}:ok'>{e(n)} right</option><option value='{e(n)}:bad'>{e(n)} wrong</option>"
        for n in names
    )
    return (
        f"<p><input id='q' placeholder='search questions and answers' oninput='applyFilter()'> "
        f"<select id='kind' onchange='applyFilter()'><option value=''>all kinds</option><option>answerable</option><option>unanswerable</option><option>edited</option></select> "
        f"<select id='correct' onchange='applyFilter()'><option value=''>any outcome</option>{opts}</select> <span id='shown'>{len(rows)}</span> shown</p>"
        f"<table id='drill'><thead><tr><th>question</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def write_report(res: Results, out_dir: str | Path) -> Path:
    path = Path(out_dir) / "report.html"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(res), encoding="utf-8")
    tmp.replace(path)  # a run killed while writing leaves the previous report whole
    return path


def summary_table(res: Results, width: int = 80) -> str:
    """Plain-text summary for the terminal and log files: the metrics with a short name, then cost.
    Columns are as wide as their contents, so the table fits `width` columns (80: a terminal or a log)."""
    cols = [m for m in METRICS if m.short]
    rows = [["strategy"] + [m.short for m in cols] + ["$/1k q"]]
    for n, a in res.aggregates.items():
        cost = res.costs[n]["per_1000_questions_usd"]
        rows.append([n] + [m.format(a.get(m.key)) for m in cols] + [f"{cost:.4f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    gap = 2 if sum(widths) + 2 * (len(widths) - 1) <= width else 1

    def line(r: list[str]) -> str:
        return (" " * gap).join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join(line(r).rstrip() for r in rows)
