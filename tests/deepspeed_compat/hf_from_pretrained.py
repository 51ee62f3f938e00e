#!/usr/bin/env python3
"""transformers' from_pretrained on `dsckpt consolidate` output vs DeepSpeed's own path.

A manual check, not part of CI (it needs torch + transformers; the product never does).

    python hf_from_pretrained.py DSCKPT [--fixture fixtures/deepspeed-0.19/hf_trainer_z3]

1. Runs `DSCKPT consolidate <fixture>/output -t best -o <tmp>/ours --dtype fp32` (and
   `--dtype bf16` into <tmp>/ours16), so the Trainer layout (output_dir, -t best) is
   exercised too.
2. Loads it with `AutoModelForCausalLM.from_pretrained(<tmp>/ours, dtype=torch.float32)`
   and requires no missing, unexpected or mismatched keys (output_loading_info).
3. Loads DeepSpeed's zero_to_fp32 output (<fixture>/expected/zero_to_fp32_checkpoint-4:
   pytorch_model.bin + config.json) the same way.
4. Compares every parameter (bitwise) and the logits on fixed token ids: max abs diff
   must be 0 for fp32. The bf16 export is loaded too and compared with the RNE cast of
   the fp32 weights.
5. With --gpt2-export DIR (a dstrain checkpoint consolidated to a folder, e.g.
   `dsckpt consolidate run -o DIR --dtype fp32`): from_pretrained(DIR) loads it as
   GPT2LMHeadModel with no missing, unexpected or mismatched keys, lm_head tied, and
   every weight equal to DIR/model.safetensors (read with the safetensors package).
Prints one line per check and exits non-zero on any failure.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM


def load(path, dtype):
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    model.eval()
    return model, info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dsckpt", help="path to the dsckpt binary")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--fixture", default=os.path.join(here, "..", "..", "fixtures", "deepspeed-0.19", "hf_trainer_z3"))
    ap.add_argument("--gpt2-export", help="a dsckpt consolidate folder of a dstrain checkpoint to load too")
    args = ap.parse_args()
    fx = os.path.abspath(args.fixture)
    failures = 0

    def check(ok, what):
        nonlocal failures
        print(("OK   " if ok else "FAIL ") + what)
        failures += 0 if ok else 1

    with tempfile.TemporaryDirectory() as tmp:
        ours, ours16 = os.path.join(tmp, "ours"), os.path.join(tmp, "ours16")
        for out, dt in ((ours, "fp32"), (ours16, "bf16")):
            r = subprocess.run([args.dsckpt, "consolidate", os.path.join(fx, "output"), "-t", "best", "-o", out,
                                "--dtype", dt, "-q"], capture_output=True, text=True)
            check(r.returncode == 0, f"dsckpt consolidate -t best --dtype {dt} (exit {r.returncode}) {r.stderr.strip()}")
            if r.returncode:
                return 1
        print("exported files:", sorted(os.listdir(ours)))

        m_ours, info = load(ours, torch.float32)
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            check(not info.get(k), f"from_pretrained(ours): {k} = {info.get(k)}")
        m_ref, info_ref = load(os.path.join(fx, "expected", "zero_to_fp32_checkpoint-4"), torch.float32)
        print("zero_to_fp32 load info:", {k: v for k, v in info_ref.items() if v})

        sd_ours, sd_ref = m_ours.state_dict(), m_ref.state_dict()
        check(sorted(sd_ours) == sorted(sd_ref), f"same state_dict keys ({len(sd_ours)})")
        diff = [k for k in sd_ref if k in sd_ours and not torch.equal(sd_ours[k], sd_ref[k])]
        check(not diff, f"every parameter bitwise equal ({len(diff)} differ: {diff[:5]})")
        check(m_ours.lm_head.weight.data_ptr() == m_ours.transformer.wte.weight.data_ptr(),
              "lm_head re-tied to transformer.wte")

        torch.manual_seed(0)
        n_pos = m_ours.config.n_positions
        ids = torch.randint(0, m_ours.config.vocab_size, (2, min(16, n_pos)))
        with torch.no_grad():
            lo, lr = m_ours(ids).logits, m_ref(ids).logits
        mad = (lo - lr).abs().max().item()
        check(mad == 0.0, f"fp32 logits max abs diff = {mad}")

        m16, info16 = load(ours16, torch.bfloat16)
        check(not info16.get("missing_keys") and not info16.get("unexpected_keys"), "from_pretrained(ours16) keys")
        sd16 = m16.state_dict()
        diff16 = [k for k in sd_ref if not torch.equal(sd16[k], sd_ref[k].to(torch.bfloat16))]
        check(not diff16, f"bf16 export = RNE of zero_to_fp32 ({len(diff16)} differ: {diff16[:5]})")
    if args.gpt2_export:
        from safetensors.torch import load_file

        m, info = load(args.gpt2_export, torch.float32)
        check(type(m).__name__ == "GPT2LMHeadModel", f"dstrain export loads as {type(m).__name__}")
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            check(not info.get(k), f"from_pretrained(dstrain export): {k} = {info.get(k)}")
        check(m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr(), "dstrain export: lm_head tied")
        st = load_file(os.path.join(args.gpt2_export, "model.safetensors"))
        sd = m.state_dict()
        diff = [k for k in st if not torch.equal(sd[k], st[k])]
        check(not diff, f"dstrain export: every weight as stored ({len(diff)} differ: {diff[:5]})")
    print("all OK" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
