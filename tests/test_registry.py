"""Open registries: a third-party package registers models through an entry point; the bundled
ones are registered the same way; `ragtune models` lists both with where each comes from."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragtune import Index, Pipeline, make_embedder, make_generator, registry
from ragtune.errors import ModelNotFoundError

PLUGIN = Path(__file__).parent / "assets" / "plugin_pkg"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """pip-installs the fixture package into a folder (offline: no build isolation, no deps)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("build"),
    )
    assert any(p.name.startswith("ragtune_echo_plugin") and p.suffix == ".dist-info" for p in target.iterdir())
    sys.path.insert(0, str(target))
    registry(reload=True)
    yield target
    sys.path.remove(str(target))
    registry(reload=True)


def test_bundled_models_are_registered_through_the_entry_point():
    reg = registry(reload=True)
    assert "smollm2-135m-instruct" in reg.names("generator") and "all-minilm-l6-v2" in reg.names("embedder")
    assert reg.entries["generator"]["smollm2-135m-instruct"].source == "ragtune"
    assert {"", "pg", "postgresql", "s3"} <= set(reg.names("store"))
    assert reg.errors == []


def test_unknown_names_are_model_not_found_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown generator 'no-such-model'"):
        make_generator("no-such-model")
    with pytest.raises(ModelNotFoundError, match="unknown embedder"):
        make_embedder(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelNotFoundError, match="holds no adapter"):
        make_generator(adapter=tmp_path)


def test_a_third_party_generator_and_embedder_are_used_by_name(installed_plugin, tmp_path, corpus_dir):
    gen = make_generator("echo-gen", temperature=0.5)
    assert type(gen).__name__ == "EchoGenerator" and gen.options == {"temperature": 0.5}
    assert registry().entries["generator"]["echo-gen"].source == "ragtune-echo-plugin"
    index = Index.create(tmp_path / "ix", embedder="echo-embed")
    index.ingest([corpus_dir])
    assert Index.open(tmp_path / "ix").manifest.embedder == "echo-embed"
    assert type(Index.open(tmp_path / "ix").embedder).__name__ == "LengthEmbedder"  # reopened by name
    ans = Pipeline(Index.open(tmp_path / "ix"), gen).answer("Where is the Eiffel Tower?")
    assert ans.text and ans.citations and not ans.abstained


def test_models_command_lists_plugins_and_their_source(installed_plugin):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "ragtune.cli", "models", "--json"], capture_output=True, text=True, env=env, check=True
    )
    rows = {(r["kind"], r["name"]): r for r in json.loads(out.stdout)["entries"]}
    assert rows[("generator", "echo-gen")]["from"] == "ragtune-echo-plugin"
    assert rows[("embedder", "echo-embed")]["from"] == "ragtune-echo-plugin"
    assert rows[("generator", "smollm2-135m-instruct")]["from"] == "ragtune"
    from ragtune.devices import auto_dtype, resolve_device

    runtime = json.loads(out.stdout)["runtime"]
    assert runtime["device"] == resolve_device() and runtime["dtype_setting"] == "auto"
    assert runtime["generator_dtype"] == auto_dtype(runtime["device"])
    text = subprocess.run(
        [sys.executable, "-m", "ragtune.cli", "--device", "cpu", "--dtype", "float32", "models"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "echo-gen" in text and "[ragtune-echo-plugin]" in text and "pg" in text
    assert "runs here: device cpu; a transformers generator computes in float32 (--dtype float32" in text


def test_a_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ragtune.plugins]\nbroken = no_such_module_xyz:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = registry(reload=True)
    try:
        assert any("no_such_module_xyz" in e for e in reg.errors)
        assert "smollm2-135m-instruct" in reg.names("generator")
    finally:
        monkeypatch.undo()
        registry(reload=True)
