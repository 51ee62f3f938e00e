#!/usr/bin/env python3
"""check_outputs.py — dsckpt's outputs read by an independent client.

The official `safetensors` package (with numpy) opens every .safetensors file the
CLI writes: consolidated outputs (one file, and the Hugging Face sharded layout with
its index) and the native rank files of synth and reshard. The expected contents
are computed here from scratch: the synth tensor list and value rule are
re-implemented from libckpt/synth.c, the bf16/fp16 conversions in numpy, and the
native rank layout from libckpt/partition.h and libckpt/layout.h.

Usage: python3 tests/python/check_outputs.py PATH/TO/dsckpt
Exits non-zero on any failure; the last line is "N passed, M failed".
"""
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import safetensors
except ImportError as e:  # CI installs both: a missing package is a failure, not a skip
    print(f"FAIL: cannot import the checking dependencies ({e}).")
    print("Install them with: python3 -m pip install safetensors numpy")
    print("0 passed, 1 failed")
    sys.exit(1)

PASSED = 0
FAILED = 0
_group_fail = []


def check(cond, msg):
    """Counts one check; on failure records `msg` for the current group."""
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
        _group_fail.append(msg)
    return bool(cond)


class Group:
    """Prints one line per check group: its pass count, or its failures."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.p0, self.f0 = PASSED, FAILED
        _group_fail.clear()
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:  # an exception inside a group is one more failure
            check(False, f"exception: {et.__name__}: {ev}")
        n_ok, n_bad = PASSED - self.p0, FAILED - self.f0
        if n_bad == 0:
            print(f"ok   {self.name}: {n_ok} checks")
        else:
            print(f"FAIL {self.name}: {n_bad} of {n_ok + n_bad} checks failed")
            for m in _group_fail[:20]:
                print(f"       - {m}")
            if len(_group_fail) > 20:
                print(f"       ... and {len(_group_fail) - 20} more")
        return True  # keep going with the other groups


# ---------------------------------------------------------------------------------
# The synth model, re-implemented from libckpt/synth.c
# ---------------------------------------------------------------------------------

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SYNTH_VOCAB = 1031
SYNTH_POSITIONS = 128
ST_FP32, ST_EXP_AVG, ST_EXP_AVG_SQ, ST_W16 = 0, 1, 2, 3
STATE_NAMES = ["fp32", "exp_avg", "exp_avg_sq", "w16"]
DT_SIZE = {"BF16": 2, "F16": 2, "F32": 4}
TRAIN_DT = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}


def mix64_int(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix64_np(z):
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def synth_key(seed, tensor, state):
    return mix64_int(seed * GOLDEN + (tensor + 1) * 0xD1B54A32D192ED03 + (state + 1) * 0x8CB92BA72F3D8DD7)


_rule_cache = {}
_rule_cache_bytes = 0


def rule(seed, tensor, state, numel):
    """fp32 values of elements [0, numel) of `state` of tensor `tensor`."""
    k = (seed, tensor, state, numel)
    if k in _rule_cache:
        return _rule_cache[k]
    key = np.uint64(synth_key(seed, tensor, state))
    idx = np.arange(numel, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = mix64_np(key + idx * np.uint64(GOLDEN))
    u = (h >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)  # exact
    if state == ST_EXP_AVG:
        v = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(1e-3)
    elif state == ST_EXP_AVG_SQ:
        v = u * np.float32(1e-6)
    else:
        v = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(0.05)
    assert v.dtype == np.float32
    global _rule_cache_bytes
    if _rule_cache_bytes + v.nbytes > (64 << 20):  # keep memory flat
        _rule_cache.clear()
        _rule_cache_bytes = 0
    _rule_cache[k] = v
    _rule_cache_bytes += v.nbytes
    return v


def synth_tensors(params):
    """The tensor list of ds_synth_tensors(): dicts in ordinal order."""
    L = 2 if params < 1000000 else 4 if params < 100000000 else 8
    a = 12.0 * L
    b = 13.0 * L + SYNTH_VOCAB + SYNTH_POSITIONS + 2
    dd = (-b + math.sqrt(b * b + 4 * a * float(params))) / (2 * a)
    d = 3 if dd < 3 else int(dd)
    d |= 1
    ts = []

    def add(name, shape, trainable):
        numel = 1
        for s in shape:
            numel *= s
        group = (0 if len(shape) == 2 else 1) if trainable else -1
        ts.append({"name": name, "shape": list(shape), "numel": numel, "trainable": trainable, "group": group})

    add("wte.weight", (SYNTH_VOCAB, d), True)
    add("wpe.weight", (SYNTH_POSITIONS, d), False)
    layer = [("ln_1.weight", 1, 1, 0), ("ln_1.bias", 1, 1, 0), ("attn.c_attn.weight", 2, 3, 1),
             ("attn.c_attn.bias", 1, 3, 0), ("attn.c_proj.weight", 2, 1, 1), ("attn.c_proj.bias", 1, 1, 0),
             ("ln_2.weight", 1, 1, 0), ("ln_2.bias", 1, 1, 0), ("mlp.c_fc.weight", 2, 4, 1),
             ("mlp.c_fc.bias", 1, 4, 0), ("mlp.c_proj.weight", 2, 1, 4), ("mlp.c_proj.bias", 1, 1, 0)]
    for l in range(L):
        for name, ndim, r0, r1 in layer:
            add(f"h.{l}.{name}", (r0 * d, r1 * d) if ndim == 2 else (r0 * d,), True)
    add("ln_f.weight", (d,), True)
    add("ln_f.bias", (d,), True)
    return ts


def parse_params(s):
    m = re.fullmatch(r"([0-9.e+]+)([KMG]?)", s)
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)])


# ---- dtype conversions, computed independently in numpy ----


def to_bf16_bits(f32):
    """Round-to-nearest-even of fp32 to bf16, on the bits (no NaNs occur here)."""
    b = f32.astype("<f4").view("<u4").astype(np.uint64)
    return ((b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)).astype("<u2")


def encode(f32, dtype):
    """Bytes of fp32 values stored as `dtype` ("F32", "BF16", "F16")."""
    if dtype == "F32":
        return f32.astype("<f4").tobytes()
    if dtype == "BF16":
        return to_bf16_bits(f32).tobytes()
    if dtype == "F16":
        return f32.astype("<f2").tobytes()  # numpy rounds to nearest even
    raise ValueError(dtype)


def upcast_to_f32(data, dtype):
    """16-bit bytes ("BF16" or "F16") widened to fp32 bytes (exact)."""
    if dtype == "BF16":
        return (np.frombuffer(data, "<u2").astype("<u4") << 16).tobytes()
    return np.frombuffer(data, "<f2").astype("<f4").tobytes()


def first_diff(got, want, esize):
    n = min(len(got), len(want))
    for i in range(0, n, esize):
        if got[i:i + esize] != want[i:i + esize]:
            return i // esize
    return n // esize


# ---------------------------------------------------------------------------------
# Running the CLI
# ---------------------------------------------------------------------------------

DS = None
WORK = None


def run(*args, expect=0):
    p = subprocess.run([DS, *map(str, args)], cwd=WORK, capture_output=True, text=True)
    ok = check(p.returncode == expect,
               f"dsckpt {' '.join(map(str, args))}: exit {p.returncode}, expected {expect}: {p.stderr.strip()[:300]}")
    return ok


def path(*parts):
    return os.path.join(WORK, *parts)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def sha256_file(p):
    return hashlib.sha256(read(p)).hexdigest()


class Synth:
    def __init__(self, name, params, world, stage, dtype, seed, step=100):
        self.name, self.params, self.world, self.stage = name, params, world, stage
        self.dtype, self.seed, self.step = dtype, seed, step
        self.tag = f"global_step{step}"
        self.tensors = synth_tensors(parse_params(params))

    def create(self):
        return run("synth", "-o", self.name, "--params", self.params, "--world-size", self.world, "--stage",
                   self.stage, "--dtype", self.dtype, "--seed", self.seed, "--step", self.step, "-q")

    def state_values(self, t, state):
        return rule(self.seed, t, state, self.tensors[t]["numel"])

    def state_bytes(self, t, state):
        """Stored bytes of a whole state: groups in F32, w16 in the training dtype."""
        dt = TRAIN_DT[self.dtype] if state == ST_W16 else "F32"
        return encode(self.state_values(t, state), dt), dt


# ---------------------------------------------------------------------------------
# Generic safetensors checks with the official package
# ---------------------------------------------------------------------------------


def open_st(p):
    """(metadata, {name: (dtype, shape)}, {name: raw bytes}) via the official package."""
    info = {}
    with safetensors.safe_open(p, "numpy") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            sl = f.get_slice(k)
            info[k] = (sl.get_dtype(), list(sl.get_shape()))
    raw = {}
    for name, d in safetensors.deserialize(read(p)):
        data = d["data"]
        raw[name] = (d["dtype"], list(d["shape"]), data if isinstance(data, bytes) else bytes(data))
    return meta, info, raw


def check_st_consistent(p, meta, info, raw):
    rel = os.path.relpath(p, WORK)
    check(meta.get("format") == "pt", f"{rel}: metadata format is {meta.get('format')!r}, expected 'pt'")
    check(set(info) == set(raw), f"{rel}: safe_open and deserialize disagree on the tensor names")
    for k, (dt, shape, data) in raw.items():
        n = 1
        for s in shape:
            n *= s
        check(info.get(k) == (dt, shape), f"{rel}: {k}: safe_open says {info.get(k)}, deserialize {(dt, shape)}")
        check(dt in DT_SIZE and len(data) == n * DT_SIZE.get(dt, 0), f"{rel}: {k}: {len(data)} bytes for {dt}{shape}")
    # numpy can hold F32/F16: get_tensor must agree with the raw bytes.
    with safetensors.safe_open(p, "numpy") as f:
        for k, (dt, shape, data) in raw.items():
            if dt in ("F32", "F16"):
                a = f.get_tensor(k)
                bits = "<u4" if dt == "F32" else "<u2"  # compare bit patterns, not values
                check(list(a.shape) == shape and a.dtype.itemsize == DT_SIZE[dt]
                      and np.array_equal(a.astype(a.dtype.newbyteorder("<"), copy=False).view(bits).ravel(),
                                         np.frombuffer(data, dtype=bits)),
                      f"{rel}: {k}: get_tensor differs from the raw bytes")
                del a


# ---------------------------------------------------------------------------------
# Consolidated outputs
# ---------------------------------------------------------------------------------


def expected_consolidated(sy, out_dtype, exclude_frozen):
    """[(name, dtype, shape, bytes)] in tensor order."""
    exp = []
    for i, t in enumerate(sy.tensors):
        if not t["trainable"] and exclude_frozen:
            continue
        if t["trainable"]:
            data, dt = encode(sy.state_values(i, ST_FP32), out_dtype), out_dtype
        else:  # frozen: the stored 16-bit (training dtype) weights, unchanged,
            data, dt = sy.state_bytes(i, ST_W16)
            if out_dtype == "F32" and dt in ("BF16", "F16"):  # but upcast (exactly) by --dtype fp32
                data, dt = upcast_to_f32(data, dt), "F32"
        exp.append((t["name"], dt, t["shape"], data))
    return exp


def check_tensors_against(rel, raw, exp_by_name):
    for name, (dt, shape, data) in raw.items():
        if name not in exp_by_name:
            continue
        edt, eshape, edata = exp_by_name[name]
        check(dt == edt, f"{rel}: {name}: dtype {dt}, expected {edt}")
        check(shape == eshape, f"{rel}: {name}: shape {shape}, expected {eshape}")
        if not check(data == edata, f"{rel}: {name}: values differ from the synth rule"):
            i = first_diff(data, edata, DT_SIZE.get(edt, 4))
            es = DT_SIZE.get(edt, 4)
            _group_fail.append(f"   first difference at element {i}: got {data[i*es:(i+1)*es].hex()}, "
                               f"want {edata[i*es:(i+1)*es].hex()}")


def check_consolidated_file(sy, out, out_dtype, exclude_frozen):
    p = path(out)
    meta, info, raw = open_st(p)
    check_st_consistent(p, meta, info, raw)
    exp = expected_consolidated(sy, out_dtype, exclude_frozen)
    check(sorted(raw) == sorted(e[0] for e in exp),
          f"{out}: tensor names {sorted(set(raw) ^ set(e[0] for e in exp))} differ from the synth list")
    check("lm_head.weight" not in raw, f"{out}: the tied lm_head.weight is stored (should be an alias)")
    check(meta.get("alias.lm_head.weight") == "wte.weight",
          f"{out}: metadata alias.lm_head.weight = {meta.get('alias.lm_head.weight')!r}, expected 'wte.weight'")
    check(meta.get("dsckpt.source_tag") == sy.tag, f"{out}: dsckpt.source_tag = {meta.get('dsckpt.source_tag')!r}")
    check_tensors_against(out, raw, {e[0]: e[1:] for e in exp})


def check_consolidated_dir(sy, out, out_dtype, exclude_frozen, max_shard, expect_sharded):
    d = path(out)
    files = sorted(os.listdir(d))
    exp = expected_consolidated(sy, out_dtype, exclude_frozen)
    exp_by_name = {e[0]: e[1:] for e in exp}
    shards = [f for f in files if f.endswith(".safetensors")]
    if not expect_sharded:
        check(files == ["model.safetensors"], f"{out}: files {files}, expected only model.safetensors")
        check_consolidated_file(sy, os.path.join(out, "model.safetensors"), out_dtype, exclude_frozen)
        return
    n = len(shards)
    check(n >= 2, f"{out}: {n} shard(s); expected several with --max-shard-size {max_shard}")
    want_names = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    check(shards == want_names, f"{out}: shard names {shards}, expected {want_names}")
    check(files == sorted(want_names + ["model.safetensors.index.json"]),
          f"{out}: unexpected files {sorted(set(files) - set(want_names) - {'model.safetensors.index.json'})}")

    pairs_seen = []

    def hook(pairs):
        pairs_seen.append([k for k, _ in pairs])
        return dict(pairs)

    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f, object_pairs_hook=hook)
    wm = index.get("weight_map", {})
    wm_keys = next((ks for ks in pairs_seen if set(ks) == set(wm)), list(wm))
    check(len(wm_keys) == len(set(wm_keys)), f"{out}: weight_map lists a tensor twice")
    check(set(wm) == set(exp_by_name), f"{out}: weight_map names differ: {sorted(set(wm) ^ set(exp_by_name))}")
    total = sum(len(e[3]) for e in exp)
    check(index.get("metadata", {}).get("total_size") == total,
          f"{out}: metadata.total_size {index.get('metadata', {}).get('total_size')}, expected {total}")

    holder = {}
    alias_files = []
    data_total = 0
    for s in shards:
        sp = os.path.join(d, s)
        meta, info, raw = open_st(sp)
        check_st_consistent(sp, meta, info, raw)
        check(meta.get("dsckpt.source_tag") == sy.tag, f"{out}/{s}: dsckpt.source_tag = {meta.get('dsckpt.source_tag')!r}")
        if "alias.lm_head.weight" in meta:
            alias_files.append(s)
            check(meta["alias.lm_head.weight"] == "wte.weight", f"{out}/{s}: alias.lm_head.weight -> {meta['alias.lm_head.weight']!r}")
        size = 0
        for name, (dt, shape, data) in raw.items():
            check(name not in holder, f"{out}: {name} is stored in {holder.get(name)} and {s}")
            holder[name] = s
            check(wm.get(name) == s, f"{out}: weight_map[{name}] = {wm.get(name)!r}, but it is in {s}")
            size += len(data)
        data_total += size
        check(size <= max_shard or len(raw) == 1,
              f"{out}/{s}: {size} bytes of data in {len(raw)} tensors exceeds --max-shard-size {max_shard}")
        check_tensors_against(f"{out}/{s}", raw, exp_by_name)
    check(set(holder) == set(exp_by_name), f"{out}: tensors missing from the shards: {sorted(set(exp_by_name) - set(holder))}")
    check(data_total == total, f"{out}: the shards hold {data_total} bytes of data, the index says {total}")
    want_alias = [] if "wte.weight" not in exp_by_name else [holder.get("wte.weight")]
    check(alias_files == want_alias, f"{out}: alias metadata in {alias_files}, expected in {want_alias}")


# ---------------------------------------------------------------------------------
# Native rank files (libckpt/partition.h, libckpt/layout.h)
# ---------------------------------------------------------------------------------


def native_layout(tensors, stage, W):
    """The buffers of each rank file, per libckpt/partition.h and layout.h.

    Returns one (groups, frozen) pair per file: groups[g] and frozen[tensor] are
    (buffer length in elements, [(tensor, start, numel, buf_off), ...]); elements of
    a buffer that no piece covers are zero padding."""
    nfiles = 1 if stage == 0 else W
    files = []
    for r in range(nfiles):
        bufs = {}
        for g in (0, 1):
            members = [i for i, t in enumerate(tensors) if t["trainable"] and t["group"] == g]
            pieces = []
            if stage == 3:
                length = 0
                for i in members:
                    n = tensors[i]["numel"]
                    q = -(-n // W)
                    s = q * r
                    c = 0 if s >= n else min(q, n - s)
                    if c:
                        pieces.append((i, s, c, length))
                    length += q
            else:
                N = sum(tensors[i]["numel"] for i in members)
                if stage == 0:
                    lo, length = 0, N
                else:
                    align = 2 * W
                    P = -(-N // align) * align // W
                    lo, length = P * r, P
                off = 0
                for i in members:
                    a, b = off, off + tensors[i]["numel"]
                    off = b
                    s, e = max(a, lo), min(b, lo + length)
                    if s < e:
                        pieces.append((i, s - a, e - s, s - lo))
            bufs[g] = (length, pieces)
        frozen = {}
        for i, t in enumerate(tensors):
            if t["trainable"]:
                continue
            n = t["numel"]
            if stage == 3:
                q = -(-n // W)
                s = q * r
                c = 0 if s >= n else min(q, n - s)
                frozen[i] = (q, [(i, s, c, 0)] if c else [])
            elif r == 0:
                frozen[i] = (n, [(i, 0, n, 0)])
        files.append((bufs, frozen))
    return files


def expected_rank_entries(sy, stage, W):
    """Yields {entry name: (dtype, [len], bytes)} for each rank file of `sy` laid out
    for (stage, W), one file at a time (memory stays at one file's worth)."""
    for bufs, frozen in native_layout(sy.tensors, stage, W):
        ent = {}
        for g, (length, pieces) in bufs.items():
            for st in (ST_FP32, ST_EXP_AVG, ST_EXP_AVG_SQ):
                buf = bytearray(length * 4)
                for i, s, c, off in pieces:
                    buf[off * 4:(off + c) * 4] = sy.state_values(i, st)[s:s + c].astype("<f4").tobytes()
                ent[f"{STATE_NAMES[st]}.g{g}"] = ("F32", [length], buf)
        for i, (length, pieces) in frozen.items():
            data, dt = sy.state_bytes(i, ST_W16)
            es = DT_SIZE[dt]
            buf = bytearray(length * es)
            for _, s, c, off in pieces:
                buf[off * es:(off + c) * es] = data[s * es:(s + c) * es]
            ent[f"w16.{sy.tensors[i]['name']}"] = (dt, [length], buf)
        yield ent


def check_native(sy, root, stage, W):
    """Rank files, manifest and latest of the native checkpoint at `root` (a save root)."""
    tagdir = path(root, sy.tag)
    with open(path(root, "latest")) as f:
        check(f.read().strip() == sy.tag, f"{root}/latest does not name {sy.tag}")
    nfiles = 1 if stage == 0 else W
    names = [f"rank_{r:05d}.safetensors" for r in range(nfiles)]
    present = sorted(os.listdir(tagdir))
    check(present == sorted(names + ["manifest.json"]), f"{root}: tag directory holds {present}, expected {names} + manifest.json")
    with open(os.path.join(tagdir, "manifest.json")) as f:
        man = json.load(f)
    check(man.get("world_size") == W and man.get("zero_stage") == stage and man.get("tag") == sy.tag,
          f"{root}: manifest says world {man.get('world_size')} stage {man.get('zero_stage')} tag {man.get('tag')}")
    mfiles = {m.get("name"): m for m in man.get("files", [])}
    check(sorted(mfiles) == names, f"{root}: manifest lists {sorted(mfiles)}")
    for r, (name, ent) in enumerate(zip(names, expected_rank_entries(sy, stage, W))):
        p = os.path.join(tagdir, name)
        rel = f"{root}/{sy.tag}/{name}"
        if not check(os.path.exists(p), f"{rel} is missing"):
            continue
        meta, info, raw = open_st(p)
        check_st_consistent(p, meta, info, raw)
        want_meta = {"dsckpt.format": "dsckpt-rank-v1", "dsckpt.tag": sy.tag, "dsckpt.rank": str(r),
                     "dsckpt.world_size": str(W), "dsckpt.files": str(nfiles), "dsckpt.zero_stage": str(stage)}
        for k, v in want_meta.items():
            check(meta.get(k) == v, f"{rel}: metadata {k} = {meta.get(k)!r}, expected {v!r}")
        check(sorted(raw) == sorted(ent), f"{rel}: entries {sorted(raw)}, expected {sorted(ent)}")
        for k, (dt, shape, data) in raw.items():
            if k in ent:
                edt, eshape, edata = ent[k]
                check((dt, shape) == (edt, eshape), f"{rel}: {k}: {dt}{shape}, expected {edt}{eshape}")
                if not check(data == edata, f"{rel}: {k}: values differ from the synth rule and the layout"):
                    i = first_diff(data, edata, DT_SIZE.get(edt, 4))
                    _group_fail.append(f"   first difference at element {i}")
        # The manifest's digests: per-chunk SHA-256 and the file digest over them.
        m = mfiles.get(name, {})
        cs = m.get("chunk_size") or 1
        chunks = []
        with open(p, "rb") as f:
            while True:
                piece = f.read(cs)
                if not piece:
                    break
                chunks.append(hashlib.sha256(piece).hexdigest())
        size = os.path.getsize(p)
        check(m.get("size") == size, f"{rel}: manifest size {m.get('size')}, file has {size}")
        check(m.get("chunks") == chunks, f"{rel}: manifest chunk digests do not match the file")
        file_dg = hashlib.sha256(b"".join(bytes.fromhex(c) for c in chunks)).hexdigest()
        check(m.get("sha256") == file_dg, f"{rel}: manifest sha256 is not the digest of the chunk digests")


# ---------------------------------------------------------------------------------


def snapshot(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for dp, _, fs in os.walk(path(root)):
        for f in fs:
            p = os.path.join(dp, f)
            out[os.path.relpath(p, path(root))] = sha256_file(p)
    return out


def main():
    global DS, WORK
    if len(sys.argv) != 2:
        print("usage: check_outputs.py PATH/TO/dsckpt")
        print("0 passed, 1 failed")
        return 1
    DS = os.path.abspath(sys.argv[1])
    if not os.access(DS, os.X_OK):
        print(f"FAIL: {DS} is not an executable")
        print("0 passed, 1 failed")
        return 1
    print(f"safetensors {safetensors.__version__}, numpy {np.__version__}")

    with tempfile.TemporaryDirectory(prefix="dsckpt-pytest.") as tmp:
        WORK = tmp
        ckpts = [
            Synth("s0w1", "20000", 1, 0, "bf16", 1),
            Synth("s0w2", "20000", 2, 0, "fp16", 3, step=7),
            Synth("s1w2", "50000", 2, 1, "fp16", 7),
            Synth("s2w3", "30000", 3, 2, "fp32", 123456789012345),
            Synth("s3w5", "40000", 5, 3, "bf16", M64),  # the largest seed: uint64 wraparound
            Synth("s3w2", "300000", 2, 3, "fp16", 42),
            # Tensors of more than 1M elements: consolidate's and the writer's blocks.
            Synth("big", "13.4M", 3, 2, "bf16", 5),
        ]
        with Group("synth tensor list (re-implemented) matches inspect --json"):
            for sy in ckpts:
                if not sy.create():
                    continue
                p = subprocess.run([DS, "inspect", "--json", sy.name], cwd=WORK, capture_output=True, text=True)
                if not check(p.returncode == 0, f"inspect {sy.name}: exit {p.returncode}"):
                    continue
                d = json.loads(p.stdout)
                got = [(t["name"], t["shape"], t["trainable"], t.get("aliases", [])) for t in d["tensors"]]
                want = [(t["name"], t["shape"], t["trainable"], ["lm_head.weight"] if t["name"] == "wte.weight" else [])
                        for t in sy.tensors]
                check(got == want, f"{sy.name}: inspect's tensor list differs from the re-implemented synth list")
                check(d["tensor_count"] == len(sy.tensors) and d["world_size"] == sy.world
                      and d["zero_stage"] == sy.stage and d["train_dtype"] == sy.dtype and d["tag"] == sy.tag,
                      f"{sy.name}: inspect header {d['tensor_count']}/{d['world_size']}/{d['zero_stage']}/{d['train_dtype']}")
                check(all(t["dtype"] == TRAIN_DT[sy.dtype] for t in d["tensors"]), f"{sy.name}: tensor dtypes")

        with Group("native rank files: safetensors metadata, layout, values (all states), manifest digests"):
            for sy in ckpts:
                check_native(sy, sy.name, sy.stage, sy.world)

        with Group("consolidate to one file: fp32 bitwise, bf16 RNE, fp16 numpy; frozen in training dtype (fp32: upcast)"):
            for sy in ckpts:
                for dt, flag in (("F32", "fp32"), ("BF16", "bf16"), ("F16", "fp16")):
                    out = f"{sy.name}.{flag}.safetensors"
                    if run("consolidate", sy.name, "-o", out, "--dtype", flag, "-q"):
                        check_consolidated_file(sy, out, dt, False)
                out = f"{sy.name}.default.safetensors"
                if run("consolidate", sy.name, "-o", out, "-q"):  # default dtype: the training dtype
                    check_consolidated_file(sy, out, TRAIN_DT[sy.dtype], False)

        with Group("consolidate --exclude-frozen"):
            for sy in ckpts[:4]:
                out = f"{sy.name}.nofrozen.safetensors"
                if run("consolidate", sy.name, "-o", out, "--dtype", "fp16", "--exclude-frozen", "-q"):
                    check_consolidated_file(sy, out, "F16", True)

        with Group("consolidate to a directory: HF shards, index.json, --max-shard-size"):
            for sy, flag, dt, limit, excl in (
                (ckpts[0], "fp32", "F32", "20KB", False),
                (ckpts[2], "bf16", "BF16", "30000", False),
                (ckpts[3], "fp16", "F16", "10KB", True),
                (ckpts[4], "bf16", "BF16", "8KiB", False),  # tensors larger than the limit: alone
                (ckpts[5], "fp32", "F32", "1MB", False),
                (ckpts[6], "bf16", "BF16", "3MB", False),
            ):
                out = f"{sy.name}.{flag}.{limit}.hf"
                args = ["consolidate", sy.name, "-o", out, "--dtype", flag, "--max-shard-size", limit, "-q"]
                if excl:
                    args.append("--exclude-frozen")
                if run(*args):
                    max_bytes = int(float(re.match(r"[0-9.]+", limit).group()) *
                                    {"": 1, "KB": 1e3, "KiB": 1024, "MB": 1e6}[re.sub(r"[0-9.]+", "", limit)])
                    check_consolidated_dir(sy, out, dt, excl, max_bytes, True)
            sy = ckpts[1]
            out = f"{sy.name}.unsharded.hf"
            if run("consolidate", sy.name, "-o", out, "--dtype", "fp32", "-q"):
                check_consolidated_dir(sy, out, "F32", False, 5e9, False)

        with Group("reshard W->M->W: new layouts checked, round trip byte-identical"):
            for sy, M, mid_stage in (
                (ckpts[0], 4, 2),   # stage 0, 1 file -> 4 ranks stage 2 -> back
                (ckpts[1], 3, None),
                (ckpts[2], 3, None),
                (ckpts[3], 5, 3),   # stage 2 -> stage 3 -> stage 2
                (ckpts[4], 2, None),
                (ckpts[5], 1, 1),
            ):
                mid, back = f"{sy.name}.to{M}", f"{sy.name}.back"
                mid_args = ["--stage", mid_stage] if mid_stage is not None else []
                back_args = ["--stage", sy.stage] if mid_stage is not None else []
                if not run("reshard", sy.name, "--to", M, "-o", mid, *mid_args, "-q"):
                    continue
                check_native(sy, mid, sy.stage if mid_stage is None else mid_stage, M)
                if not run("reshard", mid, "--to", sy.world, "-o", back, *back_args, "-q"):
                    continue
                a, b = snapshot(sy.name), snapshot(back)
                check(sorted(a) == sorted(b), f"{sy.name}: files after the round trip {sorted(b)} != {sorted(a)}")
                for rel in sorted(a):
                    check(a[rel] == b.get(rel), f"{sy.name}: {rel} differs after {sy.world}->{M}->{sy.world}")
                check("manifest.json" in " ".join(a), f"{sy.name}: no manifest.json compared")
                # The resharded checkpoint consolidates to the same bytes.
                c1, c2 = f"{sy.name}.c1.safetensors", f"{mid}.c2.safetensors"
                if run("consolidate", sy.name, "-o", c1, "--dtype", "bf16", "-q") and \
                        run("consolidate", mid, "-o", c2, "--dtype", "bf16", "-q"):
                    check(sha256_file(path(c1)) == sha256_file(path(c2)),
                          f"{sy.name}: consolidating the {M}-rank reshard gives other bytes")

    print(f"{PASSED} passed, {FAILED} failed")
    return 0 if FAILED == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
