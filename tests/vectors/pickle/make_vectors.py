#!/usr/bin/env python3
"""Regenerates the pickle test vectors used by tests/test_pickle.c.

Run from the repository root: python3 tests/vectors/pickle/make_vectors.py

1. <fixture>_<file>.pkl: the data.pkl member of every fixtures/deepspeed/*/ckpt/
   global_step*/*.pt zip (torch.save output; DeepSpeed 0.14.5, torch 1.13, CPython 3.11).
2. py_*.pkl: objects pickled by this interpreter's C pickler (protocol 2 unless
   named otherwise). torch and DeepSpeed are not needed: stand-in modules with the
   same names give the same opcodes, because pickle only records names, and the
   stand-in torch.save below reproduces torch's persistent ids and reductions.
   The C tests expect CPython 3.11's output; other versions may differ in details
   (enums: 3.11 pickles them by value, 3.12 by name with getattr).
"""
import collections
import enum
import glob
import io
import os
import pickle
import sys
import types
import zipfile

OUT = os.path.dirname(os.path.abspath(__file__))


def extract_fixtures():
    for p in sorted(glob.glob('fixtures/deepspeed/*/ckpt/global_step*/*.pt')):
        fixture = p.split(os.sep)[2]
        with zipfile.ZipFile(p) as z:
            (name,) = [n for n in z.namelist() if n.endswith('/data.pkl')]
            data = z.read(name)
        base = os.path.basename(p)[:-3]
        with open(os.path.join(OUT, '%s_%s.pkl' % (fixture, base)), 'wb') as f:
            f.write(data)


def module(name):
    """A stand-in module (and its parent packages) that import can find."""
    parts = name.split('.')
    for i in range(1, len(parts)):
        pkg = '.'.join(parts[:i])
        if pkg not in sys.modules:
            sys.modules[pkg] = types.ModuleType(pkg)
            sys.modules[pkg].__path__ = []
    if name not in sys.modules:
        sys.modules[name] = types.ModuleType(name)
    return sys.modules[name]


# ---- stand-ins for torch and DeepSpeed, registered under their real names ----
torch = module('torch')
torch_utils = module('torch._utils')
torch._utils = torch_utils
zconf = module('deepspeed.runtime.zero.config')
lsmod = module('deepspeed.runtime.fp16.loss_scaler')
tfrag = module('deepspeed.utils.tensor_fragment')


class _Storage:
    def __init__(self, n):
        self.n = n


for _cls in ('FloatStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage'):
    _t = type(_cls, (_Storage,), {'__module__': 'torch'})
    setattr(torch, _cls, _t)


class dtype:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name  # pickled as the global torch.<name>, like torch.dtype


dtype.__module__ = 'torch'
torch.float16 = dtype('float16')
torch.bfloat16 = dtype('bfloat16')


class Size(tuple):
    def __reduce__(self):
        return (Size, (tuple(self),))


Size.__module__ = 'torch'
torch.Size = Size


def _rebuild_tensor_v2(*a):
    raise RuntimeError('never called')


_rebuild_tensor_v2.__module__ = 'torch._utils'
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Tensor:
    def __init__(self, storage, offset, size, stride, requires_grad=False):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.requires_grad = requires_grad

    def __reduce_ex__(self, proto):
        # Fresh size and stride tuples per call, as tensor.size() / tensor.stride().
        return (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(list(self.stride)),
                                     self.requires_grad, collections.OrderedDict()))


class ZeroStageEnum(int, enum.Enum):
    disabled = 0
    optimizer_states = 1
    gradients = 2
    weights = 3

    def __reduce_ex__(self, proto):
        return getattr, (self.__class__, self._name_)  # what Python >= 3.12 does


class ByValue:
    """Pickles as ZeroStageEnum(value), the Python <= 3.11 form of an enum member."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return ZeroStageEnum, (self.value,)


ZeroStageEnum.__module__ = zconf.__name__
zconf.ZeroStageEnum = ZeroStageEnum


class LossScaler:
    def __init__(self, scale):
        self.cur_scale = scale
        self.dynamic = False


class DynamicLossScaler(LossScaler):
    def __init__(self):
        super().__init__(65536.0)
        self.dynamic = True
        self.dtype = torch.float16


for _c in (LossScaler, DynamicLossScaler):
    _c.__module__ = lsmod.__name__
    setattr(lsmod, _c.__name__, _c)


class fragment_address:
    def __init__(self, numel, start):
        self.numel = numel
        self.start = start


fragment_address.__module__ = tfrag.__name__
tfrag.fragment_address = fragment_address


def torch_save_pickle(obj, legacy=False):
    """What torch.save writes as data.pkl (zip format) or as the object pickle of the
    legacy format: protocol 2 with ('storage', type, key, location, numel) ids."""
    buf = io.BytesIO()
    keys = {}

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                key = keys.setdefault(id(o), str(len(keys)))
                if legacy:
                    return ('storage', type(o), key, 'cpu', o.n, None)
                return ('storage', type(o), key, 'cpu', o.n)
            return None

    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)


class Plain:
    pass


def containers():
    shared_list = [1, 2, 3]
    shared_tuple = ('x', 'y', 'z', 'w')
    plain = Plain()
    plain.a = 1
    plain.b = [plain.a, 'two']
    od1 = collections.OrderedDict([('only', 1)])
    return {
        'ints': [0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -2**31, 2**31, -2**31 - 1,
                 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, -2**100, 10**40, 2**2040],
        'floats': [0.0, -0.0, 1.5, -2.25, float('inf'), float('-inf'), float('nan'), 1e-300, 5e-324],
        'strs': ['', 'a', 'caf\u00e9', '\u20ac', '\U0001f600', 'nul\x00inside', '\ud800', 'x' * 300],
        'bytes': [b'', b'abc', bytes(range(256)), b'\x00\xff'],
        'tuples': [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((), ((),))],
        'dict1000': {i: i for i in range(1000)},
        'dict2001': {'k%d' % i: i for i in range(2001)},
        'list1000': list(range(1000)),
        'list1001': list(range(1001)),
        'od0': collections.OrderedDict(),
        'od1': od1,
        'od1000': collections.OrderedDict((i, -i) for i in range(1000)),
        'od1001': collections.OrderedDict((i, -i) for i in range(1001)),
        'set': {1, 2, 3},
        'set0': set(),
        'frozenset': frozenset(['a']),
        'shared': [shared_list, shared_list, shared_tuple, shared_tuple, od1],
        'plain': plain,
        'singletons': [None, True, False, None],
        'keys': {1: 'int', 'str': 1, b'b': 2, None: 3, 2.5: 4, (1, 2): 5, True: 'bool'},
    }


def deepspeed_like():
    s0 = torch.FloatStorage(24)
    s1 = torch.BFloat16Storage(10)
    hp = Tensor(s0, 0, Size([2, 3]), (3, 1), True)
    return {
        'optimizer_state_dict': {
            'loss_scaler': DynamicLossScaler(),
            'static_scaler': LossScaler(1.0),
            'zero_stage': ZeroStageEnum.gradients,
            'zero_stage_again': ZeroStageEnum.gradients,
            'other_stage': ByValue(3),
            'single_partition_of_fp32_groups': [hp, Tensor(s0, 6, Size([18]), (1,), False)],
            'scalar': Tensor(torch.LongStorage(1), 0, Size([]), (), False),
            'empty': Tensor(s1, 10, Size([0, 4]), (4, 1), False),
            'view': Tensor(s1, 1, Size([3, 3]), (3, 1), False),
            'param_slice_mappings': [collections.OrderedDict(
                [('w', fragment_address(6, 0)), ('b', fragment_address(18, 6))])],
            'partition_count': [2],
            'param_shapes': [collections.OrderedDict([('w', Size([2, 3])), ('b', Size([18]))])],
            'sparse_tensor_module_names': set(),
            'dtype': torch.bfloat16,
            'blob': b'\x01\x02\xfe',
        },
        'ds_version': '0.14.5',
    }


def legacy_stream():
    """The legacy (non-zip) torch.save layout: magic, protocol, sys info, the object
    (6-tuple persistent ids), the sorted key list, then raw storage records."""
    out = io.BytesIO()
    for o in (0x1950a86a20f9469cfc6c, 1001,
              {'protocol_version': 1001, 'little_endian': True,
               'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
        pickle.dump(o, out, protocol=2)
    s = torch.FloatStorage(4)
    out.write(torch_save_pickle({'w': Tensor(s, 0, Size([2, 2]), (2, 1), False)}, legacy=True))
    pickle.dump(['0'], out, protocol=2)
    out.write((4).to_bytes(8, 'little') + bytes(16))
    return out.getvalue()


def main():
    extract_fixtures()
    write('py_containers.pkl', pickle.dumps(containers(), 2))
    write('py_containers_p4.pkl', pickle.dumps(containers(), 4))
    write('py_deepspeed_like.pkl', torch_save_pickle(deepspeed_like()))
    write('py_legacy_stream.bin', legacy_stream())


if __name__ == '__main__':
    main()
