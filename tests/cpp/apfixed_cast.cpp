// Reference for hwflow's fixed-point arithmetic: Xilinx's own ap_fixed (the copy hls4ml ships).
// The test generates cases.h (one CASE line per source/destination type pair), compiles this file
// and compares every printed word with hwflow.fixed.
//
// stdin: N, then N source codes (int64), then M, then M doubles.
// stdout, per case: one line of N destination words (source code cast), one of M (double cast).
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <vector>

#include "ap_fixed.h"

static std::vector<long long> codes;
static std::vector<double> reals;

template <int WS, int IS, int WD, int ID, ap_q_mode Q, ap_o_mode O, bool SD> void run_case() {
    typedef typename std::conditional<SD, ap_fixed<WD, ID, Q, O>, ap_ufixed<WD, ID, Q, O>>::type dst_t;
    for (long long c : codes) {
        ap_fixed<WS, IS> src;
        src.range(WS - 1, 0) = ap_uint<WS>((unsigned long long)c);
        dst_t dst = src;
        printf("%llu ", (unsigned long long)dst.range(WD - 1, 0).to_uint64());
    }
    printf("\n");
    for (double r : reals) {
        dst_t dst = r;
        printf("%llu ", (unsigned long long)dst.range(WD - 1, 0).to_uint64());
    }
    printf("\n");
}

#define CASE(WS, IS, WD, ID, Q, O, SD) run_case<WS, IS, WD, ID, Q, O, SD>();

int main() {
    size_t n;
    if (scanf("%zu", &n) != 1) return 1;
    codes.resize(n);
    for (size_t i = 0; i < n; i++) scanf("%lld", &codes[i]);
    if (scanf("%zu", &n) != 1) return 1;
    reals.resize(n);
    for (size_t i = 0; i < n; i++) scanf("%lf", &reals[i]);
#include "cases.h"
    return 0;
}
