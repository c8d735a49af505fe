"""`artlens eval --report DIR`: report.json, report.md and PNG plots for one or more evaluation runs.

A run is one set of labelled photos evaluated against one bundle (e.g. SMVS real photos, then simulated
photos of the same paintings at each severity); runs share the plots so they can be compared at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .metrics import summarise

PLOTS = {"pr": "pr-curve.png", "fpr": "fpr-recall.png", "inliers": "inliers.png"}


def build_report(runs: list[tuple[str, dict]], *, title: str, machine: dict | None = None) -> dict:
    """``runs``: (label, evaluate() report). Adds GAP, recall@K, inlier counts and the threshold sweep."""
    out = []
    for label, report in runs:
        out.append({"label": label, **report, **summarise(report)})
    return {"title": title, "runs": out, "machine": machine or {}, "plots": dict(PLOTS)}


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and the plots into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2))
    paths.update(_plots(report, out))
    paths["md"].write_text(markdown(report))
    return paths


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def _near(near: dict | None) -> str:
    return "–" if not near else f"{near['n']} / {near['of']}"


def markdown(report: dict) -> str:
    runs = report["runs"]
    model = runs[0]["model"] if runs else {}
    lines = [f"# {report['title']}", "",
             f"Model `{model.get('id')}` (pretrained: {str(model.get('pretrained')).lower()}); bundle"
             f" `{runs[0]['bundle'] if runs else ''}`; threshold {_fmt(runs[0]['threshold'] if runs else None)}.", ""]
    lines += ["| run | photos (match / no match) | precision@1 | recall | precision | FPR | GAP | wrong answers"
              " | shortlist recall@1 / @5 / @K | near threshold | p50 / p95 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rk = r["recall_at_k"]
        at_k = " / ".join(_fmt(rk.get(k)) for k in ("1", "5")) + f" / {_fmt(r['shortlist_recall'])}"
        lat = r["latency_ms"]
        lines.append(f"| {r['label']} | {r['n_match_queries']} / {r['n_nomatch_queries']} | "
                     f"**{_fmt(r['precision_at_1'])}** | {_fmt(r['recall'])} | {_fmt(r['precision'])} | "
                     f"**{_fmt(r['false_positive_rate'])}** | {_fmt(r['gap'])} | {r['wrong_answers']} | {at_k} | "
                     f"{_near(r.get('near_threshold'))} | {_fmt(lat['p50'], 0)} / {_fmt(lat['p95'], 0)} |")
    lines += ["", "K (shortlist verified) = " + ", ".join(sorted({str(r["top_k"]) for r in runs})) + ". "
              "Precision@1: the top-ranked artwork after verification, ignoring the threshold; recall, precision and"
              " FPR at the operating threshold; GAP: one prediction per photo ranked by confidence across photos,"
              " no-match photos included (Met dataset benchmark); wrong answers: artworks returned above the"
              " threshold that are not in the photo; near threshold: decisions (each artwork in a photo, the top"
              " candidate of a photo of none) whose confidence lies within 0.1 of the threshold.", ""]
    lines += ["## RANSAC inliers", "", "| run | right artwork p10 / p25 / p50 / p75 / p90 (n) |"
              " best wrong candidate on no-match photos p50 / p90 / max (n) |", "|---|---|---|"]
    for r in runs:
        c, w = r["inliers"]["correct"], r["inliers"]["no_match_top"]
        right = " / ".join(_fmt(c.get(f"p{q}"), 0) for q in (10, 25, 50, 75, 90)) + f" ({c['n']})"
        wrong = " / ".join(_fmt(w.get(k), 0) for k in ("p50", "p90", "max")) + f" ({w['n']})"
        lines.append(f"| {r['label']} | {right} | {wrong} |")
    lines += ["", "## Latency per stage (p50 ms)", ""]
    stages = sorted({s for r in runs for s in r["latency_ms"]["stages"]})
    lines += ["| run | " + " | ".join(stages) + " | total |", "|---|" + "---|" * (len(stages) + 1)]
    for r in runs:
        st = r["latency_ms"]["stages"]
        lines.append(f"| {r['label']} | " + " | ".join(_fmt(st.get(s, {}).get("p50"), 1) for s in stages)
                     + f" | {_fmt(r['latency_ms']['p50'], 0)} |")
    lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in report["plots"].items()]
    if report.get("machine"):
        m = report["machine"]
        lines += ["", f"Machine: {m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}."]
    return "\n".join(lines) + "\n"


def _operating_point(run: dict) -> tuple[float, float, float]:
    """(recall, precision, FPR) of the sweep at the run's threshold."""
    sweep = run["sweep"]
    idx = next((i for i, t in enumerate(sweep["threshold"]) if t >= run["threshold"]), len(sweep["threshold"]) - 1)
    return sweep["recall"][idx], sweep["precision"][idx], sweep["false_positive_rate"][idx]


def _plots(report: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    runs = report["runs"]
    model = runs[0]["model"] if runs else {}
    subtitle = f"{model.get('id')} (pretrained: {str(model.get('pretrained')).lower()})"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = {}
    for kind in ("pr", "fpr"):
        fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
        for i, r in enumerate(runs):
            sweep, colour = r["sweep"], colours[i % len(colours)]
            if kind == "fpr" and not r["n_nomatch_queries"]:
                continue  # no photos of absent artworks: FPR undefined
            x, y = ((sweep["recall"], sweep["precision"]) if kind == "pr"
                    else (sweep["false_positive_rate"], sweep["recall"]))
            ax.step(x, y, where="post", color=colour, lw=1.8, label=f"{r['label']} (n={r['n_queries']})")
            rec, prec, fpr = _operating_point(r)
            ax.plot(*((rec, prec) if kind == "pr" else (fpr, rec)), "o", color=colour, ms=8, mec="black",
                    label=f"{r['label']} at threshold {r['threshold']:.2f}")
        if kind == "pr":
            ax.set_xlabel("recall (match photos answered correctly)")
            ax.set_ylabel("precision (answers that are right)")
            ax.set_xlim(-0.02, 1.02)
        else:
            # Log-like x axis: the operating region is FPR 0…0.05, where a linear axis shows nothing.
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_xlim(0, 1.05)
            ax.set_xlabel("false-positive rate (no-match photos answered; symlog axis)")
            ax.set_ylabel("recall (match photos answered correctly)")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        name = "precision vs recall" if kind == "pr" else "recall vs false-positive rate"
        ax.set_title(f"{report['title']}: {name} (threshold sweep)\n{subtitle}", fontsize=10)
        ax.legend(fontsize=8, loc="lower left" if kind == "pr" else "lower right")
        fig.tight_layout()
        path = out / PLOTS[kind]
        fig.savefig(path)
        plt.close(fig)
        paths[kind] = path
    fig, ax = plt.subplots(figsize=(6.4, 5.0 + 0.16 * 2 * len(runs)), dpi=110)
    for i, r in enumerate(runs):
        right = [d["expected_inliers"] or 0 for d in r["details"] if "error" not in d and d["expected"]]
        wrong = [d["top_inliers"] for d in r["details"] if "error" not in d and not d["expected"]]
        colour = colours[i % len(colours)]
        for values, style, what in ((right, "-", "right artwork (0 if not shortlisted)"),
                                    (wrong, "--", "best wrong candidate, no-match photo")):
            if values:
                xs = np.sort(values)
                ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", ls=style, lw=1.8, color=colour,
                        label=f"{r['label']}: {what} (n={len(xs)})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("RANSAC inliers (symlog axis)")
    ax.set_ylabel("fraction of photos with at most x inliers")
    ax.set_title(f"{report['title']}: verification inliers (cumulative)\n{subtitle}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(out / PLOTS["inliers"])
    plt.close(fig)
    paths["inliers"] = out / PLOTS["inliers"]
    return paths
