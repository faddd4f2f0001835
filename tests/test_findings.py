"""docs/findings.md quotes the generality tables; every quoted row must be the generated row of
results/generality/generality.md verbatim, so that the page cannot drift from the committed
results (a remade folder and a stale page fail here)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "docs" / "findings.md"
GENERATED = ROOT / "results" / "generality" / "generality.md"
START, END = "<!-- from results/generality/generality.md -->", "<!-- end of quote -->"


def quoted_blocks(text: str) -> list[str]:
    blocks, rest = [], text
    while START in rest:
        rest = rest.split(START, 1)[1]
        block, _, rest = rest.partition(END)
        blocks.append(block)
    return blocks


@pytest.mark.skipif(not GENERATED.is_file(), reason="no generality results committed")
def test_the_quoted_generality_rows_are_the_generated_ones():
    generated = set(GENERATED.read_text().splitlines())
    blocks = quoted_blocks(FINDINGS.read_text())
    assert blocks, f"docs/findings.md quotes no block marked {START!r}"
    for block in blocks:
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert rows
        stale = [r for r in rows if r not in generated]
        assert not stale, f"rows of docs/findings.md not in {GENERATED.name}: {stale[:3]}"
