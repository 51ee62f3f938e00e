#!/usr/bin/env python3
"""A Hugging Face Trainer resumes from a resharded `checkpoint-N` and finishes with
`load_best_model_at_end` (manual check, not part of CI; see README.md beside this file).

    python hf_resume_check.py OUT M [--resume checkpoint-4] [--truth Z2F.bin] [--work DIR]

OUT is what `dsckpt reshard fixtures/deepspeed-0.19/hf_trainer_z3/output --to M --format
deepspeed -o OUT` wrote (a Trainer output_dir holding checkpoint-N/, or one checkpoint-N/
itself). The script starts M worker processes (torch.distributed over gloo, DeepSpeed's CPU
accelerator, its shared-memory op not built). Each worker builds GPT2LMHeadModel from the
checkpoint's config.json and a Trainer with the settings the fixture was trained with
(training_args.bin: ZeRO-3 bf16, batch 4 per device, eval/save every 4 steps, max_steps 12,
save_total_limit 2, load_best_model_at_end on eval_loss) writing to a NEW output_dir (under
--work), and calls trainer.train(resume_from_checkpoint=OUT/<resume>). The current working
directory is --work, so the original `output/checkpoint-4` path stored by the fixture's
Trainer does not resolve.

The data are random tokens, and label_smoothing_factor is 1.0, so every loss is the mean over
the vocabulary of -log p, which is >= ln(vocab) = 6.908 per predicted token (Jensen), >= 6.80
per label token with 64-token sequences -- above the fixture's best eval_loss (6.713 at step 4): no evaluation after the resume can beat it, the best checkpoint
stays the resharded checkpoint-4, and the Trainer must load it at the end through
trainer_state.json's best_model_checkpoint (the objective after the resume does not matter
here). Pass: global_step 12, the Trainer loaded the best model from the resharded checkpoint-4,
and the fp32 master weights after that load are bitwise equal to --truth (DeepSpeed's
zero_to_fp32 of the original checkpoint-4 at W = 2).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TRUTH = os.path.join(ROOT, "fixtures", "deepspeed-0.19", "hf_trainer_z3", "expected",
                             "zero_to_fp32_checkpoint-4", "pytorch_model.bin")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def resume_dir(out, name):
    if os.path.basename(os.path.normpath(out)).startswith("checkpoint-"):
        return out
    return os.path.join(out, name)


def launch(args):
    os.makedirs(args.work, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(args.world_size):
        env = dict(os.environ)
        env.update({
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(args.world_size),
            "LOCAL_WORLD_SIZE": str(args.world_size), "LOCAL_SIZE": str(args.world_size),
            "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_RESUME_VERDICT": os.path.join(args.work, f"verdict_rank{rank}.json"),
        })
        log = open(os.path.join(args.work, f"rank{rank}.log"), "w")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + args.raw_argv
        procs.append((subprocess.Popen(cmd, env=env, cwd=args.work, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    deadline = time.time() + args.timeout
    timed_out = False
    for p, _ in procs:
        try:
            p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()  # only our own children, by handle
        for p, _ in procs:
            p.wait()
    ok = not timed_out
    for rank, (p, log) in enumerate(procs):
        log.close()
        vpath = os.path.join(args.work, f"verdict_rank{rank}.json")
        v = None
        if os.path.exists(vpath):
            with open(vpath) as f:
                v = json.loads(f.read())
        if v is None:
            v = {"rank": rank, "ok": False,
                 "error": "timeout" if timed_out else f"worker exited {p.returncode} without verdict"}
        v["exit_code"] = p.returncode
        ok = ok and bool(v.get("ok")) and p.returncode == 0
        print("VERDICT " + json.dumps(v, sort_keys=True), flush=True)
        if not v.get("ok"):
            with open(os.path.join(args.work, f"rank{rank}.log")) as f:
                sys.stderr.write(f"---- rank {rank} log tail ----\n{f.read()[-3000:]}\n")
    print("SUMMARY " + json.dumps({"ok": ok, "world_size": args.world_size, "out": args.out,
                                   "timed_out": timed_out}), flush=True)
    return 0 if ok else 1


def worker(args):
    rank = int(os.environ["RANK"])
    verdict = {"rank": rank, "world_size": args.world_size, "ok": False}
    problems = []
    try:
        import importlib
        import torch
        import deepspeed
        import transformers
        ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
        ds_comm_torch.build_shm_op = lambda: None  # no JIT build, nothing left in /dev/shm
        from transformers import (GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments,
                                  TrainerCallback)
        verdict.update(torch=torch.__version__, deepspeed=deepspeed.__version__,
                       transformers=transformers.__version__)

        ckpt = resume_dir(args.out, args.resume)
        with open(os.path.join(ckpt, "trainer_state.json")) as f:
            state = json.load(f)
        verdict["resume_from"] = ckpt
        verdict["stored_best_model_checkpoint"] = state.get("best_model_checkpoint")
        config = GPT2Config.from_pretrained(ckpt)
        ds_config = {
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto", "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False,
            "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
            "steps_per_print": 1000000, "wall_clock_breakdown": False, "bf16": {"enabled": "auto"},
        }
        targs = TrainingArguments(
            output_dir=os.path.join(args.work, "output"), per_device_train_batch_size=4,
            per_device_eval_batch_size=4, gradient_accumulation_steps=1, max_steps=12,
            learning_rate=1e-3, lr_scheduler_type="linear", weight_decay=0.01,
            optim="adamw_torch_fused", eval_strategy="steps", eval_steps=4, save_steps=4,
            save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss",
            greater_is_better=False, bf16=True, seed=1234, logging_steps=1, report_to=[],
            deepspeed=ds_config, save_only_model=False, use_cpu=True, dataloader_pin_memory=False,
            # loss = mean over the vocabulary of -log p >= ln(vocab) = 6.908 per predicted token
            # (Jensen); the Trainer divides the sum by all seq label tokens, seq - 1 of which are
            # predicted: >= 63/64 * 6.908 = 6.80 > 6.713, the fixture's best eval_loss (step 4),
            # so no later evaluation can beat checkpoint-4
            label_smoothing_factor=1.0)
        model = GPT2LMHeadModel(config)

        g = torch.Generator().manual_seed(99)
        seq = config.n_positions  # 64: see the loss bound below

        class Tokens(torch.utils.data.Dataset):
            def __init__(self, n, gen, lo, hi):
                self.ids = torch.randint(lo, hi, (n, seq), generator=gen)

            def __len__(self):
                return len(self.ids)

            def __getitem__(self, i):
                return {"input_ids": self.ids[i], "labels": self.ids[i]}

        train_ds, eval_ds = Tokens(256, g, 0, config.vocab_size), Tokens(16, g, 0, config.vocab_size)
        events = []

        class Record(TrainerCallback):
            def on_evaluate(self, a, st, c, metrics=None, **kw):
                events.append({"step": st.global_step, "eval_loss": (metrics or {}).get("eval_loss")})

        trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                          callbacks=[Record()])
        # _load_best_model logs "Loading best model from <path> (score: ...)"; catch it
        loaded_best = []
        orig_load_best = trainer._load_best_model

        def load_best():
            loaded_best.append(trainer.state.best_model_checkpoint)
            return orig_load_best()

        trainer._load_best_model = load_best
        result = trainer.train(resume_from_checkpoint=ckpt)
        verdict["global_step"] = trainer.state.global_step
        verdict["evals"] = events
        verdict["best_model_checkpoint"] = trainer.state.best_model_checkpoint
        verdict["loaded_best_from"] = loaded_best
        verdict["train_loss"] = result.training_loss
        if trainer.state.global_step != 12:
            problems.append(f"global_step {trainer.state.global_step} != 12")
        if not loaded_best:
            problems.append("the Trainer did not load the best model at the end")
        best = trainer.state.best_model_checkpoint or ""
        if os.path.realpath(best) != os.path.realpath(resume_dir(args.out, "checkpoint-4")):
            problems.append(f"best_model_checkpoint {best!r} is not the resharded checkpoint-4")

        # the weights after load_best_model_at_end: fp32 master == zero_to_fp32 of checkpoint-4
        from deepspeed.utils import safe_get_full_fp32_param
        truth = torch.load(args.truth, map_location="cpu", weights_only=True)
        engine = trainer.model_wrapped
        n_ok = 0
        seen = set()
        for name, p in engine.module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            got = safe_get_full_fp32_param(p)
            want = truth.get(name)
            if want is None:
                problems.append(f"{name}: not in truth")
                continue
            got = got.reshape(want.shape)
            if got.dtype != want.dtype or not torch.equal(got.view(torch.int32), want.view(torch.int32)):
                d = (got.float() - want.float()).abs().max().item()
                problems.append(f"{name}: fp32 master after load_best differs (max abs {d})")
            else:
                n_ok += 1
        verdict["fp32_master_equal_to_truth"] = n_ok
        verdict["problems"] = problems[:20]
        verdict["ok"] = not problems and n_ok > 0
    except BaseException as e:  # noqa: BLE001 - every failure must produce a verdict
        verdict["error"] = f"{type(e).__name__}: {e}"
        verdict["problems"] = problems[:20]
        traceback.print_exc()
    line = json.dumps(verdict, sort_keys=True, default=str)
    vpath = os.environ["HF_RESUME_VERDICT"]
    with open(vpath + ".tmp", "w") as f:
        f.write(line + "\n")
    os.replace(vpath + ".tmp", vpath)
    print("VERDICT " + line, flush=True)
    os._exit(0 if verdict["ok"] else 1)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="reshard output: a Trainer output_dir or one checkpoint-N")
    ap.add_argument("world_size", type=int, help="number of ranks M")
    ap.add_argument("--resume", default="checkpoint-4", help="checkpoint-N to resume from")
    ap.add_argument("--truth", default=DEFAULT_TRUTH,
                    help="DeepSpeed's zero_to_fp32 output (torch file) of the best checkpoint")
    ap.add_argument("--work", help="working directory: logs, the new output_dir (default: temp)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out = os.path.abspath(args.out)
    args.truth = os.path.abspath(args.truth)
    if not args.work:
        args.work = tempfile.mkdtemp(prefix="hf_resume_check_")
    args.work = os.path.abspath(args.work)
    if args.worker:
        return worker(args)
    args.raw_argv = [args.out, str(args.world_size), "--resume", args.resume, "--truth", args.truth,
                     "--work", args.work]
    return launch(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
