"""The activation kernels against hls4ml's own C++ routines, on every code of each input type.

The model test (``test_layers_activation``) compares whole networks; this one drives each routine of
hls4ml's ``nnet_activation.h`` directly, compiled with g++ against hls4ml's headers, over every
input code of small types that hit the corners: unsigned inputs, an input type with more integer
bits than bits (negative fractional bits), a table size that is not a power of two, results that
round, saturate symmetrically or truncate toward zero, parameters that do not fit their type, and
softmax vectors in every implementation with narrow accumulators. One compile for all cases.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from hwflow.emulator import Kind, LayerSpec
from hwflow.emulator import activations as act
from hwflow.fixed import FixedType, parse_type
from tests.conftest import needs_gxx

HLS4ML_TEMPLATES = Path(__import__("hls4ml").__file__).parent / "templates" / "vivado"


def _cpp(t: FixedType) -> str:
    return t.cpp()


@dataclass
class Case:
    name: str
    kind: Kind
    fn: str
    x_type: str
    result: str
    attrs: dict = field(default_factory=dict)
    n: int = 0  # softmax: vector length

    @property
    def xt(self) -> FixedType:
        return parse_type(self.x_type)

    @property
    def rt(self) -> FixedType:
        return parse_type(self.result)


ELEMENTWISE = [
    Case("sig", Kind.ACTIVATION, "sigmoid", "fixed<12,5>", "fixed<10,2,RND_CONV,SAT>",
         {"table_size": 1024, "table_t": "fixed<18,8>"}),
    Case("sig1000", Kind.ACTIVATION, "sigmoid", "fixed<12,5>", "ufixed<8,0,RND_CONV,SAT>",
         {"table_size": 1000, "table_t": "fixed<18,8>"}),
    Case("tanh_u", Kind.ACTIVATION, "tanh", "ufixed<10,3>", "fixed<8,1,RND,SAT_SYM>",
         {"table_size": 512, "table_t": "fixed<16,4,RND>"}),
    Case("tanh", Kind.ACTIVATION, "tanh", "fixed<11,3,RND,SAT>", "fixed<16,6>",
         {"table_size": 1024, "table_t": "fixed<18,8>"}),
    # Tables as fine as a float: a double instead of libm's single-precision tanhf / expf shows here.
    Case("tanh_fine", Kind.ACTIVATION, "tanh", "fixed<12,3>", "fixed<30,2>",
         {"table_size": 1024, "table_t": "fixed<30,2>"}),
    Case("sig_fine", Kind.ACTIVATION, "sigmoid", "fixed<12,5>", "fixed<30,2>",
         {"table_size": 1024, "table_t": "fixed<30,2>"}),
    Case("softplus", Kind.ACTIVATION, "softplus", "fixed<10,6>", "ufixed<12,4>",
         {"table_size": 1024, "table_t": "fixed<18,8>"}),
    Case("selu", Kind.ACTIVATION, "selu", "fixed<12,4>", "fixed<12,4,RND,SAT>",
         {"table_size": 1024, "table_t": "fixed<18,8>"}),
    Case("selu_narrow", Kind.ACTIVATION, "selu", "fixed<10,2,RND>", "fixed<10,2,RND,SAT>",
         {"table_size": 256, "table_t": "fixed<14,3,RND>"}),
    Case("softsign", Kind.ACTIVATION, "softsign", "fixed<8,10>", "fixed<16,6>",
         {"table_size": 1024, "table_t": "fixed<18,8>"}),
    Case("elu", Kind.PARAM_ACTIVATION, "elu", "fixed<12,4>", "fixed<12,5,RND,SAT>",
         {"param": 0.699999988079071, "param_t": "ufixed<8,0>", "table_size": 1024, "table_t": "fixed<18,8>"}),
    Case("leaky", Kind.PARAM_ACTIVATION, "leaky_relu", "fixed<12,4>", "fixed<10,4,TRN_ZERO,SAT>",
         {"param": 0.3, "param_t": "ufixed<8,-1>"}),
    Case("thr", Kind.PARAM_ACTIVATION, "thresholded_relu", "fixed<12,4>", "fixed<12,4>",
         {"param": 0.4, "param_t": "fixed<12,4>"}),
    Case("hsig", Kind.HARD_ACTIVATION, "hard_sigmoid", "fixed<12,4>", "ufixed<8,0,RND_CONV,SAT>",
         {"slope": 0.2, "shift": 0.5, "slope_t": "ufixed<16,0>", "shift_t": "ufixed<2,0>"}),
    Case("htanh", Kind.HARD_ACTIVATION, "hard_tanh", "fixed<10,3>", "fixed<6,1,RND_CONV,SAT_SYM>",
         {"slope": 0.5, "shift": 0.5, "slope_t": "ufixed<2,0>", "shift_t": "ufixed<2,0>"}),
]
PRELU = Case("prelu", Kind.PRELU, "prelu", "fixed<10,3>", "fixed<10,3,RND,SAT>", {"param_t": "fixed<8,2>"})
SOFTMAX_COMMON = {"exp_scale": 1.0, "exp_table_t": "fixed<18,8,RND,SAT>", "inv_table_t": "fixed<18,8,RND,SAT>",
                  "inv_inp_t": "fixed<18,8,RND,SAT>", "n_outer": 1, "n_inner": 1}
SOFTMAX = [
    Case("sm_lat", Kind.SOFTMAX, "latency", "fixed<10,4>", "ufixed<12,0,RND,SAT>",
         {**SOFTMAX_COMMON, "implementation": "latency", "exp_table_size": 1024, "inv_table_size": 1024,
          "accum_t": "fixed<12,5,RND,SAT>"}, n=10),
    Case("sm_stable", Kind.SOFTMAX, "stable", "fixed<10,4>", "fixed<16,6>",
         {**SOFTMAX_COMMON, "implementation": "stable", "exp_table_size": 512, "inv_table_size": 1024,
          "accum_t": "fixed<18,8,RND,SAT>", "inp_norm_t": "ufixed<9,3>"}, n=7),
    Case("sm_stable_narrow", Kind.SOFTMAX, "stable", "fixed<8,4>", "ufixed<10,0,RND_CONV,SAT>",
         {**SOFTMAX_COMMON, "implementation": "stable", "exp_table_size": 64, "inv_table_size": 256,
          "accum_t": "fixed<10,3,RND,SAT>", "inv_inp_t": "ufixed<10,3,RND,SAT>", "inp_norm_t": "ufixed<6,2>"}, n=5),
    Case("sm_legacy", Kind.SOFTMAX, "legacy", "fixed<10,4>", "fixed<16,6>",
         {**SOFTMAX_COMMON, "implementation": "legacy", "exp_table_size": 512, "inv_table_size": 256,
          "accum_t": "fixed<18,8,RND,SAT>"}, n=10),
    Case("sm_argmax", Kind.SOFTMAX, "argmax", "fixed<10,4>", "fixed<4,2>",
         {**SOFTMAX_COMMON, "implementation": "argmax", "exp_table_size": 1024, "inv_table_size": 1024,
          "accum_t": "fixed<18,8,RND,SAT>"}, n=10),
]
SOFTMAX_VECTORS = 300


def _all_codes(t: FixedType) -> np.ndarray:
    return np.arange(t.min_code, t.max_code + 1, dtype=np.int64)


def _literal(codes: np.ndarray, t: FixedType) -> str:
    return ", ".join(repr(float(v)) for v in t.to_float(codes))


def _source(prelu_alpha: np.ndarray, vectors: dict[str, np.ndarray]) -> str:
    out = ['#include "ap_fixed.h"', '#include "nnet_utils/nnet_activation.h"', "#include <cstdio>", ""]
    main = ["int main() {"]
    for c in [*ELEMENTWISE, PRELU]:
        xt, rt, n = c.xt, c.rt, len(_all_codes(c.xt))
        a = c.attrs
        out.append(f"struct cfg_{c.name} : nnet::activ_config {{ static const unsigned n_in = {n}; "
                   f"static const unsigned table_size = {a.get('table_size', 1024)}; "
                   f"typedef {_cpp(parse_type(a.get('table_t', 'fixed<18,8>')))} table_t; }};")
        if c.kind is Kind.HARD_ACTIVATION:
            out.append(f"struct hcfg_{c.name} {{ static const unsigned n_in = {n}; "
                       f"static const {_cpp(parse_type(a['slope_t']))} slope; "
                       f"static const {_cpp(parse_type(a['shift_t']))} shift; "
                       "static const unsigned io_type = nnet::io_parallel; static const unsigned reuse_factor = 1; };")
            out.append(f"const {_cpp(parse_type(a['slope_t']))} hcfg_{c.name}::slope = {a['slope']};")
            out.append(f"const {_cpp(parse_type(a['shift_t']))} hcfg_{c.name}::shift = {a['shift']};")
        out.append(f"static const double in_{c.name}[{n}] = {{{_literal(_all_codes(xt), xt)}}};")
        x, y = f"x_{c.name}", f"y_{c.name}"
        main.append(f"  {{ static {_cpp(xt)} {x}[{n}]; static {_cpp(rt)} {y}[{n}];")
        main.append(f"    for (int i = 0; i < {n}; i++) {x}[i] = in_{c.name}[i];")
        types = f"{_cpp(xt)}, {_cpp(rt)}"
        if c.kind is Kind.ACTIVATION:
            main.append(f"    nnet::{c.fn}<{types}, cfg_{c.name}>({x}, {y});")
        elif c.kind is Kind.HARD_ACTIVATION:
            main.append(f"    nnet::{c.fn}<{types}, hcfg_{c.name}>({x}, {y});")
        elif c.kind is Kind.PARAM_ACTIVATION:
            p = _cpp(parse_type(a["param_t"]))
            main.append(f"    nnet::{c.fn}<{_cpp(xt)}, {p}, {_cpp(rt)}, cfg_{c.name}>({x}, {a['param']}, {y});")
        else:
            p = parse_type(a["param_t"])
            out.append(f"static const double alpha_{c.name}[{n}] = {{{_literal(prelu_alpha, p)}}};")
            main.append(f"    static {_cpp(p)} al[{n}]; for (int i = 0; i < {n}; i++) al[i] = alpha_{c.name}[i];")
            main.append(f"    nnet::prelu<{_cpp(xt)}, {_cpp(p)}, {_cpp(rt)}, cfg_{c.name}>({x}, al, {y});")
        main.append(f'    printf("{c.name}"); for (int i = 0; i < {n}; i++) printf(" %.17g", {y}[i].to_double());'
                    ' printf("\\n"); }')
    for c in SOFTMAX:
        a, xt, rt, n = c.attrs, c.xt, c.rt, c.n
        norm = _cpp(parse_type(a["inp_norm_t"])) if "inp_norm_t" in a else "ap_fixed<1,0>"
        out.append(f"struct cfg_{c.name} : nnet::activ_config {{ static const unsigned n_in = {n}; "
                   f"static const unsigned n_slice = {n}; static const unsigned n_outer = 1; "
                   f"static const unsigned n_inner = 1; static const unsigned exp_table_size = {a['exp_table_size']}; "
                   f"static const unsigned inv_table_size = {a['inv_table_size']}; "
                   "static const unsigned io_type = nnet::io_parallel; static const unsigned reuse_factor = 1; "
                   "static const unsigned axis = -1; static const nnet::softmax_implementation implementation = "
                   f"nnet::softmax_implementation::{a['implementation']}; static constexpr float exp_scale = 1.0; "
                   f"typedef {_cpp(parse_type(a['exp_table_t']))} exp_table_t; "
                   f"typedef {_cpp(parse_type(a['inv_table_t']))} inv_table_t; "
                   f"typedef {_cpp(parse_type(a['accum_t']))} accum_t; "
                   f"typedef {_cpp(parse_type(a['inv_inp_t']))} inv_inp_t; typedef {norm} inp_norm_t; }};")
        v = vectors[c.name]
        out.append(f"static const double in_{c.name}[{v.size}] = {{{_literal(v.reshape(-1), xt)}}};")
        main.append(f"  {{ printf(\"{c.name}\"); for (int s = 0; s < {len(v)}; s++) {{ {_cpp(xt)} x[{n}]; "
                    f"{_cpp(rt)} y[{n}]; for (int i = 0; i < {n}; i++) x[i] = in_{c.name}[s * {n} + i]; "
                    f"nnet::softmax<{_cpp(xt)}, {_cpp(rt)}, cfg_{c.name}>(x, y); "
                    f'for (int i = 0; i < {n}; i++) printf(" %.17g", y[i].to_double()); }} printf("\\n"); }}')
    main += ["  return 0;", "}"]
    return "\n".join(out + [""] + main) + "\n"


@pytest.fixture(scope="module")
def hls4ml_outputs(tmp_path_factory):
    """Every case's outputs from hls4ml's routines (g++, the headers hls4ml compiles its projects with)."""
    if shutil.which("g++") is None:
        pytest.fail("g++ is not installed: run 'make deps' (or 'sudo apt-get install g++')")
    rng = np.random.default_rng(11)
    alpha = rng.integers(parse_type(PRELU.attrs["param_t"]).min_code, parse_type(PRELU.attrs["param_t"]).max_code,
                         len(_all_codes(PRELU.xt)))
    vectors = {c.name: rng.integers(c.xt.min_code, c.xt.max_code + 1, (SOFTMAX_VECTORS, c.n)) for c in SOFTMAX}
    for c in SOFTMAX:  # ties and wide spreads: equal maxima, and the extremes of the type
        vectors[c.name][0] = c.xt.max_code
        vectors[c.name][1, ::2] = c.xt.min_code
    root = tmp_path_factory.mktemp("kernels")
    (root / "kernels.cpp").write_text(_source(alpha, vectors))
    exe = root / "kernels"
    subprocess.run(["g++", "-O1", "-std=c++14", f"-I{HLS4ML_TEMPLATES / 'ap_types'}", f"-I{HLS4ML_TEMPLATES}",
                    str(root / "kernels.cpp"), "-o", str(exe)], check=True, capture_output=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    outputs = {line.split()[0]: np.array([float(v) for v in line.split()[1:]]) for line in lines}
    return outputs, alpha, vectors


def _layer(c: Case) -> LayerSpec:
    attrs = dict(c.attrs, activation=c.fn) if c.kind is not Kind.SOFTMAX else dict(c.attrs)
    accum = parse_type(c.attrs["accum_t"]) if "accum_t" in c.attrs else None
    shape = (c.n,) if c.kind is Kind.SOFTMAX else (len(_all_codes(c.xt)),)
    return LayerSpec(c.name, c.kind, ("x",), shape, c.rt, accum, attrs)


@pytest.mark.slow
@needs_gxx
@pytest.mark.parametrize("case", ELEMENTWISE, ids=lambda c: c.name)
def test_elementwise_kernel_equals_hls4ml_on_every_code(hls4ml_outputs, case):
    outputs, _, _ = hls4ml_outputs
    layer, codes = _layer(case), _all_codes(case.xt)[None, :]
    if case.kind is Kind.ACTIVATION:
        ours = act.lut(layer, codes, case.xt)
    elif case.kind is Kind.PARAM_ACTIVATION:
        ours = act.param_activation(layer, codes, case.xt)
    else:
        ours = act.hard_activation(layer, codes, case.xt)
    np.testing.assert_array_equal(case.rt.to_float(ours[0]), outputs[case.name])
    assert len(np.unique(outputs[case.name])) >= 5  # the case spans the function, not a constant


@pytest.mark.slow
@needs_gxx
def test_prelu_kernel_equals_hls4ml_on_every_code(hls4ml_outputs):
    outputs, alpha, _ = hls4ml_outputs
    codes = _all_codes(PRELU.xt)[None, :]
    ours = act.prelu_codes(codes, PRELU.xt, alpha, parse_type(PRELU.attrs["param_t"]), PRELU.rt)
    np.testing.assert_array_equal(PRELU.rt.to_float(ours[0]), outputs["prelu"])


@pytest.mark.slow
@needs_gxx
@pytest.mark.parametrize("case", SOFTMAX, ids=lambda c: c.name)
def test_softmax_equals_hls4ml_in_every_implementation(hls4ml_outputs, case):
    outputs, _, vectors = hls4ml_outputs
    ours = act.softmax(_layer(case), vectors[case.name], case.xt, "io_parallel")
    np.testing.assert_array_equal(case.rt.to_float(ours).reshape(-1), outputs[case.name])
    assert len(np.unique(outputs[case.name])) > 2 or case.attrs["implementation"] == "argmax"
