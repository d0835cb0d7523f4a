// hwflow: decoding the stored weight words held in BRAM into hls4ml's weight arrays.
//
// Each weight memory is a BRAM of 32-bit bus words shared with an AXI BRAM controller (the host's
// port). Stored word i sits in bits [WB*(i%LANES), WB*(i%LANES+1)) of bus word i/LANES, where WB is
// the word width and LANES = 32/WB (see docs/hardware.md). hwflow_top decodes every memory on each
// start, so whatever the host wrote while the accelerator was idle is what the network computes with.
//
// The divide-back of weight scaling (contract 7 in docs/design.md):
//  - scale 2^s: the stored word is the code of 2^s*w in fixed<W,I>, and hls4ml's weight type is
//    fixed<W,I-s>: the same bits with the binary point moved, so decoding is a reinterpretation;
//  - any other constant c: the word is a code of S = fixed<W,I>; the weight is the exact product
//    word * q, q = 1/c in ufixed<18,E>, cast to the compute type C (round to nearest, saturate).
#ifndef HWFLOW_WEIGHTS_H_
#define HWFLOW_WEIGHTS_H_

#include "ap_fixed.h"
#include "ap_int.h"

namespace hwflow {

typedef ap_uint<32> bus_word;

// Power-of-two scale (or none): the stored bits are the code of T.
template <class T, int WB, int LANES, int N> void unpack_words(const bus_word mem[(N + LANES - 1) / LANES], T w[N]) {
unpack_bus_words:
    for (int b = 0; b < (N + LANES - 1) / LANES; b++) {
#pragma HLS PIPELINE II = 1
        bus_word bus = mem[b];
    unpack_lanes:
        for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
            if (b * LANES + l < N) {
                w[b * LANES + l].range(WB - 1, 0) = bus.range(WB * l + WB - 1, WB * l);
            }
        }
    }
}

// Constant scale: w = (C)(S word * q), q held as the code QCODE of Q = ufixed<18,E>.
template <class T, class S, class Q, class C, int WB, int LANES, int N, unsigned long QCODE>
void unpack_divided(const bus_word mem[(N + LANES - 1) / LANES], T w[N]) {
    Q q;
    q.range(Q::width - 1, 0) = ap_uint<Q::width>(QCODE);
unpack_bus_words:
    for (int b = 0; b < (N + LANES - 1) / LANES; b++) {
#pragma HLS PIPELINE II = 1
        bus_word bus = mem[b];
    unpack_lanes:
        for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
            if (b * LANES + l < N) {
                S stored;
                stored.range(WB - 1, 0) = bus.range(WB * l + WB - 1, WB * l);
                C weight = stored * q; // the product is exact; the cast to C rounds and saturates
                w[b * LANES + l] = weight;
            }
        }
    }
}

// po2 (QKeras quantized_po2) words: hls4ml's struct {ap_uint<1> sign; ap_int<E> weight;}, stored packed
// first member low: bit 0 the sign, bits 1..E the exponent (hwflow/image/quantized.py).
template <class T, int WB, int LANES, int N> void unpack_exponents(const bus_word mem[(N + LANES - 1) / LANES], T w[N]) {
unpack_bus_words:
    for (int b = 0; b < (N + LANES - 1) / LANES; b++) {
#pragma HLS PIPELINE II = 1
        bus_word bus = mem[b];
    unpack_lanes:
        for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
            if (b * LANES + l < N) {
                w[b * LANES + l].sign = bus[WB * l];
                w[b * LANES + l].weight.range(WB - 2, 0) = bus.range(WB * l + WB - 1, WB * l + 1);
            }
        }
    }
}

} // namespace hwflow

#endif
