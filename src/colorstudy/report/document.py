"""The report's document model: headings, paragraphs, bullets, tables and images,
rendered to Markdown (GitHub) and to self-contained HTML."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- a small document model, rendered to Markdown and to HTML --------------------------

_INLINE = re.compile(r"(`[^`]+`)|(\*\*.+?\*\*)|(\[[^\]]+\]\([^)\s]+\))")


def _inline_html(text: str) -> str:
    """``code``, **bold** and [links](url) of our Markdown subset -> HTML, the rest escaped."""
    out, at = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[at:m.start()]).replace("&lt;br&gt;", "<br>"))
        token = m.group(0)
        if m.group(1):
            out.append(f"<code>{html.escape(token[1:-1])}</code>")
        elif m.group(2):
            out.append(f"<strong>{_inline_html(token[2:-2])}</strong>")
        else:
            label, href = token[1:].split("](", 1)
            out.append(f'<a href="{html.escape(href[:-1])}">{_inline_html(label)}</a>')
        at = m.end()
    out.append(html.escape(text[at:]).replace("&lt;br&gt;", "<br>"))
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class Doc:
    """Blocks of a report: ``(kind, payload)``, rendered by :meth:`markdown` / :meth:`html`."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: Iterable[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def image(self, alt: str, path: str) -> None:
        self.blocks.append(("image", (alt, path)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        parts = []
        for kind, payload in self.blocks:
            if kind == "heading":
                parts.append("#" * payload[0] + " " + payload[1])
            elif kind == "para":
                parts.append(payload)
            elif kind == "bullets":
                parts.append("\n".join(f"- {item}" for item in payload))
            elif kind == "table":
                header, rows = payload
                lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                         "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                parts.append("\n".join(lines))
            elif kind == "image":
                parts.append(f"![{payload[0]}]({payload[1]})")
            elif kind == "code":
                parts.append(f"```\n{payload}\n```")
        return "\n\n".join(parts) + "\n"

    def html(self, root: Path, title: str) -> str:
        """Self-contained HTML: images are read from ``root / path`` and embedded."""
        body = []
        for kind, payload in self.blocks:
            if kind == "heading":
                body.append(f"<h{payload[0]}>{_inline_html(payload[1])}</h{payload[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline_html(payload)}</p>")
            elif kind == "bullets":
                body.append("<ul>\n" + "\n".join(f"<li>{_inline_html(i)}</li>" for i in payload) + "\n</ul>")
            elif kind == "table":
                header, rows = payload
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                trs = "\n".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{trs}\n'
                            f"</tbody>\n</table></div>")
            elif kind == "image":
                data = base64.b64encode((root / payload[1]).read_bytes()).decode("ascii")
                mime = "image/jpeg" if payload[1].endswith((".jpg", ".jpeg")) else "image/png"
                body.append(f'<p><img alt="{html.escape(payload[0])}" src="data:{mime};base64,{data}"></p>')
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(payload)}</code></pre>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;"
                 "line-height:1.45}table{border-collapse:collapse;font-size:0.85em}"
                 "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
                 "th{background:#f3f3f3}.scroll{overflow-x:auto}img{max-width:100%}"
                 "code,pre{background:#f6f6f6}pre{padding:0.6em}")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")
