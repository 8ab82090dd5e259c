"""A small builder for self-contained HTML reports (inline CSS, figures embedded as base64 PNG).

The file opens in any browser with no network and no companion files, so it can be mailed or
attached to a ticket. Every piece of text is HTML-escaped; only this module writes markup.

    report = HtmlReport("voxelfm demo")
    sec = report.section("results", "Results")
    sec.paragraph("AUROC of the findings probes.")
    sec.table(["task", "value"], [["classification", "0.91"]])
    sec.figure(png_bytes, caption="Bars with 95% CIs")
    report.write("report.html")
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import InputValidationError

_CSS = """
:root { --fg:#1d232a; --muted:#5b6570; --line:#d9dee3; --bg:#ffffff; --soft:#f4f6f8;
        --accent:#0b6aa2; --good:#1a7f37; --bad:#b42318; --warn-bg:#fff7e6; --warn-line:#f0b429; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { margin: 0 0 4px; font-size: 28px; }
header .subtitle { color: var(--muted); margin: 0 0 12px; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px;
          margin: 16px 0 8px; columns: 2; column-gap: 32px; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc ol { margin: 0; padding-left: 20px; }
section { border-top: 1px solid var(--line); padding-top: 8px; margin-top: 28px; }
section h2 { font-size: 21px; margin: 8px 0 8px; }
section h3 { font-size: 16px; margin: 18px 0 6px; }
p { margin: 6px 0 10px; max-width: 75em; }
.muted { color: var(--muted); }
td.muted { font-size: 13px; }
.callout { border-left: 4px solid var(--warn-line); background: var(--warn-bg); padding: 10px 14px;
           margin: 12px 0; border-radius: 0 6px 6px 0; }
.callout.note { border-left-color: var(--accent); background: #eef6fb; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 4px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.good { color: var(--good); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
td.group { font-weight: 600; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; max-width: 75em; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.gallery figure { margin: 0; }
.compare { display: grid; grid-template-columns: repeat(var(--cols), minmax(0, 1fr)); gap: 12px; margin: 8px 0 16px; }
.compare .pane { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; background: var(--soft); }
.compare .pane h4 { margin: 0 0 4px; font-size: 13px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.compare .pane div { white-space: pre-wrap; font-size: 14px; }
ul.plain { margin: 4px 0 12px; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); padding-top: 8px; }
"""


@dataclass(frozen=True)
class Cell:
    """A table cell with optional CSS classes (``num``, ``good``, ``bad``, ``group``)."""

    text: str
    classes: str = ""


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG in HTML."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputValidationError("figure bytes are not a PNG image")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_to_png(fig: Any, *, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (keeps memory flat in long runs)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: object, tag: str) -> str:
    if isinstance(value, Cell):
        cls = f' class="{_esc(value.classes)}"' if value.classes else ""
        return f"<{tag}{cls}>{_esc(value.text)}</{tag}>"
    return f"<{tag}>{_esc(value)}</{tag}>"


@dataclass
class Section:
    """One titled part of the report; blocks are appended in order."""

    id: str
    title: str
    blocks: list[str] = field(default_factory=list)

    def heading(self, text: str) -> Section:
        self.blocks.append(f"<h3>{_esc(text)}</h3>")
        return self

    def paragraph(self, text: str, *, muted: bool = False) -> Section:
        cls = ' class="muted"' if muted else ""
        self.blocks.append(f"<p{cls}>{_esc(text)}</p>")
        return self

    def callout(self, text: str, *, kind: str = "warning") -> Section:
        cls = "callout note" if kind == "note" else "callout"
        self.blocks.append(f'<div class="{cls}">{_esc(text)}</div>')
        return self

    def bullets(self, items: Iterable[str]) -> Section:
        lis = "".join(f"<li>{_esc(i)}</li>" for i in items)
        self.blocks.append(f'<ul class="plain">{lis}</ul>')
        return self

    def table(
        self, header: Sequence[object], rows: Sequence[Sequence[object]], *, caption: str | None = None,
        table_id: str | None = None,
    ) -> Section:
        for r, row in enumerate(rows):
            if len(row) != len(header):
                raise InputValidationError(f"table row {r} has {len(row)} cells, header has {len(header)}")
        tid = f' id="{_esc(table_id)}"' if table_id else ""
        cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
        head = "".join(_cell(h, "th") for h in header)
        body = "".join("<tr>" + "".join(_cell(c, "td") for c in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table{tid}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, png: bytes, *, caption: str | None = None, alt: str = "", width: int | None = None) -> Section:
        self.blocks.append(_figure_html(png, caption=caption, alt=alt or (caption or self.title), width=width))
        return self

    def gallery(self, items: Sequence[tuple[bytes, str]], *, width: int | None = None) -> Section:
        """Several images side by side, each with its own caption."""
        figs = "".join(_figure_html(png, caption=cap, alt=cap, width=width) for png, cap in items)
        self.blocks.append(f'<div class="gallery">{figs}</div>')
        return self

    def compare(self, panes: Sequence[tuple[str, str]]) -> Section:
        """Texts side by side (e.g. a reference report beside a generated one)."""
        if not panes:
            raise InputValidationError("compare needs at least one pane")
        inner = "".join(
            f'<div class="pane"><h4>{_esc(title)}</h4><div>{_esc(text)}</div></div>' for title, text in panes
        )
        self.blocks.append(f'<div class="compare" style="--cols:{len(panes)}">{inner}</div>')
        return self

    def render(self) -> str:
        body = "\n".join(self.blocks)
        return f'<section id="{_esc(self.id)}">\n<h2>{_esc(self.title)}</h2>\n{body}\n</section>'


def check_html(html: str, section_ids: Iterable[str], *, name: str = "report") -> list[str]:
    """Problems of a rendered report: a missing section, an external resource, no closing tag."""
    import re

    problems = [f"{name} lacks section {sid!r}" for sid in section_ids if f'<section id="{sid}">' not in html]
    external = [s[:40] for s in re.findall(r'\ssrc="([^"]*)"', html) if not s.startswith("data:")]
    if external:
        problems.append(f"{name} references external files: {external[:3]}")
    if not html.rstrip().endswith("</html>"):
        problems.append(f"{name} is truncated")
    return problems


def _figure_html(png: bytes, *, caption: str | None, alt: str, width: int | None) -> str:
    style = f' style="width:{int(width)}px"' if width else ""
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{_esc(alt)}"{style}>{cap}</figure>'


class HtmlReport:
    """An ordered collection of sections rendered as one standalone HTML document."""

    def __init__(self, title: str, *, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []

    def section(self, section_id: str, title: str) -> Section:
        if any(s.id == section_id for s in self.sections):
            raise InputValidationError(f"duplicate report section id {section_id!r}")
        sec = Section(section_id, title)
        self.sections.append(sec)
        return sec

    def render(self, *, footer: str | None = None) -> str:
        toc = "".join(f'<li><a href="#{_esc(s.id)}">{_esc(s.title)}</a></li>' for s in self.sections)
        sub = f'<p class="subtitle">{_esc(self.subtitle)}</p>' if self.subtitle else ""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        foot = _esc(footer) if footer else f"Generated by voxelfm on {stamp}."
        sections = "\n".join(s.render() for s in self.sections)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<header><h1>{_esc(self.title)}</h1>{sub}</header>\n"
            f'<nav class="toc"><ol>{toc}</ol></nav>\n{sections}\n<footer>{foot}</footer>\n'
            "</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike[str], *, footer: str | None = None) -> None:
        """Write the document atomically (a crash never leaves half a report)."""
        atomic_write_text(path, self.render(footer=footer))
