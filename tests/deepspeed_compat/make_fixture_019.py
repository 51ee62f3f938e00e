#!/usr/bin/env python3
"""Make a small DeepSpeed checkpoint fixture with the real engine (manual; not part of CI).

    python make_fixture_019.py OUT --stage 0 --dtype bf16 [--world-size 2] [--steps 3]

Starts W CPU worker processes (torch.distributed over gloo, DeepSpeed's CPU accelerator,
DeepSpeed's shared-memory op not built), trains a seeded model of the fixtures' family
(`../../fixtures/deepspeed-0.19/README.md`: tied embed/head, frozen `aux_in.*`, a persistent
fp32 buffer `pos_scale`, two AdamW parameter groups) for --steps steps with
torch.optim.AdamW as the client optimizer and saves with engine.save_checkpoint(OUT/ckpt).
Rank 0 then writes, from the live engine:

  OUT/expected/truth.safetensors  fp32/<p>, exp_avg/<p>, exp_avg_sq/<p> for every trainable
                                  parameter, frozen/<p> and buffer/<p> as the module holds them
                                  (metadata "aliases": tied names as JSON)
  OUT/expected/info.json          config, shapes, optimizer class, versions, and what
                                  DeepSpeed's own zero_to_fp32 did with the checkpoint

The true values come from the optimizer's own objects: for ZeRO-1/2/3 through
deepspeed.utils.safe_get_full_fp32_param / safe_get_full_optimizer_state; for ZeRO-0 (no
partitioning: those helpers return None) from the 16-bit wrapper's fp32 master copies
(FP16_UnfusedOptimizer.fp32_groups, FP16_Optimizer.fp32_groups_flat) or, in fp32, from the
parameters themselves, with the Adam moments from the torch optimizer's state of each master.
Sizes are kept small (vocab 61, d_model 8): the files are a few KB.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

MODEL = {"vocab": 61, "d_model": 8, "ff": 5, "layers": 2, "aux": 3, "max_seq": 7}


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch(args):
    world = args.world_size
    port = free_port()
    logdir = tempfile.mkdtemp(prefix="ds_make_fixture_")
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                    "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                    "LOCAL_SIZE": str(world), "DS_ACCELERATOR": "cpu",
                    "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
        log = open(os.path.join(logdir, f"rank{rank}.log"), "w")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + args.raw_argv
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    deadline = time.time() + args.timeout
    rc = 0
    for p, _ in procs:
        try:
            p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            rc = 1
            break
    for p, _ in procs:
        if p.poll() is None:
            p.kill()  # only our own children, by handle
            p.wait()
        rc = rc or p.returncode
    for _, log in procs:
        log.close()
    if rc:
        for rank in range(world):
            with open(os.path.join(logdir, f"rank{rank}.log")) as f:
                sys.stderr.write(f"---- rank {rank} ----\n{f.read()[-4000:]}\n")
    print(f"logs: {logdir}; exit {rc}")
    return rc


def build_model(torch):
    nn = torch.nn
    m = MODEL

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(m["d_model"])
            self.fc1 = nn.Linear(m["d_model"], m["ff"])
            self.fc2 = nn.Linear(m["ff"], m["d_model"])
            self.proj = nn.Linear(m["d_model"], m["d_model"], bias=False)

        def forward(self, x):
            h = self.fc2(torch.nn.functional.gelu(self.fc1(self.ln(x))))
            return x + self.proj(h)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(m["vocab"], m["d_model"])
            self.blocks = nn.ModuleList([Block() for _ in range(m["layers"])])
            self.aux_in = nn.Linear(m["d_model"], m["aux"])
            self.aux_out = nn.Linear(m["aux"], m["d_model"], bias=False)
            self.ln_f = nn.LayerNorm(m["d_model"])
            self.head = nn.Linear(m["d_model"], m["vocab"], bias=False)
            self.head.weight = self.embed.weight  # tied
            self.pos = nn.Parameter(torch.randn(m["max_seq"], m["d_model"]) * 0.02)
            self.register_buffer("pos_scale", torch.linspace(0.5, 1.5, m["max_seq"]), persistent=True)
            for p in self.aux_in.parameters():
                p.requires_grad_(False)  # frozen

        def forward(self, ids):
            t = ids.shape[1]
            x = self.embed(ids)
            x = x + self.pos[:t] * self.pos_scale[:t, None].to(x.dtype)
            for b in self.blocks:
                x = b(x)
            x = x + self.aux_out(self.aux_in(x))
            logits = self.head(self.ln_f(x)).float()
            return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, m["vocab"]),
                                                     ids[:, 1:].reshape(-1))

    return Net()


def ds_config(args):
    cfg = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
           "steps_per_print": 1000000000, "wall_clock_breakdown": False, "zero_allow_untested_optimizer": True,
           "zero_optimization": {"stage": args.stage}}
    if args.dtype == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif args.dtype == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 8}
    return cfg


def master_and_state(torch, engine, params_by_id):
    """{param name: (fp32 master, exp_avg, exp_avg_sq)} for ZeRO-0, read from the optimizer."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)
    out = {}
    if hasattr(opt, "fp32_groups") and hasattr(opt, "fp16_groups"):  # FP16_UnfusedOptimizer
        for lp_group, hp_group in zip(opt.fp16_groups, opt.fp32_groups):
            for lp, hp in zip(lp_group, hp_group):
                st = inner.state[hp]
                out[params_by_id[id(lp)]] = (hp, st["exp_avg"], st["exp_avg_sq"])
    elif hasattr(opt, "fp32_groups_flat"):  # FP16_Optimizer (fused)
        for lp_group, flat in zip(opt.fp16_groups, opt.fp32_groups_flat):
            st = inner.state[flat]
            pos = 0
            for lp in lp_group:
                n = lp.numel()
                out[params_by_id[id(lp)]] = tuple(t.narrow(0, pos, n).view(lp.shape)
                                                  for t in (flat, st["exp_avg"], st["exp_avg_sq"]))
                pos += n
    else:  # fp32, no wrapper: the parameters are the masters
        for g in inner.param_groups:
            for p in g["params"]:
                st = inner.state[p]
                out[params_by_id[id(p)]] = (p, st["exp_avg"], st["exp_avg_sq"])
    return out


def worker(args):
    rank = int(os.environ["RANK"])
    import torch
    import deepspeed
    import importlib
    ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    if hasattr(ds_comm_torch, "build_shm_op"):
        ds_comm_torch.build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(20261205)
    model = build_model(torch)
    named = dict(model.named_parameters())
    decay = [p for n, p in named.items() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in named.items() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95))
    cfg = ds_config(args)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    gen = torch.Generator().manual_seed(1000 + rank)
    for _ in range(args.steps):
        ids = torch.randint(0, MODEL["vocab"], (2, MODEL["max_seq"]), generator=gen)
        loss = engine(ids)
        engine.backward(loss)
        engine.step()
    ckpt = os.path.join(args.out, "ckpt")
    engine.save_checkpoint(ckpt)
    torch.distributed.barrier()
    if rank == 0:
        from safetensors.torch import save_file
        params_by_id = {}
        for n, p in engine.module.named_parameters():  # first name of a tied parameter wins
            params_by_id.setdefault(id(p), n)
        truth = {}
        if args.stage == 0:
            ms = master_and_state(torch, engine, params_by_id)
            for n, (hp, ea, eas) in ms.items():
                truth[f"fp32/{n}"] = hp.detach().float().clone().contiguous()
                truth[f"exp_avg/{n}"] = ea.detach().clone().contiguous()
                truth[f"exp_avg_sq/{n}"] = eas.detach().clone().contiguous()
        else:
            from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
            for n, p in engine.module.named_parameters():
                if p.requires_grad and params_by_id[id(p)] == n:
                    truth[f"fp32/{n}"] = safe_get_full_fp32_param(p).clone().contiguous()
                    truth[f"exp_avg/{n}"] = safe_get_full_optimizer_state(p, "exp_avg").clone().contiguous()
                    truth[f"exp_avg_sq/{n}"] = safe_get_full_optimizer_state(p, "exp_avg_sq").clone().contiguous()
        for n, p in engine.module.named_parameters():
            if not p.requires_grad and params_by_id[id(p)] == n:
                truth[f"frozen/{n}"] = p.detach().clone().contiguous()
        for n, b in engine.module.named_buffers():
            truth[f"buffer/{n}"] = b.detach().clone().contiguous()
        aliases = {n: params_by_id[id(p)] for n, p in engine.module.named_parameters(remove_duplicate=False)
                   if params_by_id[id(p)] != n}
        exp = os.path.join(args.out, "expected")
        os.makedirs(exp, exist_ok=True)
        save_file(truth, os.path.join(exp, "truth.safetensors"), metadata={"aliases": json.dumps(aliases)})
        with open(os.path.join(ckpt, "latest")) as f:
            tag = f.read().strip()
        info = {"aliases": aliases, "deepspeed_version": deepspeed.__version__, "torch_version": torch.__version__,
                "ds_config": cfg, "dtype": args.dtype, "model": MODEL, "steps": args.steps, "tag": tag,
                "optimizer_class": type(engine.optimizer).__name__, "param_groups": len(opt.param_groups),
                "n_params_trainable": sum(p.numel() for p in decay + no_decay),
                "n_params_unique": sum(p.numel() for p in model.parameters()),
                "world_size": int(os.environ["WORLD_SIZE"]), "zero_stage": args.stage,
                "deepspeed_converters": {"zero_to_fp32": zero_to_fp32_verdict(ckpt, tag)}}
        with open(os.path.join(exp, "info.json"), "w") as f:
            json.dump(info, f, indent=1, sort_keys=True)
            f.write("\n")
    torch.distributed.barrier()
    return 0


def zero_to_fp32_verdict(ckpt, tag):
    """What DeepSpeed's own zero_to_fp32 does with the checkpoint: "ok" or the error."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        get_fp32_state_dict_from_zero_checkpoint(ckpt, tag=tag)
        return "ok"
    except BaseException as e:  # noqa: BLE001 - recorded, not raised
        return f"fails: {type(e).__name__}: {str(e)[:200]}"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="fixture directory to create (ckpt/ and expected/ go inside)")
    ap.add_argument("--stage", type=int, default=0, choices=(0, 1, 2, 3))
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--force", action="store_true", help="replace an existing OUT")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out = os.path.abspath(args.out)
    if args.worker:
        try:
            return worker(args)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
    if os.path.exists(args.out):
        if not args.force:
            ap.error(f"{args.out} exists (use --force)")
        shutil.rmtree(args.out)
    args.raw_argv = [a for a in argv if a != "--force"]
    return launch(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
