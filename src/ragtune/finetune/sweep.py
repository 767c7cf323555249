"""Iterate: train each configuration of a small grid, keep the best by validation loss."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, fields, replace
from pathlib import Path

from ..errors import ConfigError
from .config import FinetuneConfig
from .train import TrainResult, train


def parse_grid(spec: list[str]) -> dict[str, list]:
    """['lr=1e-4,3e-4', 'lora_r=8,16'] -> {'lr': [1e-4, 3e-4], 'lora_r': [8, 16]}, typed by the config field."""
    types = {f.name: f.type for f in fields(FinetuneConfig)}
    grid: dict[str, list] = {}
    for item in spec:
        if "=" not in item:
            raise ConfigError(f"--sweep {item!r}: expected FIELD=V1,V2")
        name, values = item.split("=", 1)
        if name not in types:
            raise ConfigError(f"--sweep {name!r}: not a fine-tuning option; known: {sorted(types)}")
        cast = {"int": int, "float": float}.get(str(types[name]), str)
        try:
            grid[name] = [cast(v) for v in values.split(",") if v]
        except ValueError as exc:
            raise ConfigError(f"--sweep {item!r}: {exc}") from exc
    return grid


def sweep(
    base: FinetuneConfig, grid: dict[str, list], data_dir, out_dir, index=None, progress=None
) -> tuple[list[dict], int]:
    """Train every combination under out_dir/run-NN; write sweep.json and sweep.md; return
    the rows and the index of the best run (lowest validation loss)."""
    out = Path(out_dir)
    names = list(grid)
    rows = []
    for i, combo in enumerate(itertools.product(*(grid[n] for n in names))):
        cfg = replace(base, **dict(zip(names, combo)))
        res: TrainResult = train(cfg, data_dir, out / f"run-{i:02d}", index=index, progress=progress)
        rows.append(
            {
                "run": f"run-{i:02d}",
                **dict(zip(names, combo)),
                "best_val_loss": res.best_val_loss,
                "test_loss": res.test_loss,
                "steps": res.steps,
                "wall_s": res.wall_s,
                **{k: res.generation.get(k) for k in ("em", "f1")},
            }
        )
    best = min(
        range(len(rows)),
        key=lambda i: rows[i]["best_val_loss"] if not math.isnan(rows[i]["best_val_loss"]) else math.inf,
    )
    (out / "sweep.json").write_text(
        json.dumps({"base": asdict(base), "grid": grid, "runs": rows, "best": rows[best]["run"]}, indent=2)
    )
    cols = ["run", *names, "best_val_loss", "test_loss", "em", "f1", "steps", "wall_s"]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, r in enumerate(rows):
        cells = [f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        md.append("| " + " | ".join(cells) + (" | ← best" if i == best else " |"))
    (out / "sweep.md").write_text("\n".join(md) + "\n")
    return rows, best
