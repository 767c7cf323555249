"""The README's Python API example is run as written, on the real bundled models."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.e2e


def api_example() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its api-example block"
    return m.group(1)


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keys.md").write_text(
        "# API keys\n\nThe API key must be rotated every 90 days. The security team approves every new key.\n"
    )
    (docs / "office.txt").write_text("The office is open from 9 to 5. Lunch is served at noon in the canteen.")
    monkeypatch.chdir(tmp_path)
    exec(compile(api_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'added': 2" in out
    assert re.search(r"^1 docs/keys\.md ", out, re.M)  # the right document is the top hit
    assert (tmp_path / "my-index").is_dir()
