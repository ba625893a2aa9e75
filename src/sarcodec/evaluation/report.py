"""One report, two renderings: Markdown (``report.md``) and standalone HTML (``report.html``)."""
from __future__ import annotations

from html import escape
from pathlib import Path


class Report:
    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, caption: str, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", caption, header, rows))

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "table":
                _, cap, head, rows = b
                widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
                line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
                out += [f"## {cap}", "", line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                out += [line(r) for r in rows] + [""]
            else:
                out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
               "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
               "img{max-width:100%}</style></head><body>", f"<h1>{escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "p":
                out.append(f"<p>{escape(b[1])}</p>")
            elif b[0] == "table":
                _, cap, head, rows = b
                out.append(f"<h2>{escape(cap)}</h2><table><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in head) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
                out.append("</table>")
            else:
                out.append(f"<figure><img src='{escape(b[1])}' alt='{escape(b[2])}'><figcaption>{escape(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, out_dir: str | Path) -> Path:
        from ..container import atomic_write

        out_dir = Path(out_dir)
        atomic_write(out_dir / "report.md", self.markdown().encode(), force=True)
        atomic_write(out_dir / "report.html", self.html().encode(), force=True)
        return out_dir / "report.md"


def text_table(rows: list[dict], columns: list[tuple[str, str]], key: str = "name", reference: str | None = None,
               deltas: tuple[str, ...] = ()) -> str:
    """A plain-text table with aligned columns (numbers right-aligned) for notebooks and logs.
    ``columns`` are (field, format) pairs; with ``reference`` (a row's ``key`` value), each field
    in ``deltas`` gets a signed-difference column ("Δfield") against that row."""
    head = [key] + [c for c, _ in columns] + [f"Δ{d}" for d in deltas]
    ref = next((r for r in rows if r[key] == reference), None)
    body = []
    for r in rows:
        cells = [str(r[key])] + ["-" if r.get(c) is None else format(r[c], f) for c, f in columns]
        for d in deltas:
            f = dict(columns).get(d, ".3f").lstrip("+")
            v = None if ref is None or r.get(d) is None or ref.get(d) is None else r[d] - ref[d]
            cells.append("-" if v is None else ("0 (ref)" if r is ref else format(v, "+" + f)))
        body.append(cells)
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body])
