"""Bar chart of a `make bench` run: bench/chart.py MEDIANS.TSV RSS.TSV OUT.PNG TITLE

MEDIANS.TSV (written by bench/run.sh): kind, label, wall s, rows/s, peak RSS MB, one line per
tool. RSS.TSV (may be empty): label, rows, peak RSS MB for the large-table memory runs.
Left: rows/s per tool, grouped by task (backup, restore, tail), storagetapper in colour and
the other tools in grey. Right: storagetapper's peak RSS per backup at both table sizes.
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KIND_TITLE = {"read": "backup", "backup": "backup", "restore": "restore", "tail": "tail"}
KIND_COLOUR = {"backup": "#1f77b4", "restore": "#2ca02c", "tail": "#d62728"}


def main() -> None:
    medians_path, rss_path, out_path, title = sys.argv[1:5]
    with open(medians_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r]
    with open(rss_path, newline="", encoding="utf-8") as f:
        rss = [r for r in csv.reader(f, delimiter="\t") if r]

    fig, (left, right) = plt.subplots(
        1, 2, figsize=(14, 0.38 * len(rows) + 1.8), gridspec_kw={"width_ratios": [3, 2]}
    )

    labels, values, colours = [], [], []
    previous = None
    for kind, label, _wall, rows_s, _rss in rows:
        group = KIND_TITLE.get(kind, kind)
        if previous is not None and group != previous:
            labels.append("")
            values.append(0)
            colours.append("white")
        previous = group
        labels.append(label)
        values.append(float(rows_s) / 1000)
        ours = label.startswith("storagetapper")
        colours.append(KIND_COLOUR.get(group, "#1f77b4") if ours else "#9e9e9e")
    y = list(range(len(labels)))
    left.barh(y, values, color=colours)
    left.set_yticks(y, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("thousand rows/s (median; higher is better)")
    left.set_title("Throughput: storagetapper (colour) vs the usual tools (grey)", fontsize=10)
    for i, v in enumerate(values):
        if v:
            left.text(v, i, f" {v:.0f}k", va="center", fontsize=7)
    left.margins(x=0.15)

    if rss:
        sizes = sorted({int(r[1]) for r in rss})
        tools = list(dict.fromkeys(r[0] for r in rss))
        by = {(r[0], int(r[1])): float(r[2]) for r in rss}
        height = 0.8 / len(sizes)
        for j, size in enumerate(sizes):
            ys = [i + j * height for i in range(len(tools))]
            vals = [by.get((t, size), 0) for t in tools]
            right.barh(ys, vals, height=height, label=f"{size:,} rows")
            for yy, v in zip(ys, vals):
                right.text(v, yy, f" {v:.0f}", va="center", fontsize=7)
        right.set_yticks([i + 0.4 - height / 2 for i in range(len(tools))], tools, fontsize=8)
        right.invert_yaxis()
        right.axvline(150, color="black", linestyle="--", linewidth=0.8, label="target ≤ 150 MB")
        right.set_xlabel("peak RSS MB (lower is better)")
        right.set_title("storagetapper backup memory at two table sizes", fontsize=10)
        right.legend(fontsize=8, loc="lower right")
        right.margins(x=0.15)
    else:
        right.axis("off")

    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main()
