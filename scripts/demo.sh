#!/usr/bin/env bash
# The demo, end to end: set up, build, synthesize a sharded ZeRO-3 checkpoint for
# 4 ranks, inspect it, consolidate it into 16-bit safetensors (checked with the
# official Python package), reshard it to 2 ranks, and verify everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
D=build/demo
rm -rf "$D"
mkdir -p "$D"
run() { echo "+ $*"; "$@"; }
run build/dsckpt synth -o "$D/ckpt" --params 20M --world-size 4 --stage 3 --dtype bf16
run build/dsckpt inspect "$D/ckpt"
run build/dsckpt consolidate "$D/ckpt" -o "$D/model.safetensors" --dtype bf16
run build/dsckpt consolidate "$D/ckpt" -o "$D/hf" --dtype bf16 --max-shard-size 15MB
run build/dsckpt reshard "$D/ckpt" --to 2 -o "$D/ckpt-w2"
run build/dsckpt inspect "$D/ckpt-w2"
run build/dsckpt verify "$D/ckpt"
run build/dsckpt verify "$D/ckpt-w2"
run build/dsckpt verify "$D/model.safetensors"
echo "+ python: open the consolidated file with the official safetensors package"
.venv/bin/python3 - "$D/model.safetensors" <<'PY'
import sys
from safetensors import safe_open
with safe_open(sys.argv[1], "numpy") as f:
    keys = list(f.keys())
    print(f"  {len(keys)} tensors, metadata {f.metadata()}")
PY
ls -la "$D/hf"
echo "demo: ok"
