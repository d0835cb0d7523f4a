// hwflow: the AXI-Stream data path of hwflow_top (see docs/hardware.md).
//
// One input element per 32-bit stream word (the element's fixed-point code, sign-extended), one
// output code per 32-bit word (sign-extended), TLAST on the last output word of the batch. The
// host converts floats to input codes itself, so the accelerator does no float arithmetic.
#ifndef HWFLOW_AXIS_H_
#define HWFLOW_AXIS_H_

#include <ap_axi_sdata.h>

#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"

#ifndef HWFLOW_VITIS
#define HWFLOW_VITIS 1
#endif

namespace hwflow {

#if HWFLOW_VITIS
typedef hls::axis<ap_int<32>, 0, 0, 0> axis_word;
#else
// Vivado HLS does not accept zero-width side channels; TUSER/TID/TDEST are driven with 0.
typedef ap_axis<32, 1, 1, 1> axis_word;
#endif

// Whether a fixed-point type is signed (decides sign- or zero-extension of its code).
template <class T> struct is_signed_type {
    static const bool value = true;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct is_signed_type<ap_ufixed<W, I, Q, O, N> > {
    static const bool value = false;
};
template <int W> struct is_signed_type<ap_uint<W> > {
    static const bool value = false;
};

inline axis_word make_word(ap_int<32> data, bool last) {
    axis_word w;
    w.data = data;
    w.keep = -1;
    w.strb = -1;
    w.last = last;
#if !HWFLOW_VITIS
    w.user = 0;
    w.id = 0;
    w.dest = 0;
#endif
    return w;
}

// The code of v as a 32-bit stream word (sign-extended for signed types).
template <class T> ap_int<32> code_word(const T &v) {
    ap_uint<T::width> bits = v.range(T::width - 1, 0);
    if (is_signed_type<T>::value) {
        ap_int<T::width> code = bits;
        return ap_int<32>(code);
    }
    return ap_int<32>(bits);
}

// A value whose code is the low bits of a stream word.
template <class T> void set_code(T &v, const axis_word &w) { v.range(T::width - 1, 0) = w.data.range(T::width - 1, 0); }

// io_parallel: one sample as an array of N elements.
template <class T, unsigned N> void read_array(hls::stream<axis_word> &in, T x[N]) {
read_elements:
    for (unsigned i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        set_code(x[i], in.read());
    }
}

template <class T, unsigned N> void write_array(const T y[N], hls::stream<axis_word> &out, bool last_sample) {
write_elements:
    for (unsigned i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        out.write(make_word(code_word(y[i]), last_sample && i + 1 == N));
    }
}

// io_stream: one sample as N elements packed P::size per stream transaction (hls4ml's nnet::array).
template <class P, unsigned N> void read_packed(hls::stream<axis_word> &in, hls::stream<P> &x) {
read_packs:
    for (unsigned i = 0; i < N / P::size; i++) {
        P pack;
    read_pack:
        for (unsigned j = 0; j < P::size; j++) {
#pragma HLS PIPELINE II = 1
            set_code(pack[j], in.read());
        }
        x.write(pack);
    }
}

template <class P, unsigned N> void write_packed(hls::stream<P> &y, hls::stream<axis_word> &out, bool last_sample) {
write_packs:
    for (unsigned i = 0; i < N / P::size; i++) {
        P pack = y.read();
    write_pack:
        for (unsigned j = 0; j < P::size; j++) {
#pragma HLS PIPELINE II = 1
            out.write(make_word(code_word(pack[j]), last_sample && (i + 1) * P::size == N && j + 1 == P::size));
        }
    }
}

} // namespace hwflow

#endif
