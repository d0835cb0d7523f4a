// hwflow: a stand-in for Xilinx's ap_axi_sdata.h, for the g++ C simulation only.
//
// Vitis HLS and Vivado HLS ship the real header; hls4ml's copy of the ap_types does not include it.
// This one declares the same member names (data, keep, strb, user, last, id, dest), which is all
// the C simulation of hwflow_top uses. It is on the include path of the C simulation build only,
// never of synthesis.
#ifndef HWFLOW_CSIM_AP_AXI_SDATA_H_
#define HWFLOW_CSIM_AP_AXI_SDATA_H_

#include <cstddef>

#include "ap_int.h"

namespace hls {

template <typename TData, std::size_t WUser, std::size_t WId, std::size_t WDest> struct axis {
    TData data;
    ap_uint<(TData::width + 7) / 8> keep;
    ap_uint<(TData::width + 7) / 8> strb;
    ap_uint<WUser> user;
    ap_uint<1> last;
    ap_uint<WId> id;
    ap_uint<WDest> dest;
};

// Zero-width side channels are absent, as in Vitis HLS.
template <typename TData> struct axis<TData, 0, 0, 0> {
    TData data;
    ap_uint<(TData::width + 7) / 8> keep;
    ap_uint<(TData::width + 7) / 8> strb;
    ap_uint<1> last;
};

} // namespace hls

template <int D, int U, int TI, int TD> struct ap_axis : hls::axis<ap_int<D>, U, TI, TD> {};
template <int D, int U, int TI, int TD> struct ap_axiu : hls::axis<ap_uint<D>, U, TI, TD> {};

#endif
