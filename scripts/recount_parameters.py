"""Check (and with --write, mend) the trainable-parameter counts that a sweep's finished runs recorded.

Until 7bd5132 `softprompt train` counted the *stored* prompt after training, so residual prompt tuning, which
trains a bottleneck MLP and then folds it into plain prompt vectors, reported its folded size (n·D = 73,728 on
SmolLM2 at n = 128) instead of the 536,656 numbers it trained. The metrics of those runs are right; only the count
is not. This script recounts every run from its method's own config (`PromptConfig.count_parameters`, the same
count `softprompt params` prints) and the model's shape, from the config alone (no weights):

    python scripts/recount_parameters.py results/main_table_cpu            # report differences, change nothing
    python scripts/recount_parameters.py results/main_table_cpu --write    # mend them in result.json

A mended result.json keeps what the run reported as `trainable_parameters_reported` and names this script in
`trainable_parameters_recounted_by`. Runs without a trainable count (zero-shot, black-box searches) are left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from softprompt.fileio import atomic_write_text
from softprompt.models.shapes import load_shape
from softprompt.prompts import REGISTRY


def counted(spec: dict) -> int | None:
    """Trainable parameters of the run's prompt method at its settings, or None for a method with no prompt."""
    if spec["method"] not in REGISTRY:
        return None
    config_class, _ = REGISTRY[spec["method"]]
    fields = config_class.__dataclass_fields__
    values = {**spec.get("common", {}), **spec.get("settings", {})}
    config = config_class(**{k: v for k, v in values.items() if k in fields and k != "method"})
    return config.count_parameters(load_shape(spec["model"], int(values.get("max_length", 256))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep's output folder")
    parser.add_argument("--write", action="store_true", help="mend the differing counts in result.json")
    args = parser.parse_args(argv)
    paths = sorted(args.sweep.glob("*/result.json"))
    if not paths:
        parser.error(f"{args.sweep}: no finished runs (no */result.json): not a sweep's output folder")
    differing = 0
    for path in paths:
        result = json.loads(path.read_text())
        reported = result.get("summary", {}).get("trainable_parameters")
        if reported is None or result["spec"].get("optimizer", "gradient") != "gradient":
            continue
        count = counted(result["spec"])
        if count is None or count == reported:
            continue
        differing += 1
        print(f"{path.parent.name}: reported {reported:,}, counted {count:,}")
        if args.write:
            summary = result["summary"]
            summary["trainable_parameters_reported"] = reported
            summary["trainable_parameters"] = count
            summary["trainable_parameters_recounted_by"] = "scripts/recount_parameters.py"
            atomic_write_text(path, json.dumps(result, indent=1))
    print(f"{differing} run(s) differ{' (mended)' if args.write and differing else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
