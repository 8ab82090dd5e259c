"""The self-contained HTML builder."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from voxelfm.core.errors import InputValidationError
from voxelfm.viz.html import Cell, HtmlReport
from voxelfm.viz.slices import to_png


def test_report_is_self_contained_and_escaped(tmp_path) -> None:
    png = to_png(np.zeros((4, 4, 3), dtype=np.uint8))
    rep = HtmlReport("Title <x>", subtitle="sub")
    sec = rep.section("one", "First & only")
    sec.paragraph("a < b")
    sec.table(["k", "v"], [["auroc", Cell("0.9", "num good")]], caption="cap")
    sec.figure(png, caption="fig")
    sec.gallery([(png, "g1"), (png, "g2")])
    sec.compare([("Reference", "no effusion"), ("Generated", "<script>")])
    out = tmp_path / "r.html"
    rep.write(out)
    text = out.read_text()
    assert "Title &lt;x&gt;" in text and "a &lt; b" in text and "&lt;script&gt;" in text
    assert 'id="one"' in text and 'href="#one"' in text
    # Every image is embedded; nothing is fetched from elsewhere.
    srcs = re.findall(r'src="([^"]+)"', text)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == png
    assert "http://" not in text and "https://" not in text


def test_builder_rejects_bad_input() -> None:
    rep = HtmlReport("t")
    sec = rep.section("a", "A")
    with pytest.raises(InputValidationError, match="duplicate"):
        rep.section("a", "again")
    with pytest.raises(InputValidationError, match="cells"):
        sec.table(["a", "b"], [["only one"]])
    with pytest.raises(InputValidationError, match="PNG"):
        sec.figure(b"not a png")
