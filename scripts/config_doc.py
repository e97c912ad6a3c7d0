"""Write docs/config.md from the config declarations (``jaxdyn.configdoc.render``)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxdyn.configdoc import render  # noqa: E402

if __name__ == "__main__":
    (ROOT / "docs" / "config.md").write_text(render())
    print(f"wrote {ROOT / 'docs' / 'config.md'}")
