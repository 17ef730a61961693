"""Escaping for the reports' Markdown (and so their HTML): untrusted text stays text.

Every string that comes from a record (reasons an operator typed, release and ring names, verdict
fields, device ids, actors) is untrusted text: the Markdown escapes it (HTML special characters as
entities, Markdown punctuation with backslashes, so it is neither live HTML nor a link or an image),
and the HTML pages render that Markdown with raw HTML disabled; the charts' labels are escaped by
matplotlib's SVG writer with mathtext off (otactl/report/charts.py). The rollout report itself is
``rollout_report.py`` (the numbers) and ``rollout_render.py`` (the formats).
"""

from __future__ import annotations

import html
import re
from typing import Any

# Inline Markdown that could make text something else: code, emphasis, links and images, table cells.
_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]|])")


def md_text(value: Any) -> str:
    """Untrusted text for a Markdown paragraph or table cell: no HTML, links, images or emphasis survive."""
    text = " ".join(str(value).split())  # a newline would end the table row
    return _MD_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))
