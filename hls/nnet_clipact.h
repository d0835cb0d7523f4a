// FT-ClipAct clipped activation (Hoang, Hanif & Shafique, DATE 2020) for hls4ml's Vivado/Vitis backends.
//
// hwflow registers this header with hls4ml (hwflow/convert/clipact_hls.py); the per-layer config
// struct and the call come from hls/templates/clipact_config.tpl and clipact_function.tpl.
// The numpy emulator (hwflow/emulator/clip.py) computes the same function on integer codes:
//   - the threshold is a value of the INPUT type data_T: the requested T rounded down to data_T's
//     grid and clamped to [0, max of data_T] (hwflow.emulator.clip.threshold_code), written into
//     the config as a decimal that a double holds exactly, so the conversion below is exact;
//   - zero mode (the paper's):  y = x if 0 < x <= t, else 0;
//   - saturate mode:            y = min(max(x, 0), t);
//   - y is then assigned to res_T (res_T's rounding and overflow modes), as hls4ml's relu does.
#ifndef NNET_CLIPACT_H_
#define NNET_CLIPACT_H_

#include "ap_fixed.h"
#include "hls_stream.h"
#include "nnet_activation.h"
#include "nnet_common.h"
#include "nnet_types.h"

namespace nnet {

struct clipact_config {
    static const unsigned n_in = 10;
    static const unsigned io_type = io_parallel;
    static const bool saturate = false;    // false: values above the threshold become 0
    static constexpr double threshold = 0; // exactly representable in the input type
};

// One element, compared in the input type.
template <class data_T, class res_T, typename CONFIG_T> res_T clipact_element(data_T x, data_T t) {
    #pragma HLS INLINE
    res_T y;
    if (x <= 0) {
        y = 0;
    } else if (x > t) {
        if (CONFIG_T::saturate) {
            y = t;
        } else {
            y = 0;
        }
    } else {
        y = x;
    }
    return y;
}

// io_parallel: arrays of n_in elements.
template <class data_T, class res_T, typename CONFIG_T>
void clipact(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    const data_T t = CONFIG_T::threshold;
ClipActLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        res[i] = clipact_element<data_T, res_T, CONFIG_T>(data[i], t);
    }
}

// io_stream: streams of packs (nnet::array) of res_T::size elements.
template <class data_T, class res_T, typename CONFIG_T> void clipact(hls::stream<data_T> &data, hls::stream<res_T> &res) {
    typedef typename data_T::value_type in_T;
    typedef typename res_T::value_type out_T;
    const in_T t = CONFIG_T::threshold;
ClipActStreamLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
    ClipActPackLoop:
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            out_data[j] = clipact_element<in_T, out_T, CONFIG_T>(in_data[j], t);
        }
        res.write(out_data);
    }
}

// ---- Sloped forms: a clipped LeakyReLU / quantized_relu with a negative slope (one alpha), or a
// clipped PReLU (alpha[i] per input position, a weight array). The positive side is clipped as above;
// for x <= 0, y = alpha * x (the exact product, then assigned to res_T), as hls4ml's leaky_relu / prelu.
// hwflow.emulator.clip.sloped_codes computes the same on integer codes.

template <class data_T, class param_T, class res_T, typename CONFIG_T>
res_T clipact_sloped_element(data_T x, data_T t, param_T alpha) {
    #pragma HLS INLINE
    res_T y;
    if (x > 0) {
        y = clipact_element<data_T, res_T, CONFIG_T>(x, t);
    } else {
        y = alpha * x;
    }
    return y;
}

// io_parallel, one alpha (LeakyReLU, quantized_relu with negative_slope).
template <class data_T, class param_T, class res_T, typename CONFIG_T>
void clipact_sloped(data_T data[CONFIG_T::n_in], param_T alpha, res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    const data_T t = CONFIG_T::threshold;
ClipActSlopedLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        res[i] = clipact_sloped_element<data_T, param_T, res_T, CONFIG_T>(data[i], t, alpha);
    }
}

// io_parallel, alpha per position (PReLU).
template <class data_T, class param_T, class res_T, typename CONFIG_T>
void clipact_prelu(data_T data[CONFIG_T::n_in], param_T alpha[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    const data_T t = CONFIG_T::threshold;
ClipActPReLULoop:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        res[i] = clipact_sloped_element<data_T, param_T, res_T, CONFIG_T>(data[i], t, alpha[i]);
    }
}

// io_stream, one alpha.
template <class data_T, class param_T, class res_T, typename CONFIG_T>
void clipact_sloped(hls::stream<data_T> &data, param_T alpha, hls::stream<res_T> &res) {
    typedef typename data_T::value_type in_T;
    typedef typename res_T::value_type out_T;
    const in_T t = CONFIG_T::threshold;
ClipActSlopedStreamLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
    ClipActSlopedPackLoop:
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            out_data[j] = clipact_sloped_element<in_T, param_T, out_T, CONFIG_T>(in_data[j], t, alpha);
        }
        res.write(out_data);
    }
}

// io_stream, alpha per position.
template <class data_T, class param_T, class res_T, typename CONFIG_T>
void clipact_prelu(hls::stream<data_T> &data, const param_T alpha[CONFIG_T::n_in], hls::stream<res_T> &res) {
    typedef typename data_T::value_type in_T;
    typedef typename res_T::value_type out_T;
    const in_T t = CONFIG_T::threshold;
ClipActPReLUStreamLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
    ClipActPReLUPackLoop:
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            out_data[j] = clipact_sloped_element<in_T, param_T, out_T, CONFIG_T>(in_data[j], t, alpha[i * res_T::size + j]);
        }
        res.write(out_data);
    }
}

// ---- A clipped ELU: the positive side clipped as above; below zero hls4ml's ELU (nnet_activation.h /
// nnet_activation_stream.h): alpha * elu_table[min(int(x * table_size / -8), table_size - 1)], the table
// made by nnet::init_elu_table in CONFIG_T::table_t. hwflow.emulator.clip.scalar_sloped_codes computes the same.

template <class data_T, class param_T, class res_T, typename CONFIG_T>
res_T clipact_elu_element(data_T x, data_T t, param_T alpha, typename CONFIG_T::table_t *elu_table) {
    #pragma HLS INLINE
    res_T y;
    if (x > 0) {
        y = clipact_element<data_T, res_T, CONFIG_T>(x, t);
    } else if (x >= 0) {
        y = x;
    } else {
        int index = x * CONFIG_T::table_size / -8;
        if (index > CONFIG_T::table_size - 1)
            index = CONFIG_T::table_size - 1;
        y = alpha * elu_table[index];
    }
    return y;
}

template <class data_T, class param_T, class res_T, typename CONFIG_T>
void clipact_elu(data_T data[CONFIG_T::n_in], const param_T alpha, res_T res[CONFIG_T::n_in]) {
#ifdef __HLS_SYN__
    bool initialized = false;
    typename CONFIG_T::table_t elu_table[CONFIG_T::table_size];
#else
    static bool initialized = false;
    static typename CONFIG_T::table_t elu_table[CONFIG_T::table_size];
#endif
    if (!initialized) {
        init_elu_table<CONFIG_T, CONFIG_T::table_size>(elu_table);
        initialized = true;
    }
    #pragma HLS PIPELINE
    const data_T t = CONFIG_T::threshold;
ClipActEluLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        res[i] = clipact_elu_element<data_T, param_T, res_T, CONFIG_T>(data[i], t, alpha, elu_table);
    }
}

template <class data_T, class param_T, class res_T, typename CONFIG_T>
void clipact_elu(hls::stream<data_T> &data, const param_T alpha, hls::stream<res_T> &res) {
    typedef typename data_T::value_type in_T;
    typedef typename res_T::value_type out_T;
#ifdef __HLS_SYN__
    bool initialized = false;
    typename CONFIG_T::table_t elu_table[CONFIG_T::table_size];
#else
    static bool initialized = false;
    static typename CONFIG_T::table_t elu_table[CONFIG_T::table_size];
#endif
    if (!initialized) {
        init_elu_table<CONFIG_T, CONFIG_T::table_size>(elu_table);
        initialized = true;
    }
    const in_T t = CONFIG_T::threshold;
ClipActEluStreamLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
    ClipActEluPackLoop:
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            out_data[j] = clipact_elu_element<in_T, param_T, out_T, CONFIG_T>(in_data[j], t, alpha, elu_table);
        }
        res.write(out_data);
    }
}

} // namespace nnet

#endif
