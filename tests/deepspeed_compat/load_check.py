#!/usr/bin/env python3
"""Check that real DeepSpeed (engine.load_checkpoint) accepts a ZeRO checkpoint at world size M.

Manual, optional check (not part of CI); see README.md beside this file for the environment.

    python load_check.py SAVE_DIR M [--truth expected/truth.safetensors] [--train-step]

SAVE_DIR is what was passed to engine.save_checkpoint(SAVE_DIR): it holds `latest` and the tag
directory (with --universal: `latest_universal` and the `<tag>_universal` directory, loaded with
"checkpoint": {"load_universal": true}). The script starts M worker processes on this machine (torch.distributed, gloo backend,
DeepSpeed's CPU accelerator). Each worker

  (a) rebuilds a torch model whose parameters/buffers match the checkpoint (names and shapes
      from the model-states file: param_shapes, frozen_param_shapes, buffer_names, shared_params,
      module), one optimizer param group per flat group in param_shapes (same order),
  (b) runs deepspeed.initialize with the checkpoint's own ds_config (model-states `ds_config`) and
      torch.optim.AdamW, at world size M,
  (c) calls engine.load_checkpoint(SAVE_DIR, load_optimizer_states=True,
      load_lr_scheduler_states=True),
  (d) gathers the full fp32 master weights and Adam moments (deepspeed.utils.safe_get_full_*),
      the 16-bit/working weights, frozen params and buffers, and compares them BITWISE with the
      truth file (safetensors: fp32/<name>, exp_avg/<name>, exp_avg_sq/<name>, frozen/<name>,
      buffer/<name>; the layout of fixtures/deepspeed/*/expected/truth.safetensors),
  (e) writes a one-line JSON verdict; the launcher prints one line per rank, prefixed
      "VERDICT ", then a summary line "SUMMARY {...}", and exits non-zero on any mismatch,
      exception or timeout,
  (f) with --train-step, runs one forward/backward/step afterwards to show training continues.

Without --truth only (a)-(c), the structural checks and (f) are done.
"""

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------------------
# launcher
# --------------------------------------------------------------------------------------------

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch(args):
    world = args.world_size
    port = args.port or free_port()
    logdir = args.log_dir or tempfile.mkdtemp(prefix="ds_load_check_")
    os.makedirs(logdir, exist_ok=True)
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update({
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            # DeepSpeed's CPU accelerator reads its device_count() from LOCAL_SIZE (as deepspeed's
            # own launcher sets it); without it, it shells out to `numactl --hardware`
            "LOCAL_SIZE": str(world),
            "DS_ACCELERATOR": "cpu",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "DS_LOAD_CHECK_VERDICT": os.path.join(logdir, f"verdict_rank{rank}.json"),
        })
        log = open(os.path.join(logdir, f"rank{rank}.log"), "w")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + args.raw_argv
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))

    deadline = time.time() + args.timeout
    timed_out = False
    for p, _ in procs:
        left = deadline - time.time()
        try:
            p.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()  # only our own children, by handle
        for p, _ in procs:
            p.wait()
    for _, log in procs:
        log.close()

    all_ok = not timed_out
    n_ok = 0
    for rank, (p, _) in enumerate(procs):
        vpath = os.path.join(logdir, f"verdict_rank{rank}.json")
        verdict = None
        if os.path.exists(vpath):
            with open(vpath) as f:
                txt = f.read().strip()
            try:
                verdict = json.loads(txt)
            except ValueError:
                verdict = None
        if verdict is None:
            verdict = {"rank": rank, "world_size": world, "ok": False,
                       "error": "timeout" if timed_out else f"worker exited {p.returncode} without verdict"}
        verdict["exit_code"] = p.returncode
        ok = bool(verdict.get("ok")) and p.returncode == 0
        n_ok += ok
        all_ok = all_ok and ok
        print("VERDICT " + json.dumps(verdict, sort_keys=True), flush=True)
        if not ok and not args.quiet:
            with open(os.path.join(logdir, f"rank{rank}.log")) as f:
                tail = f.read()[-3000:]
            sys.stderr.write(f"---- rank {rank} log tail ({logdir}/rank{rank}.log) ----\n{tail}\n")
    summary = {"ok": all_ok, "ranks_ok": n_ok, "world_size": world, "save_dir": args.save_dir,
               "truth": args.truth, "timed_out": timed_out, "logs": logdir}
    print("SUMMARY " + json.dumps(summary, sort_keys=True), flush=True)
    return 0 if all_ok else 1


# --------------------------------------------------------------------------------------------
# worker
# --------------------------------------------------------------------------------------------

def read_tag(save_dir, tag, universal=False):
    if tag:
        return tag
    with open(os.path.join(save_dir, "latest_universal" if universal else "latest")) as f:
        return f.read().strip()


def model_states_path(save_dir, tag):
    d = os.path.join(save_dir, tag)
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"no mp_rank_00_model_states.pt / zero_pp_rank_0_mp_rank_00_model_states.pt in {d}")


def zero0_groups(torch, sd, buffer_names):
    """ZeRO-0 saves no param_shapes / shared_params: tied names are second names of one storage
    in `module`; each optimizer entry (FP16_UnfusedOptimizer's fp32_groups[g][k], or torch's
    state of the k-th parameter of group g) is the module entry of its shape, in module order
    within the group, preferring the one whose working weights are the fp32 master's cast."""
    module_sd = sd["module"]
    shared, seen = {}, {}
    for name, t in module_sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and key in seen:
            shared[name] = seen[key]
        else:
            seen.setdefault(key, name)
    opt = sd.get("optimizer") or {}
    hp = opt.get("fp32_groups")
    inner = opt["optimizer_state_dict"] if hp is not None else opt
    names = [n for n in module_sd if n not in buffer_names and n not in shared]
    taken, groups = set(), []
    for g, pg in enumerate(inner["param_groups"]):
        out, prev = [], 0
        for k, idx in enumerate(pg["params"]):
            master = hp[g][k] if hp is not None else None
            shape = tuple((master if master is not None else inner["state"][idx]["exp_avg"]).shape)
            order = names[prev:] + names[:prev]
            cands = [n for n in order if n not in taken and tuple(module_sd[n].shape) == shape]
            pick = None
            for n in cands:
                if master is None or torch.equal(master.to(module_sd[n].dtype), module_sd[n]):
                    pick = n
                    break
            pick = pick or (cands[0] if cands else None)
            if pick is None:
                raise ValueError(f"ZeRO-0: optimizer entry {g}/{k} of shape {shape} matches no module entry")
            taken.add(pick)
            prev = names.index(pick) + 1
            out.append((pick, shape))
        groups.append(out)
    return shared, groups


def zero0_full(engine, p, kind):
    """ZeRO-0 (safe_get_full_* return None there): fp32 master / Adam moment of parameter p."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)
    hp = p
    if hasattr(opt, "fp32_groups") and hasattr(opt, "fp16_groups"):
        for lg, hg in zip(opt.fp16_groups, opt.fp32_groups):
            for lp, h in zip(lg, hg):
                if lp is p:
                    hp = h
    if kind == "fp32":
        return hp.detach().float()
    return inner.state[hp][kind]


def build_model(torch, sd, stage):
    """A module tree whose state_dict keys, parameter identities and shapes match the checkpoint."""
    nn = torch.nn
    module_sd = sd["module"]
    buffer_names = list(sd.get("buffer_names") or [])
    shared = dict(sd.get("shared_params") or {})
    groups = [list(g.items()) for g in (sd.get("param_shapes") or [])]
    if stage == 0 and not groups:
        shared, groups = zero0_groups(torch, sd, buffer_names)
    trainable = collections.OrderedDict()
    for g in groups:
        for name, shape in g:
            trainable[name] = tuple(shape)
    frozen_shapes = sd.get("frozen_param_shapes")
    frozen = collections.OrderedDict()
    if frozen_shapes is not None:
        for name, shape in frozen_shapes.items():
            frozen[name] = tuple(shape)
    else:  # stage 0/1 saves no frozen metadata: whatever else is in `module` is frozen
        for name, t in module_sd.items():
            if name in buffer_names or name in trainable or name in shared:
                continue
            frozen[name] = tuple(t.shape)

    class Node(nn.Module):
        """Generic container. forward() touches every direct parameter and buffer (so ZeRO-3's
        per-module hooks gather them) and then calls the children."""

        def forward(self, x):
            acc = x.new_zeros(())
            for p in self._parameters.values():
                if p is not None:
                    acc = acc + (p.float() * x.float().mean()).square().sum() * 1e-3
            for b in self._buffers.values():
                if b is not None and b.is_floating_point():
                    acc = acc + b.float().sum().detach() * 0.0
            for child in self._modules.values():
                acc = acc + child(x)
            return acc

    root = Node()

    def owner(path, create=True):
        parts = path.split(".")
        m = root
        for p in parts[:-1]:
            if p not in m._modules:
                if not create:
                    raise KeyError(path)
                m.add_module(p, Node())
            m = m._modules[p]
        return m, parts[-1]

    gen = torch.Generator().manual_seed(20240917)
    params = {}

    def new_param(name, shape, requires_grad):
        # deliberately NOT the checkpoint values: a successful load must overwrite them
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02 + 7.0
        p = nn.Parameter(t, requires_grad=requires_grad)
        m, leaf = owner(name)
        m.register_parameter(leaf, p)
        params[name] = p
        return p

    # create in the order of the saved state_dict, so named_parameters() reports the tied source first
    order = list(module_sd.keys())
    for extra in list(trainable) + list(frozen) + buffer_names + list(shared):
        if extra not in order:
            order.append(extra)
    for name in order:
        if name in buffer_names:
            t = module_sd[name]
            m, leaf = owner(name)
            m.register_buffer(leaf, torch.zeros(t.shape, dtype=t.dtype), persistent=True)
        elif name in shared:
            continue
        elif name in trainable:
            new_param(name, trainable[name], True)
        elif name in frozen:
            new_param(name, frozen[name], False)
        else:
            raise ValueError(f"state_dict key {name!r} is not a buffer, param, frozen param or alias")
    for alias, src in shared.items():
        if src not in params:
            raise ValueError(f"shared_params: alias {alias!r} -> {src!r}, but {src!r} is not a parameter")
        m, leaf = owner(alias)
        m.register_parameter(leaf, params[src])

    opt_groups = [[params[name] for name, _ in g] for g in groups]
    return root, params, trainable, frozen, buffer_names, shared, opt_groups


def bits(torch, t):
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.dtype in (torch.float32, torch.int32):
        return t.view(torch.int32)
    if t.dtype in (torch.bfloat16, torch.float16, torch.int16):
        return t.view(torch.int16)
    if t.dtype in (torch.float64, torch.int64):
        return t.view(torch.int64)
    return t


def compare(torch, got, want):
    """None if bitwise equal (same dtype, shape, bits), else a short description."""
    if got is None:
        return "engine returned None"
    got = got.detach().cpu()
    if tuple(got.shape) != tuple(want.shape):
        return f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != {want.dtype}"
    a, b = bits(torch, got), bits(torch, want)
    if torch.equal(a, b):
        return None
    diff = (a != b)
    n = int(diff.sum())
    i = int(diff.nonzero()[0])
    ga, wb = got.reshape(-1)[i].item(), want.reshape(-1)[i].item()
    return f"{n}/{a.numel()} elements differ; first at flat {i}: {ga!r} != {wb!r}"


def worker(args):
    verdict_path = os.environ["DS_LOAD_CHECK_VERDICT"]
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    verdict = {"rank": rank, "world_size": world, "ok": False, "save_dir": args.save_dir}
    mismatches = []
    counts = collections.Counter()

    def bad(kind, name, msg):
        if args.universal and kind in ("frozen", "buffer"):
            # DeepSpeed's universal load (engine._load_checkpoint with load_universal) never calls
            # load_module_state_dict: frozen parameters and buffers keep their initial values
            # whatever the checkpoint holds (also with ds_to_universal's own output). Reported,
            # not counted as a failure of the checkpoint.
            counts[kind + "_not_restored_by_universal_load"] += 1
            verdict.setdefault("universal_not_restored", []).append(f"{kind}/{name}")
            return
        counts[kind + "_bad"] += 1
        if len(mismatches) < 20:
            mismatches.append(f"{kind}/{name}: {msg}")

    try:
        import torch
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
        verdict["torch"] = torch.__version__
        verdict["deepspeed"] = deepspeed.__version__

        tag = read_tag(args.save_dir, args.tag, args.universal)
        verdict["tag"] = tag
        sd = torch.load(model_states_path(args.save_dir, tag), map_location="cpu")
        ds_config = sd.get("ds_config")
        if isinstance(ds_config, str):
            with open(ds_config) as f:
                ds_config = json.load(f)
        if args.ds_config:
            with open(args.ds_config) as f:
                ds_config = json.load(f)
        ds_config = json.loads(json.dumps(ds_config))  # plain copy
        # batch size bookkeeping must be consistent with the NEW world size
        ds_config.pop("train_batch_size", None)
        ds_config.setdefault("train_micro_batch_size_per_gpu", 1)
        ds_config.setdefault("gradient_accumulation_steps", 1)
        if args.universal:
            ds_config.setdefault("checkpoint", {})["load_universal"] = True
            verdict["load_universal"] = True
        stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        verdict["zero_stage"] = stage

        import torch.distributed as tdist
        sys.path.insert(0, HERE)
        import gloo_shim
        if args.gloo_shim == "off":
            shim = "off"
        elif args.gloo_shim == "on" or gloo_shim.needed():
            gloo_shim.install()  # torch < 2: bf16 + *_base collectives on gloo (and detach)
            shim = "full"
        else:
            gloo_shim.install_detach()  # torch >= 2: only detach tensors given to collectives
            shim = "detach"
        verdict["gloo_shim"] = shim
        if args.shm_op == "skip":
            # DeepSpeed's CPU accelerator JIT-builds (ninja + g++) a shared-memory all-reduce op in
            # TorchBackend.__init__ and leaves deepspeed_allreduce_buffer_* files in /dev/shm
            # (~66 MB per rank per run). Loading needs none of it: gloo does every collective.
            import importlib
            # (not `import deepspeed.comm.torch as m`: deepspeed.comm re-exports torch itself)
            ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
            if hasattr(ds_comm_torch, "build_shm_op"):
                ds_comm_torch.build_shm_op = lambda: None
                verdict["shm_op"] = "skipped"
        deepspeed.init_distributed(dist_backend="gloo")
        model, params, trainable, frozen, buffer_names, shared, opt_groups = build_model(torch, sd, stage)
        if not opt_groups:
            raise ValueError("checkpoint has no param_shapes (no trainable parameters?)")
        base_opt = torch.optim.AdamW([{"params": g} for g in opt_groups], lr=1e-3)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=base_opt, config=ds_config)
        verdict["optimizer_class"] = type(engine.optimizer).__name__

        load_path, client_state = engine.load_checkpoint(args.save_dir, tag=args.tag,
                                                         load_optimizer_states=True,
                                                         load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError("engine.load_checkpoint returned load_path=None")
        verdict["loaded"] = True
        verdict["global_steps"] = engine.global_steps
        if engine.global_steps != sd.get("global_steps"):
            bad("meta", "global_steps", f"{engine.global_steps} != {sd.get('global_steps')}")

        # ---- structural checks on this rank's optimizer state ----
        inner = getattr(engine.optimizer, "optimizer", engine.optimizer)  # the torch AdamW (ZeRO-0 fp32: itself)
        steps = set()
        n_groups = len(inner.param_groups)
        verdict["optimizer_groups"] = n_groups
        local_numel = 0
        if stage == 3:
            # ZeRO-3 keeps the inner optimizer's param_groups EMPTY between steps (_optimizer_step
            # puts the sub-group's fp32 partition in only for the step() call); the Adam state is
            # keyed by fp32_partitioned_groups_flat[sub_group]
            z3 = engine.optimizer
            local_groups = collections.defaultdict(list)
            for sg, fp32 in enumerate(z3.fp32_partitioned_groups_flat):
                local_groups[z3.sub_group_to_group_id[sg]].append(fp32)
            local_groups = [local_groups[g] for g in sorted(local_groups)]
        else:
            local_groups = [group["params"] for group in inner.param_groups]
        for gi, group_params in enumerate(local_groups):
            for p in group_params:
                local_numel += p.numel()
                st = inner.state.get(p, {})
                if "exp_avg" not in st or "exp_avg_sq" not in st:
                    bad("state", f"group{gi}", "no exp_avg/exp_avg_sq after load")
                    continue
                for k in ("exp_avg", "exp_avg_sq"):
                    if tuple(st[k].shape) != tuple(p.shape) or st[k].dtype != p.dtype:
                        bad("state", f"group{gi}.{k}",
                            f"{tuple(st[k].shape)}/{st[k].dtype} vs partition {tuple(p.shape)}/{p.dtype}")
                    else:
                        counts["state_ok"] += 1
                if "step" in st:
                    s = st["step"]
                    steps.add(float(s.item()) if torch.is_tensor(s) else float(s))
                else:
                    bad("state", f"group{gi}.step", "no Adam step after load")
        verdict["local_partition_numel"] = local_numel
        verdict["adam_step"] = sorted(steps)
        expected_step = float(sd.get("global_steps", 0) - sd.get("skipped_steps", 0))
        if verdict["optimizer_class"] == "FP16_UnfusedOptimizer":
            # its initialize_optimizer_states() takes one Adam step on zero gradients at start-up
            expected_step += 1
        if steps and steps != {expected_step} and not args.no_step_check:
            bad("state", "step", f"{sorted(steps)} != global_steps-skipped_steps={expected_step}")

        # ---- value checks against truth ----
        truth = None
        if args.truth:
            from safetensors.torch import load_file
            truth = load_file(args.truth)
        is_z3 = stage == 3
        if truth is not None:
            # ZeRO-1/2 and BF16_Optimizer link the Adam-state fragments to the 16-bit params lazily,
            # at the first step(); link them now (reads the state just loaded, changes nothing)
            zopt = engine.optimizer
            if hasattr(zopt, "_lazy_init_hp_params_optimizer_state"):
                zopt._hp_optimizer_states_linked = False
                zopt._lazy_init_hp_params_optimizer_state()
            # every rank must issue the same collectives in the same order: iterate in a fixed order
            for name in trainable:
                p = params[name]
                if stage == 0:
                    got = {k: zero0_full(engine, p, k) for k in ("fp32", "exp_avg", "exp_avg_sq")}
                else:
                    got = {"fp32": safe_get_full_fp32_param(p),
                           "exp_avg": safe_get_full_optimizer_state(p, "exp_avg"),
                           "exp_avg_sq": safe_get_full_optimizer_state(p, "exp_avg_sq")}
                for kind, val in got.items():
                    key = f"{kind}/{name}"
                    if key not in truth:
                        bad(kind, name, "not in truth file")
                        continue
                    if val is not None:
                        val = val.reshape(truth[key].shape)
                    msg = compare(torch, val, truth[key])
                    if msg:
                        bad(kind, name, msg)
                    else:
                        counts[kind + "_ok"] += 1
                # working (16-bit or fp32) weight must be the fp32 master cast to the model dtype
                if is_z3:
                    with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                        lp = p.data.detach().clone()
                else:
                    lp = p.data.detach().clone()
                want = truth[f"fp32/{name}"].to(lp.dtype)
                msg = compare(torch, lp.reshape(want.shape), want)
                if msg:
                    bad("lp", name, msg)
                else:
                    counts["lp_ok"] += 1
            for name in frozen:
                p = params[name]
                if is_z3:
                    with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                        val = p.data.detach().clone()
                else:
                    val = p.data.detach().clone()
                key = f"frozen/{name}"
                if key not in truth:
                    bad("frozen", name, "not in truth file")
                    continue
                msg = compare(torch, val.reshape(truth[key].shape), truth[key])
                if msg:
                    bad("frozen", name, msg)
                else:
                    counts["frozen_ok"] += 1
            named_buffers = dict(engine.module.named_buffers())
            for name in buffer_names:
                key = f"buffer/{name}"
                if key not in truth:
                    bad("buffer", name, "not in truth file")
                    continue
                msg = compare(torch, named_buffers[name], truth[key])
                if msg:
                    bad("buffer", name, msg)
                else:
                    counts["buffer_ok"] += 1
            # every trainable/frozen/buffer key of the truth file must have been checked
            known = set()
            for name in trainable:
                known |= {f"fp32/{name}", f"exp_avg/{name}", f"exp_avg_sq/{name}"}
            known |= {f"frozen/{n}" for n in frozen} | {f"buffer/{n}" for n in buffer_names}
            for key in truth:
                if key not in known:
                    bad("truth", key, "truth tensor has no counterpart in the checkpoint's model")
            # tied weights must really be one parameter
            def lookup(path):
                m = engine.module
                for part in path.split(".")[:-1]:
                    m = m._modules[part]
                return m._parameters.get(path.split(".")[-1])

            for alias, src in shared.items():
                if lookup(alias) is None or lookup(alias) is not lookup(src):
                    bad("alias", alias, f"not the same parameter as {src}")
                else:
                    counts["alias_ok"] += 1

        # ---- optional training step ----
        if args.train_step:
            x = torch.ones(2, 3)
            first = params[next(iter(trainable))]
            full = (lambda q: zero0_full(engine, q, "fp32")) if stage == 0 else safe_get_full_fp32_param
            before = full(first).clone()
            loss = engine(x)
            engine.backward(loss)
            engine.step()
            after = full(first)
            verdict["train_step"] = {"loss": float(loss.item()), "global_steps": engine.global_steps,
                                     "first_param_changed": bool(not torch.equal(before, after))}
            if not torch.isfinite(loss).item():
                bad("train", "loss", f"not finite: {loss.item()}")
            if engine.global_steps != sd.get("global_steps", 0) + 1:
                bad("train", "global_steps", f"{engine.global_steps}")

        verdict["checked"] = dict(sorted(counts.items()))
        verdict["mismatches"] = mismatches
        verdict["ok"] = not mismatches and not any(k.endswith("_bad") for k in counts)
    except BaseException as e:  # noqa: BLE001 - every failure must produce a verdict
        verdict["error"] = f"{type(e).__name__}: {e}"
        verdict["checked"] = dict(sorted(counts.items()))
        verdict["mismatches"] = mismatches
        traceback.print_exc()
        sys.stderr.flush()
    line = json.dumps(verdict, sort_keys=True, default=str)
    with open(verdict_path + ".tmp", "w") as f:
        f.write(line + "\n")
    os.replace(verdict_path + ".tmp", verdict_path)
    print("VERDICT " + line, flush=True)
    # a failing rank may leave peers blocked in a collective; do not wait for a clean shutdown
    os._exit(0 if verdict["ok"] else 1)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("save_dir", help="directory holding `latest` and the tag directory")
    ap.add_argument("world_size", type=int, help="number of ranks M to load with")
    ap.add_argument("--truth", help="truth safetensors (fp32/, exp_avg/, exp_avg_sq/, frozen/, buffer/)")
    ap.add_argument("--tag", help="tag to load (default: contents of SAVE_DIR/latest)")
    ap.add_argument("--universal", action="store_true",
                    help="SAVE_DIR holds a universal checkpoint: tag from `latest_universal`, "
                         "ds_config gets \"checkpoint\": {\"load_universal\": true}")
    ap.add_argument("--train-step", action="store_true", help="run one training step after loading")
    ap.add_argument("--ds-config", help="JSON file to use instead of the checkpoint's ds_config")
    ap.add_argument("--no-step-check", action="store_true",
                    help="do not require Adam step == global_steps - skipped_steps")
    ap.add_argument("--gloo-shim", choices=("auto", "on", "off"), default="auto",
                    help="wrap torch.distributed for gloo (see gloo_shim.py); auto: the full "
                         "bf16 shim when torch < 2.0, else only detach tensors given to "
                         "collectives; on: always the full shim; off: none")
    ap.add_argument("--shm-op", choices=("skip", "build"), default="skip",
                    help="skip (default): do not build/use DeepSpeed's CPU shared-memory "
                         "all-reduce op (no /dev/shm buffers left behind); build: DeepSpeed's default")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for all ranks (default 600)")
    ap.add_argument("--port", type=int, help="MASTER_PORT (default: a free one)")
    ap.add_argument("--log-dir", help="where per-rank logs and verdicts go (default: a new temp dir)")
    ap.add_argument("--quiet", action="store_true", help="do not print log tails of failing ranks")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.save_dir = os.path.abspath(args.save_dir)
    if args.truth:
        args.truth = os.path.abspath(args.truth)
    if args.ds_config:
        args.ds_config = os.path.abspath(args.ds_config)
    if args.worker:
        return worker(args)
    if args.world_size < 1:
        ap.error("world_size must be >= 1")
    args.raw_argv = list(argv)  # workers inherit the cwd, so relative paths stay valid
    return launch(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
