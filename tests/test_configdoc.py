"""docs/config.md is generated from the config declarations, and is not stale."""

from pathlib import Path

from jaxdyn.configdoc import field_comments, render
from jaxdyn.data import DataConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_docs_config_md_is_up_to_date():
    assert DOC.read_text() == render(), "docs/config.md is stale: run `python scripts/config_doc.py` and commit it"


def test_comments_come_from_the_declarations():
    comments = field_comments(DataConfig)
    assert comments["n_train"] == "the first N training examples; 0 = all"
    assert comments["seed"].startswith("adding, copy, teacher")  # a group heading above it is not its comment
    text = render()
    for section in ("[study]", "[data]", "[model]", "[loss]", "[optim]", "[train]", "[task]", "[gan]", "[probes]",
                    "[grid]", '`kind = "upconv"`', "`[probes.hessian]`"):
        assert f"## {section}" in text or f"### {section}" in text, section
    assert "| `steps` | `6000` | optimisation steps of every member |" in text
