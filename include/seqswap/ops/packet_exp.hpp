// exp of a packet of non-positive values (softmax rows shifted by their max, the Gaussian
// e^{-x²/2} of GELU's derivative): Eigen's pexp for float with its last step, y · 2^m,
// made from m's bits instead of pldexp_generic's clamped three-factor product. For x ≤ 0,
// m = round(x / ln 2) is in [-128, 0], so 2^m is a normal float down to m = -126; below that
// (x < -87.3, where exp is subnormal) the result is 0. Every normal result has the same bits as
// Eigen's pexp (checked over [-100, 0] in steps of 4e-4, tests/test_kernels.cpp); NaN stays
// NaN. Measured 1.65-1.7x the rate of Eigen's pexp on one Zen 3 thread (bench_ops
// BM_packet_exp: 0.41 against 0.68-0.71 ns per value, docs/performance.md). A positive argument is clamped to 0 (exp 1): callers shift or
// negate first. double (and a target without a float packet with an integer twin) takes
// Eigen's pexp.
#pragma once
#include <Eigen/Core>
#include <type_traits>

namespace seqswap::ops {

template <class P>
inline P pexp_nonpositive(const P& x_in) {
  using namespace Eigen::internal;
  using T = typename unpacket_traits<P>::type;
  // (a build without vectorisation, nvcc's host pass, has P = float and no integer packet)
  if constexpr (std::is_same_v<T, float> && !std::is_same_v<P, float> &&
                requires { typename unpacket_traits<P>::integer_packet; }) {
    using PI = typename unpacket_traits<P>::integer_packet;
    // Eigen's pexp_float (Cephes): the clamp (upper bound 0 here), m, r = x - m ln 2 in two
    // parts, and the degree-6 polynomial, in its order of operations.
    const P x = pmax(pmin(x_in, pset1<P>(0.0f)), pset1<P>(-88.723f));
    P m = pfloor(pmadd(x, pset1<P>(1.44269504088896341f), pset1<P>(0.5f)));
    P r = pmadd(m, pset1<P>(-0.693359375f), x);
    r = pmadd(m, pset1<P>(2.12194440e-4f), r);
    const P r2 = pmul(r, r), r3 = pmul(r2, r);
    P y = pmadd(pset1<P>(1.9875691500E-4f), r, pset1<P>(1.3981999507E-3f));
    P y1 = pmadd(pset1<P>(4.1665795894E-2f), r, pset1<P>(1.6666665459E-1f));
    const P y2 = padd(r, pset1<P>(1.0f));
    y = pmadd(y, r, pset1<P>(8.3334519073E-3f));
    y1 = pmadd(y1, r, pset1<P>(5.0000001201E-1f));
    y = pmadd(y, r3, y1);
    y = pmadd(y, r2, y2);
    // 2^m from its exponent field: (m + 127) << 23; m = -127 gives the bits of +0.
    m = pmax(m, pset1<P>(-127.0f));
    const P two_m = preinterpret<P>(plogical_shift_left<23>(padd(pcast<P, PI>(m), pset1<PI>(127))));
    return pmul(y, two_m);
  } else {
    return pexp(x_in);
  }
}

}  // namespace seqswap::ops
