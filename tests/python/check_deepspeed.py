#!/usr/bin/env python3
"""check_deepspeed.py — DeepSpeed files written by `dsckpt reshard --format deepspeed`,
read by an independent client.

For every fixture in fixtures/deepspeed (checkpoints written by real DeepSpeed), the
CLI reshards to M ranks in DeepSpeed's format; this script then opens the .pt files
with Python's own zipfile and pickle modules (a restricted Unpickler standing in for
torch: tensors become numpy arrays over the zip storages), re-implements DeepSpeed's
zero_to_fp32 reassembly (stage 1/2 padding-stripped flat partitions, stage 3 pieces
of ceil(n/M)), and compares fp32 master weights and both Adam moments with the
engine's true values (expected/truth.safetensors, read with the official safetensors
fixture) bit for bit. It also checks what DeepSpeed's load path reads: dp_world_size,
partition_count, moment lengths equal to the padded partition, ds_version, the
zero_stage enum, file names, and that loading each rank's optimizer state would
copy into partitions of the right size.

Usage: python3 tests/python/check_deepspeed.py PATH/TO/dsckpt
"""
import collections
import glob
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import zipfile

try:
    import numpy as np
except ImportError as e:
    print(f"FAIL: cannot import numpy ({e})")
    print("0 passed, 1 failed")
    sys.exit(1)


def load_truth(p):
    """The F32 entries of a fixture's truth.safetensors (fp32/, exp_avg/, exp_avg_sq/).
    Read here directly (numpy has no bfloat16, so the package cannot hand back the
    file's bf16 entries); the file is DeepSpeed's reference, not our output."""
    raw = open(p, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], np.float32).reshape(v["shape"])
    return out

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSED = FAILED = 0
MSGS = []


def check(cond, msg):
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
        MSGS.append(msg)
    return bool(cond)


DTYPES = {"FloatStorage": np.float32, "BFloat16Storage": "bf16", "HalfStorage": np.float16,
          "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_}


class Obj:
    """An allow-listed DeepSpeed object (built by NEWOBJ + BUILD): keeps its state."""
    state = None

    def __setstate__(self, st):
        self.state = st


_CLASSES = {}


def ds_class(qualname):
    if qualname not in _CLASSES:
        _CLASSES[qualname] = type(qualname.rsplit(".", 1)[1], (Obj,), {"qualname": qualname})
    return _CLASSES[qualname]


class Tensor:
    def __init__(self, zf, prefix, pid, offset, size, stride, requires_grad):
        _, stype, key, _, numel = pid
        self.dtype, self.key, self.numel = DTYPES[stype], key, numel
        self.offset, self.shape, self.requires_grad = offset, tuple(size), requires_grad
        self.zf, self.prefix = zf, prefix

    def f32(self):
        raw = self.zf.read(f"{self.prefix}/data/{self.key}")
        if self.dtype == "bf16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, self.dtype)
        n = int(np.prod(self.shape)) if self.shape else 1
        return a[self.offset:self.offset + n].astype(np.float32, copy=False)


def load_pt(p):
    """The object in a torch.save zip, with only allow-listed globals."""
    zf = zipfile.ZipFile(p)
    names = zf.namelist()
    prefix = names[0].split("/")[0]
    check(names[0] == f"{prefix}/data.pkl", f"{p}: first member is {names[0]}")
    # torch 2.x's members, in its order.
    meta = [f"{prefix}/{m}" for m in (".format_version", ".storage_alignment", "byteorder")]
    check(names[1:4] == meta, f"{p}: metadata members are {names[1:4]}")
    check([zf.read(m) for m in meta] == [b"1", b"64", b"little"], f"{p}: metadata member contents")
    check(names[-2] == f"{prefix}/version" and zf.read(names[-2]) == b"3\n", f"{p}: no version member")
    sid = zf.read(names[-1]) if names[-1] == f"{prefix}/.data/serialization_id" else b""
    check(len(sid) == 40 and sid.isdigit(), f"{p}: no .data/serialization_id member last")
    check(zf.testzip() is None, f"{p}: a member's CRC-32 is wrong")
    data = sorted((n for n in names if "/data/" in n and not n.endswith("serialization_id")),
                  key=lambda n: int(n.rsplit("/", 1)[1]))
    check([n for n in names if "/data/" in n and not n.endswith("serialization_id")] == data,
          f"{p}: storages not in numeric order")
    with open(p, "rb") as fh:
        for i in zf.infolist():  # every member's data at a multiple of .storage_alignment
            fh.seek(i.header_offset + 26)
            nl, xl = struct.unpack("<HH", fh.read(4))
            check((i.header_offset + 30 + nl + xl) % 64 == 0, f"{p}: {i.filename} not aligned to 64")

    class U(pickle.Unpickler):
        def find_class(self, mod, name):
            if (mod, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda pid, off, size, stride, rg, hooks, *x: Tensor(zf, prefix, pid, off, size, stride, rg)
            if (mod, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (mod, name) == ("torch", "Size"):
                return tuple
            if mod == "torch" and name in DTYPES:
                return name
            if (mod, name) in (("__builtin__", "set"), ("builtins", "set")):
                return set
            if (mod, name) in (("__builtin__", "getattr"), ("builtins", "getattr")):
                return lambda cls, member: ("enum", cls, member)
            if mod == "torch" and name in ("float16", "bfloat16", "float32"):
                return ("dtype", name)
            if f"{mod}.{name}" in ("deepspeed.runtime.fp16.loss_scaler.LossScaler",
                                   "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
                                   "deepspeed.utils.tensor_fragment.fragment_address",
                                   "deepspeed.runtime.zero.config.ZeroStageEnum"):
                return ds_class(f"{mod}.{name}")
            raise pickle.UnpicklingError(f"{p}: global {mod}.{name} is not allowed")

        def persistent_load(self, pid):
            check(pid[0] == "storage" and f"{prefix}/data/{pid[2]}" in names, f"{p}: bad persistent id {pid}")
            return pid

    return U(io.BytesIO(zf.read(names[0]))).load()


def natural(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def reassemble(tagdir, M):
    """zero_to_fp32's arithmetic, written here from docs/formats/deepspeed.md."""
    optim = sorted(glob.glob(os.path.join(tagdir, "*_optim_states.pt")), key=natural)
    check(len(optim) == M, f"{tagdir}: {len(optim)} optimizer files for {M} ranks")
    opts = [load_pt(p)["optimizer_state_dict"] for p in optim]
    zs = opts[0].get("zero_stage")
    stage3 = "fp32_flat_groups" in opts[0]
    if zs is not None:
        check(zs[0] == "enum" and zs[1].__name__ == "ZeroStageEnum" and
              zs[2] in ("optimizer_states", "gradients", "weights"), f"{tagdir}: zero_stage is {zs}")
        check((zs[2] == "weights") == stage3, f"{tagdir}: zero_stage {zs[2]} but stage-3 keys {stage3}")
    for r, o in enumerate(opts):  # slice mappings: fragment_address(numel, start) inside the partition
        for g, psm in enumerate(o.get("param_slice_mappings", [])):
            P = o["single_partition_of_fp32_groups"][g].numel
            for name, fa in psm.items():
                st = fa.state
                check(type(fa).__name__ == "fragment_address" and 0 <= st["start"] and
                      st["start"] + st["numel"] <= P, f"rank {r} group {g}: mapping of {name} is {st}")
    if stage3:
        models = [load_pt(os.path.join(tagdir, f"zero_pp_rank_{r}_mp_rank_00_model_states.pt")) for r in range(M)]
    else:
        models = [load_pt(os.path.join(tagdir, "mp_rank_00_model_states.pt"))]
    for m in models:
        check(m["dp_world_size"] == M, f"{tagdir}: dp_world_size {m['dp_world_size']} != {M}")
        check(isinstance(m.get("ds_version"), str), f"{tagdir}: no ds_version in a model-states file")
    shapes = models[0]["param_shapes"]
    out = {"fp32": {}, "exp_avg": {}, "exp_avg_sq": {}}
    for r, o in enumerate(opts):
        check(isinstance(o.get("ds_version", models[0]["ds_version"]), str), f"rank {r}: no ds_version")
        pc = o["partition_count"]
        check(pc == M if stage3 else pc == [M] * len(shapes), f"rank {r}: partition_count {pc}")
    for g, sg in enumerate(shapes):
        if stage3:
            flats = {k: [] for k in out}
            for o in opts:
                inner = o["optimizer_state_dict"]["state"][g]
                fp = o["fp32_flat_groups"][g]
                for k, t in (("fp32", fp), ("exp_avg", inner["exp_avg"]), ("exp_avg_sq", inner["exp_avg_sq"])):
                    check(t.shape == fp.shape, f"group {g}: {k} shape {t.shape} != fp32 {fp.shape}")
                    flats[k].append(t.f32())
            for k in out:
                off = 0
                for name, shape in sg.items():
                    n = int(np.prod(shape)) if shape else 1
                    q = -(-n // M)
                    full = np.concatenate([f[off:off + q] for f in flats[k]])[:n]
                    out[k][name] = full.reshape(shape)
                    off += q
                check(off == len(flats[k][0]), f"group {g}: pieces use {off} of {len(flats[k][0])} elements")
        else:
            for k in out:
                parts = []
                for o in opts:
                    fp = o["single_partition_of_fp32_groups"][g]
                    st = o["base_optimizer_state"]["state"][g]
                    pad = o["group_paddings"][g]
                    P = fp.numel  # the storage holds the padded partition
                    check(st["exp_avg"].shape == (P,), f"group {g}: exp_avg of {st['exp_avg'].shape}, partition {P}")
                    bf16opt = "zero_stage" not in o
                    real = P - pad
                    if not bf16opt:
                        check(fp.shape == (P - pad,), f"group {g}: fp32 view {fp.shape}, expected {(P - pad,)}")
                    t = fp if k == "fp32" else st[k]
                    parts.append(t.f32()[:real] if k != "fp32" or bf16opt else t.f32())
                full = np.concatenate(parts)
                off = 0
                for name, shape in sg.items():
                    n = int(np.prod(shape)) if shape else 1
                    out[k][name] = full[off:off + n].reshape(shape)
                    off += n
                check(off == len(full), f"group {g}: {len(full)} real elements, shapes use {off}")
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    ds = os.path.abspath(sys.argv[1])
    fixtures = sorted(glob.glob(os.path.join(ROOT, "fixtures", "deepspeed", "*", "ckpt")))
    check(len(fixtures) >= 6, f"only {len(fixtures)} fixtures found")
    with tempfile.TemporaryDirectory() as work:
        for ck in fixtures:
            fx = os.path.basename(os.path.dirname(ck))
            truth = load_truth(os.path.join(os.path.dirname(ck), "expected", "truth.safetensors"))
            for M in (1, 3, 8):
                MSGS.clear()
                p0, f0 = PASSED, FAILED
                out = os.path.join(work, f"{fx}.{M}")
                pr = subprocess.run([ds, "reshard", ck, "--to", str(M), "--format", "deepspeed", "-o", out, "-q"],
                                    capture_output=True, text=True)
                if not check(pr.returncode == 0, f"reshard failed: {pr.stderr.strip()}"):
                    print(f"FAIL {fx} M={M}: " + "; ".join(MSGS[:5]))
                    continue
                tag = open(os.path.join(out, "latest")).read().strip()
                try:
                    got = reassemble(os.path.join(out, tag), M)
                except Exception as e:  # a malformed file is a failure, not a crash
                    check(False, f"reading the files: {type(e).__name__}: {e}")
                    got = None
                n = 0
                for key, want in truth.items():
                    kind, name = key.split("/", 1)
                    if got is None or kind not in got:
                        continue
                    have = got[kind].get(name)
                    if check(have is not None, f"{key} missing"):
                        check(have.shape == want.shape and have.tobytes() == want.tobytes(), f"{key} differs")
                        n += 1
                check(got is None or n == sum(len(v) for v in got.values()), f"{fx}: extra tensors in the output")
                status = "ok  " if FAILED == f0 else "FAIL"
                print(f"{status} {fx} -> DeepSpeed files for {M} ranks: {PASSED - p0} checks"
                      + ("" if FAILED == f0 else ": " + "; ".join(MSGS[:5])))
    print(f"{PASSED} passed, {FAILED} failed")
    return 0 if FAILED == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
