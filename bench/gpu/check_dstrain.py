#!/usr/bin/env python3
"""The verdicts of scripts/gpu-check.sh's dstrain steps, from the runs' --log_file lines.

  check_dstrain.py WORK
      WORK holds cpu1/gpu1/gpu1_fp32/cpu2/gpu2/cpu_resume/dev_resume .log and gpu2.safetensors
      (dsckpt consolidate --dtype fp32 of the gpu2 run's last checkpoint). Checks: the
      device's loss curves at W=1 and W=2 within bf16 tolerance of the CPU's; the CPU run
      and the device run resumed from the device's step-10 checkpoint continue its
      losses; the consolidated file,
      read by Python's safetensors, holds exactly the fp32 master the device run logged
      (master_sha256: SHA-256 of the master in the model's flat order, runtime/model.h).
  check_dstrain.py --gpt2 WORK TORCH_LOG N_LAYER N_EMBD SEQ BATCH
      Prints the GPT-2-shaped step time and model FLOP utilisation (against the
      H100/H200 dense bf16 peak, 989 TFLOP/s), its ratio to PyTorch eager's bf16 step
      (the torch step's log, when there), one async save's stall and the offloaded step.

Prints key=value lines; exits 1 when a check fails.
"""
import hashlib
import os
import json
import re
import sys

TOL = 1e-2  # bf16 tolerance of the loss curves
TOL_FP32 = 1e-3  # the same with fp32 GEMMs (the other kernels' sums associate differently)


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def flat_names(n_layer):
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        names += [p + n for n in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                  "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                                  "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]
    return names + ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def rel(a, b):
    return abs(a - b) / abs(b)


def curve_diff(w, a, b):
    """The largest relative difference of log b's losses from log a's, and the two lengths."""
    x = [r["loss"] for r in rows(f"{w}/{a}.log")]
    y = [r["loss"] for r in rows(f"{w}/{b}.log")]
    d = max(rel(p, q) for p, q in zip(y, x)) if x and y else float("inf")
    return d, len(x), len(y), x, y


def check_loss_ckpt(w):
    bad = 0
    for W in (1, 2):
        d, nc, ng, c, g = curve_diff(w, f"cpu{W}", f"gpu{W}")
        ok = nc == ng and nc > 0 and d < TOL
        print(f"loss_curve_W{W}_max_rel_diff={d:.3g} steps={len(g)}/{len(c)} first={c[0]:.4f} "
              f"last_cpu={c[-1]:.4f} last_gpu={g[-1]:.4f} ({'ok' if ok else 'FAIL'}, tolerance {TOL})")
        bad += not ok
    # fp32 GEMMs on the device (--gemm_dtype fp32): only the summation order differs
    # from the CPU's, so a tighter tolerance than the bf16 GEMMs' above.
    if os.path.exists(f"{w}/gpu1_fp32.log"):
        d, nc, ng, _, _ = curve_diff(w, "cpu1", "gpu1_fp32")
        ok = nc == ng and nc > 0 and d < TOL_FP32
        print(f"loss_curve_W1_fp32_gemm_max_rel_diff={d:.3g} ({'ok' if ok else 'FAIL'}, tolerance {TOL_FP32})")
        bad += not ok
    # --comm nccl at W=1 (when run): the same kernels, so the same losses as --comm mpi.
    if os.path.exists(f"{w}/gpu1_nccl.log"):
        d, nm, nn, _, _ = curve_diff(w, "gpu1", "gpu1_nccl")
        ok = nm == nn and nm > 0 and d < TOL
        print(f"loss_curve_W1_nccl_vs_mpi_max_rel_diff={d:.3g} steps={nn}/{nm} ({'ok' if ok else 'FAIL'})")
        bad += not ok
    g = rows(f"{w}/gpu2.log")
    stalls = [r["save_stall_s"] for r in g if "save_stall_s" in r]
    print(f"dstrain_tiny_async_save_stall_s={max(stalls) if stalls else float('nan'):.4g} "
          f"median_step_s={median([r['step_s'] for r in g]):.4g} saves={len(stalls)}")
    # The device's step-10 checkpoint resumed on the CPU, and on the device (its
    # partitions staged and read on each rank's threads): steps 11.. continue the run.
    tail = g[10:]
    for log, what in (("cpu_resume", "resume_on_cpu"), ("dev_resume", "resume_on_device")):
        if log == "dev_resume" and not os.path.exists(f"{w}/{log}.log"):
            continue
        r = rows(f"{w}/{log}.log")
        d = max((rel(a["loss"], b["loss"]) for a, b in zip(r, tail)), default=float("inf"))
        ok = len(r) == len(tail) and r and r[0]["step"] == 11 and d < TOL
        print(f"{what}_steps={r[0]['step'] if r else '-'}..{r[-1]['step'] if r else '-'} "
              f"max_rel_diff_vs_device={d:.3g} ({'ok' if ok else 'FAIL'})")
        bad += not ok
    # The consolidated checkpoint, as Python's safetensors reads it.
    from safetensors.numpy import load_file
    t = load_file(f"{w}/gpu2.safetensors")
    n_layer = len({k.split(".")[2] for k in t if k.startswith("transformer.h.")})
    h = hashlib.sha256()
    for n in flat_names(n_layer):
        a = t[n]
        if str(a.dtype) != "float32":
            print(f"safetensors: {n} is {a.dtype}, not float32 (FAIL)")
            return 1
        h.update(a.astype("<f4").tobytes())
    want = g[-1].get("master_sha256", "")
    same = h.hexdigest() == want
    print(f"safetensors_master_matches_log={same} tensors={len(t)} n_layer={n_layer}")
    bad += not same
    return 1 if bad else 0


def report_gpt2(w, torch_log, L, C, T, B, peak=989e12):
    r = rows(f"{w}/gpt2.log")
    m = median([x["step_s"] for x in r[2:]] or [x["step_s"] for x in r])
    V = 256  # dstrain's byte-level vocabulary (the torch step runs with --vocab 256 too)
    nparams = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    flops = (6 * nparams + 12 * L * C * T) * B * T  # as bench/gpu/torch_gpt2_step.py counts them
    print(f"dstrain_gpt2_step_s={m:.4f} params={nparams} mfu={flops / m / peak:.4f} (of {peak / 1e12:.0f} TFLOP/s bf16)")
    st = [x["save_stall_s"] for x in r if "save_stall_s" in x]
    if st:
        print(f"dstrain_gpt2_async_save_stall_s={st[0]:.4f} stall_over_step={st[0] / m:.3f}")
    off = [x["step_s"] for x in rows(f"{w}/gpt2_off.log")]
    mo = median(off[1:] or off)
    print(f"dstrain_gpt2_offload_step_s={mo:.4f} offload_over_device={mo / m:.3f}")
    try:  # --print_memory of the same shape, without and with offload_optimizer
        m0, m1 = (json.loads(next(l for l in open(f"{w}/gpt2_mem{k}.json") if l.startswith("{"))) for k in (0, 1))
        saved = m0["device_used_bytes"] - m1["device_used_bytes"]
        formula = m0["formula_optim_bytes"]  # ZeRO-Offload: fp32 master + both moments leave the device
        print(f"offload_device_bytes_saved={saved} formula={formula} saved_over_formula={saved / formula:.3f} "
              f"device_used={m0['device_used_bytes']}/{m1['device_used_bytes']} optim_on_host={m1['optim_on_host']}")
    except (OSError, StopIteration, KeyError, ValueError) as e:
        print(f"offload_device_bytes_saved=unknown ({e})")
    try:  # stage 3 with offload_param too: the 16-bit parameters leave the device as well
        m1, m2 = (json.loads(next(l for l in open(f"{w}/gpt2_mem{k}.json") if l.startswith("{"))) for k in (1, 2))
        po = [x["step_s"] for x in rows(f"{w}/gpt2_poff.log")]
        mp = median(po[1:] or po)
        print(f"param_offload_device_used={m2['device_used_bytes']} (stage 1 with the optimizer offloaded: "
              f"{m1['device_used_bytes']}; 16-bit parameters {2 * nparams}) step_s={mp:.4f} over_device={mp / m:.3f}")
    except (OSError, StopIteration, KeyError, ValueError) as e:
        print(f"param_offload=unknown ({e})")
    try:
        with open(torch_log) as f:
            t = re.search(r"bf16_step_s=([0-9.]+)", f.read())
    except OSError:
        t = None
    if t:
        print(f"dstrain_over_torch_bf16={m / float(t.group(1)):.3f} (target <= 1.0)")
    else:
        print("dstrain_over_torch_bf16=unknown (no torch figure in this run)")
    return 0


def main(argv):
    if len(argv) == 8 and argv[1] == "--gpt2":
        return report_gpt2(argv[2], argv[3], *(int(x) for x in argv[4:8]))
    if len(argv) == 2:
        return check_loss_ckpt(argv[1])
    print(__doc__, file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
