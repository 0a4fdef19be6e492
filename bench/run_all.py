"""Run every benchmark and write their JSON to ``bench/out/results.json`` (``make bench``).

Each benchmark is its own process and prints one JSON object; ratios are measured against a
baseline inside the same run, so the numbers compare across noisy, shared machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = [
    "bench.bench_import",
    "bench.bench_gallery",
    "bench.bench_search",
    "bench.bench_train",
    "bench.bench_input",
    "bench.bench_label",
]
"""Run by default. ``bench.gpu_check`` is left out (it is for a GPU machine); name a module on the
command line to add it (``python -m bench.run_all bench.gpu_check``)."""


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    out_dir = root / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    results: dict[str, object] = {}
    failed = False
    for module in BENCHMARKS + sys.argv[1:]:
        if not (root / (module.replace(".", "/") + ".py")).is_file():
            continue
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", module], cwd=root, env=env, capture_output=True, text=True
        )
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0 or not lines:
            failed = True
            results[module] = {"error": proc.stderr.strip().splitlines()[-1:] or ["no output"]}
        else:
            results[module] = json.loads(lines[-1])
        print(f"{module}: {time.time() - started:.0f}s", file=sys.stderr)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
