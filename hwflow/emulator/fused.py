"""The fused exact path of the emulator: one pass per layer group, in float32 and compact integers.

A *group* is a multiply-accumulate layer (Dense, Conv1D, Conv2D) followed by the per-channel layers
that hls4ml runs on its output (batch norm, ReLU / linear activation, FT-ClipAct) and a max pooling
without padding. The plain path (``Emulator(..., fused=False)``, ``ops``) runs each layer on float64
codes; here each group is

1. one GEMM on float32 codes where the input type (for the network input, the data) times the
   weights' largest column sum of ``|codes|`` bounds every partial sum below 2**24, with im2col
   built once in float32, or one row per pooled output when a pooling follows;
2. max pooling of the raw accumulator, *before* everything else: the rest of the group is one
   per-channel monotone step function of the accumulator (``step``), and max commutes with a
   non-decreasing function (a non-increasing channel has its weight column negated, so that the
   maximum is the minimum it needs);
3. that step function, evaluated exactly on the pooled values, written as the next layer's
   codes in the narrowest integer dtype.

Where numba runs (``compiled.enabled()``), a convolution group runs block by block on the compiled
kernels instead (``compiled.conv_group``: gather the windows, GEMM, then max and step function in
exact int64 arithmetic, straight into the narrow dtype; one block stays in cache), and a dense
group's step function runs compiled after its GEMM. ``FusedRunner(..., use_compiled=False)`` or
``HWFLOW_NO_NUMBA=1`` keeps the numpy kernels; both give identical codes.

Whatever a group cannot prove exact runs through the plain kernels, layer by layer: a wrapping or
saturating accumulator (whose stepwise kernel ``ops._linear_stepwise`` stays the reference),
float-stored weights, pooling with padding. Where only the chain stops folding (FT-ClipAct's zero
mode, a wrapping or zeroing cast, a second rounding), the MAC and the chain up to that layer still
run fused, without pooling first, and the rest plainly. Both paths give identical codes
(``tests/test_fused.py`` checks each rewrite against the plain kernels on random codes and types).
``StepFunction.thresholds`` lists a channel's step as MultiThreshold thresholds (for inspection and
delta rules: a changed accumulator changes the output only if it crosses one).

**Graphs** (residual networks: a value read by two layers, a merge reading two values) run fused
too. A layer joins the group of the value it reads only where it reads that value alone and is its
one reader (``Program.reader_count``), so every value another layer reads is some group's output;
the reader may come later in the program (hls4ml puts resnet8's shortcut convolution between a
convolution and its batch norm), and a group runs where its first layer is. A zero padding that
keeps its type and feeds one convolution becomes that convolution's padding (io_stream's form). An
Add or Subtract whose type holds its exact sum (hls4ml's inferred type) heads the chain after it:
``compiled.merge_step`` shifts, adds and runs the chain's step function in one int64 pass. Every
other layer (merges that cast, concatenation, global and average pooling, depthwise, tables) runs
its own kernel on the compact codes (merges in int64: ``merge.merge_int``), its result stored in
the narrowest dtype of its type. A value is dropped after its last reader. ``tests/test_fused_graph.py``
checks all of it against the plain path (random graphs and types, both io types, the zoo's resnet8
and ds-cnn, and the campaign's golden pass), and ``benchmarks/bench_emulator.py --model resnet8 --io
stream`` against the C simulation.

Entry points for a campaign engine (besides ``Emulator.run`` / ``run_codes``, which use this path):

- ``groups(program, first, last)``: the layer groups between two layer indices (inclusive).
- ``Emulator(program, image, fused=False)``: the plain reference path; ``threads=`` chunk threads
  (default: two when BLAS may use two, else one, e.g. inside a campaign worker).
- ``FusedRunner(emulator).run(codes, x_type, first, last)``: codes of layer ``last`` from the
  output codes (any integer or float dtype) of layer ``first - 1``; returns compact codes (int8,
  int16, ... or float64 from a plain layer), the caller casts. ``run_group(group, codes, x_type,
  more, more_types)`` runs one group (``more``: a merge's further inputs). A runner caches what it
  derives from the weights, keyed by the weight objects, so an emulator made by ``with_arrays``
  shares every group whose arrays did not change.
- In a graph, ``FusedRunner(emulator).run_values(values, first, last)``: codes of layer ``last``
  from ``values``, the codes by name of every value computed before layer ``first`` that layers
  ``first..last`` read. ``Emulator.run_values(values, first_name, upto_name)`` is its chunked,
  threaded form with a checked input (a missing value is named) and the result type's compact
  dtype: the campaign's fault-free pass (``Golden._run``) runs each layer of a graph through it,
  ``run_values({n: outputs[n] for n in layer.inputs}, layer.name, layer.name)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from hwflow.emulator import compiled, gemm, merge, ops, step
from hwflow.emulator.clip import check_mode
from hwflow.emulator.program import Kind, LayerSpec, Program
from hwflow.fixed import FixedType, Overflow, requantize, value_range

log = logging.getLogger(__name__)

MAC = (Kind.DENSE, Kind.CONV1D, Kind.CONV2D)
CHAIN = (Kind.BATCHNORM, Kind.ACTIVATION, Kind.CLIPACT)
POOL = (Kind.POOL1D, Kind.POOL2D)
POOL_WINDOW_MAX_K = 160
"""Convolutions with at most this many inputs per output (kernel x channels) use the pooled GEMM."""


@dataclass(frozen=True)
class Group:
    """Consecutive layers run as one: ``head`` (a MAC layer or None), per-channel ``chain``, ``pool``."""

    head: LayerSpec | None
    chain: tuple[LayerSpec, ...]
    pool: LayerSpec | None
    plain: LayerSpec | None = None  # a layer of another kind, run by its plain kernel
    merge: LayerSpec | None = None  # an Add or Subtract the chain reads (no head): FusedRunner._merged

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        if self.plain is not None:
            return (self.plain,)
        first = (self.head,) if self.head else (self.merge,) if self.merge else ()
        return first + self.chain + ((self.pool,) if self.pool else ())

    @property
    def last(self) -> LayerSpec:
        return self.layers[-1]


def sequential(program: Program) -> bool:
    """Whether every layer reads the output of the layer before it (a chain, no merge or branch)."""
    layers = program.layers
    return all(layer.inputs == (layers[i].name,) for i, layer in enumerate(layers[1:]))


def groups(program: Program, first: int, last: int) -> list[Group]:
    """Group layers ``first..last`` (indices into ``program.layers``) greedily, in order.

    In a graph a layer joins the group of the layer it reads only where it reads that layer alone
    and is its one reader (``Program.reader_count``): every value another layer reads is a group's
    output. The reader need not come next in the program (hls4ml may put a shortcut's convolution
    between a convolution and its batch norm): reading one value only, it can run right after it.
    A zero padding whose one reader is a convolution is folded into that convolution's own padding
    (the same zeros; the convolution then reads the padding's input). Groups come in the order of
    their first layer, a valid order to run them in.
    """
    layers, out, taken = program.layers, [], set()
    readers = _sole_readers(program, first, last)
    for i in range(first, last + 1):
        if i in taken:
            continue
        layer = layers[i]
        head = layer if layer.kind in MAC else None
        at = i
        nxt = readers.get(i)
        merged = layer if _fusable_merge(layer) and nxt is not None and layers[nxt].kind in CHAIN else None
        if nxt is not None and _folds_into(program, layer, layers[nxt]):
            head, at = _padded_head(layer, layers[nxt]), nxt
            taken.add(nxt)
        chain = []
        j = readers.get(at) if head or merged else i
        while j is not None and layers[j].kind in CHAIN:
            chain.append(layers[j])
            taken.add(j)
            at, j = j, readers.get(j)
        pool = None
        if (head or chain) and j is not None and layers[j].kind in POOL and _poolable(layers[j]):
            pool = layers[j]
            taken.add(j)
        if head is None and not chain:
            out.append(Group(None, (), None, plain=layer))
            continue
        out.append(Group(head, tuple(chain), pool, merge=merged))
    return out


def _fusable_merge(layer: LayerSpec) -> bool:
    """An Add or Subtract: the chain after it runs on its sum (``FusedRunner._merged``)."""
    return layer.kind is Kind.MERGE and layer.attrs.get("op") in ("add", "subtract")


def merge_shifts(layer: LayerSpec, ta: FixedType, tb: FixedType) -> tuple[int, int] | None:
    """``(sa, sb)`` with ``result code = (a << sa) +- (b << sb)`` where the merge's one cast, from the
    exact sum to its result type, only moves the binary point (it rounds and overflows nothing;
    hls4ml's inferred merge types do that); None where it casts."""
    minus = layer.attrs.get("op") == "subtract"
    t, res = merge.sum_type(ta, tb, minus), layer.result
    lo, hi = value_range(t, res)
    if t.frac > res.frac or lo < res.min_code or hi > res.max_code or res.width > 62:
        return None
    return res.frac - ta.frac, res.frac - tb.frac


def _sole_readers(program: Program, first: int, last: int) -> dict[int, int]:
    """Layer index -> index of its one reader in ``first..last``, where that reader reads it alone."""
    index = {layer.name: i for i, layer in enumerate(program.layers)}
    out = {}
    for j in range(first, last + 1):
        layer = program.layers[j]
        if len(layer.inputs) == 1 and program.reader_count.get(layer.inputs[0], 0) == 1:
            out[index[layer.inputs[0]]] = j
    return out


def _joins(program: Program, before: LayerSpec, layer: LayerSpec) -> bool:
    """Whether ``layer`` reads ``before`` alone and is its one reader (nothing else needs the value between)."""
    return layer.inputs == (before.name,) and program.reader_count.get(before.name, 0) == 1


_PAD_ATTRS = {Kind.ZEROPAD2D: (Kind.CONV2D, ("pad_top", "pad_bottom", "pad_left", "pad_right")),
              Kind.ZEROPAD1D: (Kind.CONV1D, ("pad_left", "pad_right"))}


def _folds_into(program: Program, pad: LayerSpec, conv: LayerSpec) -> bool:
    """A zero padding that only moves codes (same type in and out) and feeds one convolution alone."""
    if pad.kind not in _PAD_ATTRS or conv.kind is not _PAD_ATTRS[pad.kind][0] or not _joins(program, pad, conv):
        return False
    return len(pad.inputs) == 1 and program.layer(pad.inputs[0]).result == pad.result


def _padded_head(pad: LayerSpec, conv: LayerSpec) -> LayerSpec:
    """``conv`` reading ``pad``'s input, with ``pad``'s zeros added to its own padding."""
    names = _PAD_ATTRS[pad.kind][1]
    attrs = dict(conv.attrs, **{n: int(conv.attrs[n]) + int(pad.attrs[n]) for n in names})
    return replace(conv, inputs=pad.inputs, attrs=attrs)


def pool_geometry(layer: LayerSpec):
    """Window, stride, padding before and after of a (1D or 2D) pooling layer."""
    a = layer.attrs
    if layer.kind is Kind.POOL2D:
        return ((a["pool_height"], a["pool_width"]), (a["stride_height"], a["stride_width"]),
                (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"]))
    return (a["pool_width"],), (a["stride_width"],), (a["pad_left"],), (a["pad_right"],)


def conv_geometry(layer: LayerSpec):
    """Kernel, stride, padding before and after of a (1D or 2D) convolution."""
    a = layer.attrs
    if layer.kind is Kind.CONV2D:
        return ((a["filt_height"], a["filt_width"]), (a["stride_height"], a["stride_width"]),
                (a["pad_top"], a["pad_left"]), (a["pad_bottom"], a["pad_right"]))
    return (a["filt_width"],), (a["stride_width"],), (a["pad_left"],), (a["pad_right"],)


def _poolable(layer: LayerSpec) -> bool:
    """Max pooling without padding (hls4ml pads with a word of the pool's input type: kept plain)."""
    _, _, before, after = pool_geometry(layer)
    return layer.attrs.get("pool_op") == "Max" and not any(before) and not any(after)


def compact(codes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Integer-valued float codes in ``[lo, hi]`` as the narrowest integer dtype that holds them."""
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return codes.astype(dtype)
    return codes.astype(np.int64)


@dataclass(frozen=True)
class _Compiled:
    """What a group needs at run time, derived once from its weights and the input bound."""

    fn: step.StepFunction
    bound: step.BoundStep  # fn at sign * s, ready to run
    sign: np.ndarray | None  # per-channel -1 where the step is non-increasing (columns negated)
    w: np.ndarray | None  # (K, M) float GEMM matrix, sign folded in
    big: np.ndarray | None  # pool-window matrix, sign folded in
    keep: tuple  # the weight objects the key's ids refer to (alive while cached)
    params: compiled.StepParams | None = None  # fn at sign * s for the compiled kernels
    plan: compiled.ConvPlan | None = None  # a convolution head's compiled block loop


class FusedRunner:
    """Runs layer groups of ``emulator``'s program on its weights (see the module docstring)."""

    def __init__(self, emulator, cache: dict | None = None, use_compiled: bool = True):
        self.emulator = emulator
        self.cache = {} if cache is None else cache
        self.compiled = use_compiled  # False: the numpy path even where numba runs (compiled.enabled)
        self._plans: dict = {}  # (first, last) -> what run_values runs (the program's alone)
        self._masses: dict = {}  # id(weights) -> (weights, largest column sum of |codes|)

    def run(self, codes: np.ndarray, x_type: FixedType, first: int, last: int) -> np.ndarray:
        """Codes of layer ``last`` from the codes (type ``x_type``) of layer ``first - 1``."""
        return self.run_values({self.emulator.program.layers[first - 1].name: codes}, first, last, x_type)

    def run_values(self, values: dict[str, np.ndarray], first: int, last: int,
                   x_type: FixedType | None = None) -> np.ndarray:
        """Codes of layer ``last`` from ``values``: the codes of every layer before ``first`` that layers
        ``first..last`` read, by name (any integer or float dtype holding exact codes).

        Groups run in order (``groups``); a value is dropped after its last reader in the range.
        ``x_type``: the type of the codes of layer ``first - 1`` where it is not that layer's result
        type (``run``'s caller decides). ``values`` itself is left as it was.
        """
        program = self.emulator.program
        values = dict(values)
        for group, names, drop in self._plan(first, last):
            types = [x_type if x_type is not None and n == program.layers[first - 1].name else self._type(n)
                     for n in names]
            xs = [values[n] for n in names]
            values[group.last.name] = self.run_group(group, xs[0], types[0], xs[1:], types[1:])
            for n in drop:
                values.pop(n, None)
        return values[program.layers[last].name]

    def _plan(self, first: int, last: int) -> list[tuple[Group, tuple[str, ...], tuple[str, ...]]]:
        """Per group of ``first..last``: the group, the values it reads, the values dropped after it
        (those no later group reads; the range's own output is kept)."""
        key = (first, last)
        if key not in self._plans:
            found = groups(self.emulator.program, first, last)
            reads = [group.layers[0].inputs for group in found]
            final = {name: p for p, names in enumerate(reads) for name in names}
            keep = self.emulator.program.layers[last].name
            self._plans[key] = [(group, names, tuple(n for n in dict.fromkeys(names) if final[n] == p and n != keep))
                                for p, (group, names) in enumerate(zip(found, reads, strict=True))]
        return self._plans[key]

    def _type(self, name: str) -> FixedType:
        return self.emulator.program.layer(name).result

    def run_group(self, group: Group, x: np.ndarray, x_type: FixedType, more: list | tuple = (),
                  more_types: list | tuple = ()) -> np.ndarray:
        """One group's output codes from its input codes (``more``: a plain layer's further inputs)."""
        if group.plain is not None:
            return self._plain_layer(group.plain, x, x_type, more, more_types)
        if group.merge is not None:
            return self._merged(group, [x, *more], [x_type, *more_types])
        compiled = self._compiled(group, x, x_type)
        if compiled is not None:
            return self._fast(group, compiled, x, x_type)
        prefix = self._prefix(group, x, x_type)
        if prefix is None:
            return self._plain(group, x, x_type)
        # The multiply-accumulate and the chain up to the step that does not fold (FT-ClipAct's zero
        # mode, a wrapping cast) run fused, without pooling first; the rest on the plain kernels.
        head_group, comp = prefix
        y = self._fast(head_group, comp, x, x_type, narrow=False)
        t = head_group.last.result
        for layer in group.layers[len(head_group.layers) :]:
            y = self.emulator._layer(layer, y, t)
            t = layer.result
        return y

    def _merged(self, group: Group, xs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
        """An Add or Subtract and the chain after it: one compiled pass (``compiled.merge_step``) where
        the merge only shifts and adds and the chain folds, else the integer merge, then the chain."""
        layer, rest = group.merge, Group(None, group.chain, group.pool)
        shifts = merge_shifts(layer, types[0], types[1]) if len(xs) == 2 else None
        fast = (self.compiled and compiled.enabled() and group.pool is None and shifts is not None
                and xs[0].shape == xs[1].shape)  # codes of any dtype: float ones hold exact integers
        comp = self._compiled(rest, xs[0], layer.result) if fast else None
        if comp is None:
            return self.run_group(rest, merge.merge_int(layer, xs, types), layer.result)
        lo, hi = comp.fn.out_range()
        c = xs[0].shape[-1]
        a, b = (np.ascontiguousarray(v).reshape(-1, c) for v in xs)
        out = np.empty(a.shape, dtype=compiled.narrow_dtype(lo, hi))
        compiled.merge_step(a, b, shifts[0], shifts[1], layer.attrs["op"] == "subtract", comp.params, out)
        return out.reshape(xs[0].shape)

    def _plain_layer(self, layer: LayerSpec, x: np.ndarray, x_type: FixedType, more, more_types) -> np.ndarray:
        """A layer the groups do not fold, on compact integer codes where its kernel has an integer form.

        Merges and concatenations add, multiply and compare in int64 (``merge.merge_int``), a zero
        padding or reshape that keeps its type moves the codes as they are; every other kind runs its
        plain kernel (float64 codes), whose result is stored in the narrowest dtype of its type.
        """
        kind = layer.kind
        if kind is Kind.RESHAPE and layer.result == x_type:
            return x.reshape((x.shape[0],) + tuple(layer.output_shape))
        if kind in _PAD_ATTRS and layer.result == x_type and not more:
            names = _PAD_ATTRS[kind][1]
            pads = [int(layer.attrs[n]) for n in names]
            return ops.pad(x, tuple(pads[0::2]), tuple(pads[1::2]))
        if kind is Kind.MERGE and layer.attrs.get("op") in merge.ELEMENTWISE:
            y = merge.merge_int(layer, [x, *more], [x_type, *more_types])
        elif kind is Kind.CONCATENATE:
            y = merge.concatenate_int(layer, [x, *more], [x_type, *more_types])
        else:
            y = self.emulator._layer(layer, x, x_type, more, more_types)
        t = layer.result
        return y.astype(compiled.narrow_dtype(t.min_code, t.max_code), copy=False)

    def _prefix(self, group: Group, x: np.ndarray, x_type: FixedType):
        """The longest head + chain prefix of ``group`` that folds (no pooling), with its compiled form."""
        if group.head is None:
            return None
        for cut in range(len(group.chain), -1, -1):
            if cut == len(group.chain) and group.pool is None:
                continue  # that is the group itself
            sub = Group(group.head, group.chain[:cut], None)
            comp = self._compiled(sub, x, x_type)
            if comp is not None:
                return sub, comp
        return None

    # --- the plain fallback --------------------------------------------------------------------------

    def _plain(self, group: Group, x: np.ndarray, x_type: FixedType) -> np.ndarray:
        for layer in group.layers:
            x = self.emulator._layer(layer, x, x_type)
            x_type = layer.result
        return x

    # --- derivation ----------------------------------------------------------------------------------

    def _weights(self, group: Group) -> tuple:
        names = [(layer.name, a) for layer in group.layers for a in layer.arrays]
        return tuple(self.emulator._weights.get(key) for key in names)

    def _mass(self, w, m: int) -> int:
        """The largest column sum of ``|w|`` (``w``'s codes as a (K, m) matrix).

        ``|x| <= B`` bounds every partial sum of ``x @ w`` (in any order) by ``B`` times it: the bound
        that decides float32 (below 2**24) and that the step function starts from. It is the weights'
        own, far below the type's ``max_code * K`` for trained weights (resnet8's 3x3x64 kernels fit
        float32 with it, not with the type's bound); a faulty array is a new object, so a new bound.
        """
        found = self._masses.get(id(w))
        if found is None or found[0] is not w:
            if len(self._masses) > 512:
                self._masses.clear()
            mass = int(np.abs(w.codes.reshape(-1, m).astype(np.int64)).sum(axis=0).max()) if w.codes.size else 0
            found = self._masses[id(w)] = (w, max(mass, 1))
        return found[1]

    def _compiled(self, group: Group, x: np.ndarray, x_type: FixedType) -> _Compiled | None:
        x_bound = gemm.max_code(x_type)
        head = group.head
        if head is not None:
            w = self.emulator._weights[(head.name, "weight")]
            if w.is_fixed and x_bound * self._mass(w, head.output_shape[-1]) >= gemm.F32_EXACT:
                x_bound = min(x_bound, gemm.data_bound(x))  # the data's own bound: exact for these codes
        weights = self._weights(group)
        key = (group.last.name, group.layers[0].name, group.layers[0].inputs, x_type, x_bound,
               tuple(id(v) for v in weights))
        found = self.cache.get(key, self)  # self: not derived yet (None means: run plainly)
        if found is self:
            if len(self.cache) > 512:  # stale entries of earlier fault maps
                self.cache.clear()
            try:
                found = self._derive(group, x_type, x_bound, x.shape[-1], weights)
            except step.NotCollapsible:
                found = None
            if found is None:
                log.debug("group ending at %s runs on the plain kernels", group.last.name)
            self.cache[key] = found  # chunk threads may both derive it: the same value
        return found

    def _derive(self, group: Group, x_type: FixedType, x_bound: int, c_in: int, weights: tuple):
        head, w, gemm_w = group.head, None, None
        if head is not None:
            w = self.emulator._weights[(head.name, "weight")]
            b = self.emulator._weights.get((head.name, "bias"))
            accum = head.accum
            if not w.is_fixed or (b is not None and not b.is_fixed) or accum is None:
                return None
            if head.attrs.get("product") in ("data_binary", "both_binary"):  # XNOR data: hwflow.emulator.products
                return None
            p_frac = x_type.frac + w.type.frac
            if accum.overflow is not Overflow.WRAP or accum.frac < p_frac:
                return None  # truncating or saturating accumulator: the stepwise reference
            m = head.output_shape[-1]
            k = w.codes.size // m
            if w.codes.size != k * m:
                return None
            s_bound = x_bound * self._mass(w, m)  # |every partial sum| of these weights' GEMM
            dtype = np.float32 if s_bound < gemm.F32_EXACT else np.float64 if s_bound < 2**53 else None
            if dtype is None:
                return None
            bias = requantize(b.codes, b.type.frac, accum) if b is not None else None
            state = step.start_mac(bias, accum.frac - p_frac, accum, s_bound, m)
            step.cast(state, head.result)
            gemm_w = w.codes.reshape(k, m).astype(dtype)
            c, t = m, head.result
        else:
            c, t = c_in, x_type
            state = step.start_codes(x_type, c)
        for layer in group.chain:
            _apply(self.emulator, state, layer, t)
            t = layer.result
        if group.pool is not None:
            acc = group.pool.accum or t
            step.cast(state, acc)
            step.cast(state, group.pool.result)
        fn = step.finish(state)
        if fn is None:
            return None
        sign, big = None, None
        if group.pool is not None:
            direction = fn.direction
            if np.any(direction < 0):
                sign = np.where(direction < 0, -1, 1)
                if gemm_w is not None:
                    gemm_w = gemm_w * sign.astype(gemm_w.dtype)
            if head is not None and head.kind is not Kind.DENSE and self._use_pool_window(group, gemm_w):
                size, stride, _, _ = conv_geometry(head)
                pool, pstride, _, _ = pool_geometry(group.pool)
                kernel = gemm_w.reshape(tuple(size) + (gemm_w.shape[0] // int(np.prod(size)), gemm_w.shape[1]))
                big = gemm.pool_window_weights(kernel, size, stride, pool)
        float32 = gemm_w is None or gemm_w.dtype == np.float32
        params = compiled.step_params(fn, sign)
        plan = _conv_plan(group, gemm_w, params) if head is not None and head.kind is not Kind.DENSE else None
        return _Compiled(fn, fn.bind(sign, float32), sign, gemm_w, big, weights, params, plan)

    @staticmethod
    def _use_pool_window(group: Group, gemm_w: np.ndarray) -> bool:
        pool, pstride, _, _ = pool_geometry(group.pool)
        return tuple(pool) == tuple(pstride) and gemm_w.shape[0] <= POOL_WINDOW_MAX_K

    # --- the fast path ---------------------------------------------------------------------------------

    def _fast(self, group: Group, comp: _Compiled, x: np.ndarray, x_type: FixedType,
              narrow: bool = True) -> np.ndarray:
        if compiled.enabled() and self.compiled:
            y = self._fast_compiled(group, comp, x, narrow)
            if y is not None:
                return y
        head = group.head
        if head is None:
            s = x if comp.sign is None else x * comp.sign.astype(np.float64)
            pooled = self._pool(group, s) if group.pool is not None else s
        elif head.kind is Kind.DENSE:
            lead = x.shape[:-1]
            s = x.reshape(-1, x.shape[-1]).astype(comp.w.dtype) @ comp.w
            s = s.reshape(lead + (s.shape[-1],))
            pooled = self._pool(group, s) if group.pool is not None else s
        else:
            size, stride, before, after = conv_geometry(head)
            xp = gemm.padded(x, before, after)
            if comp.big is not None:
                pool, _, _, _ = pool_geometry(group.pool)
                pooled = gemm.conv_pooled(xp, comp.big, size, stride, pool, tuple(group.pool.output_shape[:-1]))
            else:
                s = gemm.conv_im2col(xp, comp.w, size, stride, tuple(head.output_shape[:-1]))
                pooled = self._pool(group, s) if group.pool is not None else s
        v = comp.bound(pooled)
        if not narrow:
            return v
        lo, hi = comp.fn.out_range()
        return compact(v, lo, hi)

    @staticmethod
    def _fast_compiled(group: Group, comp: _Compiled, x: np.ndarray, narrow: bool) -> np.ndarray | None:
        """``_fast`` on the compiled kernels (``compiled``), or None where they have no plan for it."""
        head = group.head
        lo, hi = comp.fn.out_range()
        dtype = compiled.narrow_dtype(lo, hi) if narrow else np.float64
        if comp.plan is not None:
            _, _, before, after = conv_geometry(head)
            xp = gemm.padded(x, before, after)
            if head.kind is Kind.CONV1D:
                xp = xp[:, None]
            y = compiled.conv_group(xp, comp.plan, dtype)
            return y.reshape((x.shape[0],) + tuple(group.last.output_shape))
        if head is None and group.pool is None and np.issubdtype(x.dtype, np.integer):
            return compiled.apply_step(x, comp.params, dtype)  # a chain on integer codes: int64, exact
        if head is not None and head.kind is Kind.DENSE and group.pool is None:
            lead = x.shape[:-1]
            s = x.reshape(-1, x.shape[-1]).astype(comp.w.dtype) @ comp.w
            out = np.empty(s.shape, dtype=dtype)
            compiled.max_step(s, 1, 0, 0, comp.params, out)
            return out.reshape(lead + (out.shape[-1],))
        return None

    @staticmethod
    def _pool(group: Group, s: np.ndarray) -> np.ndarray:
        size, stride, _, _ = pool_geometry(group.pool)
        return ops.max_pool(s, size, stride)


def _conv_plan(group: Group, w: np.ndarray, params: compiled.StepParams) -> compiled.ConvPlan:
    """The compiled block loop of a convolution group (``w (K, M)``, sign folded in).

    With max pooling (stride = size) and a short window, one window per pooled output against the
    pool-window matrix (a wider GEMM: BLAS is poor at an inner dimension of 9); otherwise one window
    per pooling offset against ``w`` (no multiply-accumulate is wasted on the overlap).
    """
    size, stride, _, _ = conv_geometry(group.head)
    size, stride = _as2d(size), _as2d(stride)
    if group.pool is None:
        grid = _as2d(tuple(group.head.output_shape[:-1]))
        return compiled.ConvPlan(w, grid, size, stride, np.zeros((1, 2), np.int64), 1, "rows", params)
    pool, pstride, _, _ = pool_geometry(group.pool)
    pool, pstride = _as2d(pool), _as2d(pstride)
    grid = _as2d(tuple(group.pool.output_shape[:-1]))
    count = pool[0] * pool[1]
    patch = tuple((p - 1) * s + k for p, s, k in zip(pool, stride, size, strict=True))
    if pool == pstride and patch[0] * patch[1] * (w.shape[0] // (size[0] * size[1])) <= gemm.SPLIT_MAX_K:
        kernel = w.reshape(size + (w.shape[0] // (size[0] * size[1]), w.shape[1]))
        big = gemm.pool_window_weights(kernel, size, stride, pool)
        step_ = (pool[0] * stride[0], pool[1] * stride[1])
        return compiled.ConvPlan(big, grid, patch, step_, np.zeros((1, 2), np.int64), count, "cols", params)
    offsets = np.array([(dy * stride[0], dx * stride[1]) for dy in range(pool[0]) for dx in range(pool[1])],
                       dtype=np.int64)
    step_ = (pstride[0] * stride[0], pstride[1] * stride[1])
    return compiled.ConvPlan(w, grid, size, step_, offsets, count, "rows", params)


def _as2d(v: tuple) -> tuple[int, int]:
    """A 1D geometry as 2D (one row), so that one kernel serves Conv1D and Conv2D."""
    return (1, int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _apply(emulator, state, layer: LayerSpec, x_type: FixedType) -> None:
    """Fold one per-channel layer into ``state`` (raises step.NotCollapsible where it cannot)."""
    if layer.kind is Kind.BATCHNORM:
        s = emulator._weights[(layer.name, "scale")]
        b = emulator._weights[(layer.name, "bias")]
        if not (s.is_fixed and b.is_fixed):
            raise step.NotCollapsible
        step.batchnorm(state, s.codes, s.type, b.codes, b.type, layer.result)
    elif layer.kind is Kind.ACTIVATION:
        fn = layer.attrs.get("activation")
        if fn == "relu":
            step.relu(state, layer.result)
        elif fn == "linear":
            step.cast(state, layer.result)
        else:
            raise step.NotCollapsible
    elif layer.kind is Kind.CLIPACT:
        if check_mode(layer.attrs.get("mode")) != "saturate":
            raise step.NotCollapsible  # zero mode is not monotone
        step.clip_saturate(state, x_type, layer.attrs["threshold"], layer.result)
    else:
        raise step.NotCollapsible
