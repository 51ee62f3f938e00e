#!/usr/bin/env python3
"""torch_gpt2_step.py -- the PyTorch-eager baseline of scripts/gpu-check.sh: the step
time of a GPT-2-124M-shaped model (12 layers, 768 wide, 12 heads, seq 1024, vocab
50257, tied LM head, GELU tanh, LayerNorm eps 1e-5, AdamW) on one GPU, forward +
backward + optimizer step, in bf16 autocast (fp32 master weights, as dstrain's bf16
mode) and in fp32 (TF32 off). Timed with CUDA events after warm-up steps on random
tokens; the median step is printed with the model FLOP utilisation against the
dense peak given by --peak-bf16 / --peak-fp32 (defaults: the H100/H200 SXM
datasheet, 989 and 67 TFLOP/s).

Output: key=value lines (device, params, <dtype>_step_s, <dtype>_tokens_per_s,
<dtype>_mfu). Exit 77 (printed SKIPPED) when no CUDA device is visible.
--smoke runs two tiny fp32 steps on the CPU (a check of this script, no figures).
"""
import argparse
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH, attn):
        super().__init__()
        self.NH, self.attn = NH, attn
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        if self.attn == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # the same math as dstrain's kernels: scores, masked softmax, product
            s = (q @ k.transpose(-2, -1)) / (C // self.NH) ** 0.5
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, n_ctx, L, NH, C, attn):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(n_ctx, C)
        self.h = nn.ModuleList(Block(C, NH, attn) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif not name.endswith("ln_1.weight") and not name.endswith("ln_2.weight") and name != "ln_f.weight":
                nn.init.zeros_(p)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied LM head


def run(args, dtype):
    torch.manual_seed(1234)
    dev = torch.device("cpu" if args.smoke else "cuda")
    m = GPT(args.vocab, args.seq, args.layers, args.heads, args.width, args.attn).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            fused=not args.smoke)
    nparams = sum(p.numel() for p in m.parameters())
    tok = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=dev)
    x, y = tok[:, :-1], tok[:, 1:]
    times = []
    for i in range(args.warmup + args.steps):
        if args.smoke:
            c0 = time.perf_counter()
        else:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=(dtype == "bf16")):
            logits = m(x)
            loss = F.cross_entropy(logits.float().view(-1, args.vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.smoke:
            dt = time.perf_counter() - c0
        else:
            t1.record()
            torch.cuda.synchronize()
            dt = t0.elapsed_time(t1) / 1000.0
        if not torch.isfinite(loss):
            raise SystemExit(f"{dtype}: loss is {loss.item()}")
        if i >= args.warmup:
            times.append(dt)
    times.sort()
    step = times[len(times) // 2]
    B, T, L, C = args.batch, args.seq, args.layers, args.width
    flops = (6 * nparams + 12 * L * C * T) * B * T  # matmul FLOPs per step, attention included
    peak = args.peak_bf16 if dtype == "bf16" else args.peak_fp32
    print(f"params={nparams}")
    print(f"{dtype}_step_s={step:.5f}")
    print(f"{dtype}_step_spread_s={times[-1] - times[0]:.5f}")
    print(f"{dtype}_tokens_per_s={B * T / step:.0f}")
    print(f"{dtype}_mfu={flops / step / peak:.4f} (of {peak / 1e12:.0f} TFLOP/s)")
    print(f"{dtype}_final_loss={loss.item():.4f}")
    del m, opt
    if not args.smoke:
        torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attn", choices=["sdpa", "naive"], default="sdpa")
    p.add_argument("--dtype", choices=["bf16", "fp32", "both"], default="both")
    p.add_argument("--peak-bf16", type=float, default=989e12)
    p.add_argument("--peak-fp32", type=float, default=67e12)
    p.add_argument("--smoke", action="store_true", help="two tiny fp32 steps on the CPU")
    args = p.parse_args()
    if args.smoke:
        args.batch, args.seq, args.layers, args.heads, args.width, args.vocab = 2, 16, 2, 2, 32, 97
        args.steps, args.warmup = 2, 1
        for attn in ("sdpa", "naive"):
            args.attn = attn
            run(args, "fp32")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device visible to torch")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device={torch.cuda.get_device_name(0)} torch={torch.__version__} cuda={torch.version.cuda}")
    for dt in (["bf16", "fp32"] if args.dtype == "both" else [args.dtype]):
        run(args, dt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
