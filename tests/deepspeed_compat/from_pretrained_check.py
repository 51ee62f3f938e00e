#!/usr/bin/env python3
"""`from_pretrained` on `dsckpt consolidate` output gives the same logits as DeepSpeed's own
zero_to_fp32 path (manual check, not part of CI; see README.md beside this file).

    python from_pretrained_check.py --dsckpt BUILD/dsckpt [--ckpt CHECKPOINT_DIR] [--work DIR]

CHECKPOINT_DIR (default: fixtures/deepspeed-0.19/hf_trainer_z3/output/checkpoint-4) is a Hugging
Face Trainer checkpoint-N written with DeepSpeed ZeRO. The script

  1. runs `dsckpt consolidate CHECKPOINT_DIR --dtype fp32 -o WORK/ours_fp32` and `--dtype bf16
     -o WORK/ours_bf16` (nothing else is done to these folders),
  2. runs DeepSpeed's own converter, deepspeed.utils.zero_to_fp32 (the zero_to_fp32.py that
     DeepSpeed copies into every checkpoint), into WORK/zero_to_fp32 and copies config.json there
     (zero_to_fp32 writes weights only),
  3. loads each folder with transformers.AutoModelForCausalLM.from_pretrained (fp32 for the fp32
     folders, bf16 for ours_bf16) with output_loading_info: no missing, unexpected or mismatched
     keys allowed for ours,
  4. compares the loaded state_dicts bitwise, and the logits of one batch of random tokens:
     ours_fp32 vs zero_to_fp32 must have max abs diff 0; ours_bf16 vs the zero_to_fp32 model cast
     to bf16 (round to nearest even) too.

Prints one line per comparison and "RESULT ok" / "RESULT FAIL"; exit 0 only when all hold.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_CKPT = os.path.join(ROOT, "fixtures", "deepspeed-0.19", "hf_trainer_z3", "output", "checkpoint-4")


def run(cmd, **kw):
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        print(r.stdout[-3000:])
        raise RuntimeError(f"{cmd[0]} exited {r.returncode}")
    return r.stdout


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsckpt", required=True, help="path of the dsckpt binary")
    ap.add_argument("--ckpt", default=DEFAULT_CKPT, help="a Trainer checkpoint-N (ZeRO)")
    ap.add_argument("--work", help="where the exported folders go (default: a new temp dir)")
    args = ap.parse_args(argv)
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="from_pretrained_check_"))
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import deepspeed
    import transformers
    from transformers import AutoModelForCausalLM
    print(f"torch {torch.__version__} deepspeed {deepspeed.__version__} transformers {transformers.__version__}")

    failures = []
    ours = {}
    for dt in ("fp32", "bf16"):
        out = os.path.join(work, f"ours_{dt}")
        shutil.rmtree(out, ignore_errors=True)
        run([args.dsckpt, "consolidate", args.ckpt, "--dtype", dt, "-o", out, "-q"])
        ours[dt] = out
        print(f"ours_{dt}: {sorted(os.listdir(out))}")

    z2f = os.path.join(work, "zero_to_fp32")
    shutil.rmtree(z2f, ignore_errors=True)
    run([sys.executable, "-m", "deepspeed.utils.zero_to_fp32", args.ckpt, z2f])
    shutil.copy(os.path.join(args.ckpt, "config.json"), z2f)
    print(f"zero_to_fp32: {sorted(os.listdir(z2f))}")

    def load(path, dtype, strict):
        model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
        info = {k: sorted(v) if isinstance(v, (list, set)) else v for k, v in info.items()}
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys",
                                                      "mismatched_keys") and v}
        print(f"from_pretrained({os.path.basename(path)}, {dtype}): {type(model).__name__}, "
              f"loading info problems: {json.dumps(bad, default=str) if bad else 'none'}")
        if bad and strict:
            failures.append(f"{os.path.basename(path)}: {bad}")
        return model.eval()

    ref = load(z2f, torch.float32, strict=False)
    m32 = load(ours["fp32"], torch.float32, strict=True)
    m16 = load(ours["bf16"], torch.bfloat16, strict=True)
    ref16 = load(z2f, torch.float32, strict=False).to(torch.bfloat16)  # RNE cast

    def same_state(a, b, label):
        sa, sb = a.state_dict(), b.state_dict()
        if sorted(sa) != sorted(sb):
            failures.append(f"{label}: state_dict keys differ: {sorted(set(sa) ^ set(sb))[:5]}")
            return
        n = 0
        for k in sa:
            x, y = sa[k], sb[k]
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                d = (x.float() - y.float()).abs().max().item() if x.shape == y.shape else "shape"
                failures.append(f"{label}: {k} differs (max abs {d}, {x.dtype} vs {y.dtype})")
            else:
                n += 1
        print(f"{label}: {n}/{len(sa)} state_dict tensors equal")

    same_state(m32, ref, "ours_fp32 vs zero_to_fp32")
    same_state(m16, ref16, "ours_bf16 vs bf16(zero_to_fp32)")

    cfg = ref.config
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_positions), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for label, a, b in (("fp32", m32, ref), ("bf16", m16, ref16)):
            la, lb = a(ids).logits, b(ids).logits
            d = (la.float() - lb.float()).abs().max().item()
            print(f"logits {label}: ours vs DeepSpeed zero_to_fp32 path: shape {tuple(la.shape)}, "
                  f"max abs diff {d}, bitwise equal {torch.equal(la, lb)}")
            if d != 0.0 or not torch.equal(la, lb):
                failures.append(f"logits {label}: max abs diff {d}")

    for f in failures:
        print("FAIL: " + f)
    print("RESULT " + ("ok" if not failures else "FAIL"))
    return 0 if not failures else 1


if __name__ == "__main__":
    try:
        rc = main(sys.argv[1:])
    except Exception as e:  # noqa: BLE001 - one verdict line whatever failed
        import traceback
        traceback.print_exc()
        print(f"RESULT FAIL ({type(e).__name__}: {e})")
        rc = 1
    sys.exit(rc)
