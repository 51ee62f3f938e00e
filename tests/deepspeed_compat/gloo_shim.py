"""Make torch.distributed's gloo backend usable for DeepSpeed on CPU with old torch (1.13).

torch 1.13's ProcessGroupGloo has no bfloat16 ("RuntimeError: Invalid scalar type") and no
_allgather_base / _reduce_scatter_base. DeepSpeed calls those during initialize() (model
broadcast), load_checkpoint() (16-bit weight all-gather) and training steps. This module wraps
the torch.distributed functions, nothing in DeepSpeed:

- data-movement collectives (broadcast, all_gather, gather, scatter, send/recv, all_to_all) move
  bfloat16 tensors as float16 views (gloo 1.13 has Half but neither bf16 nor int16; the bytes
  are only copied, never computed on): bit-exact;
- reductions (all_reduce, reduce, reduce_scatter) on bfloat16 run on a float32 copy and round
  back once (a training-step detail only; checkpoint loading moves data, it does not reduce it);
- all_gather_into_tensor / _all_gather_base are emulated with all_gather into the output's chunks,
  reduce_scatter_tensor / _reduce_scatter_base with all_reduce and a chunk copy.

With torch >= 2.0 (gloo has bf16 and the tensor collectives) only one thing is wrapped, by
install_detach(): every tensor handed to a collective is passed as t.detach() (same storage, same
bits). torch 2.3's ProcessGroupGloo writes the output of all_gather_into_tensor through views
(chunks) made in the calling thread, from its own worker thread, where grad mode is ON; if the
output requires grad that raises "RuntimeError: A view was created in no_grad mode and is being
modified inplace with grad mode enabled". DeepSpeed 0.14.5's BF16_Optimizer hits this in every
step() at world size > 1 (update_lp_params all-gathers into bf16_groups_flat, a torch.cat of the
params made outside no_grad, so requires_grad=True) -- with or without a checkpoint load; on
NCCL the same call is fine. install() also applies it.

load_check.py installs it by default (--gloo-shim auto: install() for torch < 2.0,
install_detach() otherwise), or as told by --gloo-shim.
"""

import functools

_installed = False


class _Done:
    """Stand-in for a completed async work handle."""

    def wait(self, *a, **k):
        return True

    def is_completed(self):
        return True

    def is_success(self):
        return True


def _map(obj, fn):
    import torch
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, list):
        return [_map(o, fn) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    return obj


def _converting(orig, conv):
    """orig with conv applied to every tensor among its arguments."""

    @functools.wraps(orig)
    def wrapper(*args, **kwargs):
        args = _map(args, conv)
        kwargs = {k: _map(v, conv) for k, v in kwargs.items()}
        return orig(*args, **kwargs)

    return wrapper


def _bitwise(orig):
    import torch

    return _converting(orig, lambda t: t.view(torch.float16) if t.dtype == torch.bfloat16 else t)


def _reducing(orig):
    import torch

    @functools.wraps(orig)
    def wrapper(*args, **kwargs):
        pairs = []

        def conv(t):
            if t.dtype == torch.bfloat16:
                f = t.float()
                pairs.append((t, f))
                return f
            return t

        if not any(t.dtype == torch.bfloat16 for t in _flat_tensors(args, kwargs)):
            return orig(*args, **kwargs)
        async_op = kwargs.pop("async_op", False)
        args = _map(args, conv)
        kwargs = {k: _map(v, conv) for k, v in kwargs.items()}
        work = orig(*args, **kwargs)
        if work is not None and hasattr(work, "wait"):
            work.wait()
        for t, f in pairs:
            t.copy_(f)
        return _Done() if async_op else None

    return wrapper


def _flat_tensors(args, kwargs):
    import torch
    out = []

    def visit(o):
        if torch.is_tensor(o):
            out.append(o)
        elif isinstance(o, (list, tuple)):
            for x in o:
                visit(x)

    visit(args)
    visit(list(kwargs.values()))
    return out


def needed():
    """torch < 2.0's gloo lacks bfloat16 and the *_base collectives (install() is needed)."""
    import torch
    return int(torch.__version__.split(".")[0]) < 2


_COLLECTIVES = ("broadcast", "all_gather", "gather", "scatter", "send", "recv", "isend", "irecv",
                "all_to_all", "all_to_all_single", "all_reduce", "reduce", "reduce_scatter",
                "all_gather_into_tensor", "_all_gather_base", "reduce_scatter_tensor",
                "_reduce_scatter_base")
_detached = False


def _detaching(orig):
    return _converting(orig, lambda t: t.detach() if t.requires_grad else t)


def install_detach():
    """Pass every tensor to torch.distributed collectives detached (see the module docstring).
    Call BEFORE deepspeed.init_distributed (DeepSpeed caches all_gather_into_tensor /
    reduce_scatter_tensor when its backend object is created)."""
    global _detached
    import torch.distributed as dist
    if _detached:
        return
    c10d = dist.distributed_c10d
    for name in _COLLECTIVES:
        if not hasattr(dist, name):
            continue
        orig = getattr(dist, name)
        wrapped = _detaching(orig)
        setattr(dist, name, wrapped)
        if getattr(c10d, name, None) is orig:
            setattr(c10d, name, wrapped)
    _detached = True


def install():
    """Wrap torch.distributed. Call BEFORE deepspeed.init_distributed (DeepSpeed caches
    all_gather_into_tensor / reduce_scatter_tensor when its backend object is created)."""
    global _installed
    import torch.distributed as dist
    if _installed:
        return
    orig_all_gather = dist.all_gather
    orig_all_reduce = dist.all_reduce

    for name in ("broadcast", "all_gather", "gather", "scatter", "send", "recv", "isend", "irecv",
                 "all_to_all", "all_to_all_single"):
        if hasattr(dist, name):
            setattr(dist, name, _bitwise(getattr(dist, name)))
    for name in ("all_reduce", "reduce", "reduce_scatter"):
        if hasattr(dist, name):
            setattr(dist, name, _reducing(getattr(dist, name)))

    bitwise_all_gather = _bitwise(orig_all_gather)
    reducing_all_reduce = _reducing(orig_all_reduce)

    def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
        ws = dist.get_world_size(group=group)
        chunks = list(output_tensor.view(-1).chunk(ws))
        bitwise_all_gather(chunks, input_tensor.contiguous().view(-1), group=group)
        return _Done() if async_op else None

    def reduce_scatter_tensor(output, input, op=dist.ReduceOp.SUM, group=None, async_op=False):
        ws = dist.get_world_size(group=group)
        rank = dist.get_rank(group=group)
        buf = input.detach().clone().view(-1)
        reducing_all_reduce(buf, op=op, group=group)
        output.view(-1).copy_(buf.chunk(ws)[rank])
        return _Done() if async_op else None

    for name in ("all_gather_into_tensor", "_all_gather_base"):
        setattr(dist, name, all_gather_into_tensor)
        setattr(dist.distributed_c10d, name, all_gather_into_tensor)
    for name in ("reduce_scatter_tensor", "_reduce_scatter_base"):
        setattr(dist, name, reduce_scatter_tensor)
        setattr(dist.distributed_c10d, name, reduce_scatter_tensor)
    if hasattr(dist.distributed_c10d, "_all_gather_base_coalesced"):
        delattr(dist.distributed_c10d, "_all_gather_base_coalesced")
    _installed = True
    install_detach()
