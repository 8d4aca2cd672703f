// Branch-free exp and log, written so that gcc vectorises the loops that call them (std::exp/std::log are opaque
// libm calls and keep a loop scalar). Both are within a few ulp of libm on the ranges the pairwise kernel uses; the
// float64 tests compare the kernel with the reference at 1e-12, the float32 ones at 2e-5.
//
// log: the classic fdlibm algorithm. Reduce x = 2^k (1 + f) with
// 1 + f in [sqrt(2)/2, sqrt(2)), then log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with s = f / (2 + f) and R a
// minimax polynomial (coefficients Lg1..Lg7 below); k log 2 is added in two parts (ln2_hi has trailing zero bits,
// so k * ln2_hi is exact). Error below 1 ulp; no checks for 0, subnormals, infinities or NaN: callers pass values
// they know to be positive normal numbers.
#pragma once

#include <cstdint>
#include <cstring>

// Always inlined: a call inside a loop keeps it scalar, and gcc's heuristics sometimes decline these bodies.
#if defined(__GNUC__)
#define BOXSEG_VEC_INLINE inline __attribute__((always_inline))
#else
#define BOXSEG_VEC_INLINE inline
#endif

// The hot loops are compiled twice, for AVX2 and for the baseline ISA, and the loader picks one per CPU (ifunc):
// the build stays portable (no -march) and needs no runtime dispatch code. Element-wise IEEE operations without
// FMA contraction give the same bits either way, so results do not depend on the CPU.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define BOXSEG_SIMD_CLONES __attribute__((noinline, target_clones("avx2", "default")))
#else
#define BOXSEG_SIMD_CLONES __attribute__((noinline))
#endif

namespace boxseg {

BOXSEG_VEC_INLINE float fast_log(float x) {
  constexpr float ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;
  constexpr float Lg1 = 0.66666662693f, Lg2 = 0.40000972152f, Lg3 = 0.28498786688f, Lg4 = 0.24279078841f;
  uint32_t ix;
  std::memcpy(&ix, &x, sizeof ix);
  ix += 0x3f800000u - 0x3f3504f3u;  // moves the mantissa boundary from 1 to sqrt(2)/2
  const int k = static_cast<int>(ix >> 23) - 0x7f;
  ix = (ix & 0x007fffffu) + 0x3f3504f3u;
  float m;
  std::memcpy(&m, &ix, sizeof m);
  const float f = m - 1.0f;
  const float s = f / (2.0f + f);
  const float z = s * s, w = z * z;
  const float r = z * (Lg1 + w * Lg3) + w * (Lg2 + w * Lg4);
  const float hfsq = 0.5f * f * f, dk = static_cast<float>(k);
  return s * (hfsq + r) + dk * ln2_lo - hfsq + f + dk * ln2_hi;
}

BOXSEG_VEC_INLINE double fast_log(double x) {
  constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  constexpr double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                   Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                   Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                   Lg7 = 1.479819860511658591e-01;
  uint64_t ix;
  std::memcpy(&ix, &x, sizeof ix);
  uint64_t hx = (ix >> 32) + (0x3ff00000u - 0x3fe6a09eu);
  const int k = static_cast<int>(hx >> 20) - 0x3ff;
  hx = (hx & 0x000fffffu) + 0x3fe6a09eu;
  ix = (hx << 32) | (ix & 0xffffffffu);
  double m;
  std::memcpy(&m, &ix, sizeof m);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s, w = z * z;
  const double r = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7))) + w * (Lg2 + w * (Lg4 + w * Lg6));
  const double hfsq = 0.5 * f * f, dk = static_cast<double>(k);
  return s * (hfsq + r) + dk * ln2_lo - hfsq + f + dk * ln2_hi;
}

// exp(x) for x <= 0 (the kernel needs exp(-|z|)); 0 where the result would be subnormal (x below about -87.3 in
// float, -708.3 in double: an absolute error under 1.2e-38 / 2.3e-308). Reduction x = k ln2 + r with |r| <= ln2/2,
// k = round(x / ln2) by the add-and-subtract-1.5*2^mantissa_bits trick (exact in round-to-nearest), ln2 split in two
// (Cody-Waite) so that k * ln2_hi is exact; exp(r) by its Taylor series to degree 7 (float; truncation 5e-9
// relative) or 12 (double; 2e-16), and 2^k built in the exponent bits.
BOXSEG_VEC_INLINE float fast_exp_nonpositive(float x) {
  constexpr float log2e = 1.44269504089f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  constexpr float magic = 12582912.0f;  // 1.5 * 2^23
  const bool tiny = x < -87.3f;
  const float xc = tiny ? -87.3f : x;
  const float t = xc * log2e + magic;
  const float kf = t - magic;
  const float r = (xc - kf * ln2_hi) - kf * ln2_lo;
  float e = 1.0f / 5040;
  e = e * r + 1.0f / 720;
  e = e * r + 1.0f / 120;
  e = e * r + 1.0f / 24;
  e = e * r + 1.0f / 6;
  e = e * r + 0.5f;
  e = e * r + 1.0f;
  e = e * r + 1.0f;
  uint32_t tb, mb;
  std::memcpy(&tb, &t, sizeof tb);
  std::memcpy(&mb, &magic, sizeof mb);
  const uint32_t sb = (tb - mb + 127u) << 23;  // tb - mb = k (two's complement), k in [-126, 0]
  float scale;
  std::memcpy(&scale, &sb, sizeof scale);
  return tiny ? 0.0f : e * scale;
}

BOXSEG_VEC_INLINE double fast_exp_nonpositive(double x) {
  constexpr double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01,
                   ln2_lo = 1.90821492927058770002e-10;
  constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  const bool tiny = x < -708.3;
  const double xc = tiny ? -708.3 : x;
  const double t = xc * log2e + magic;
  const double kf = t - magic;
  const double r = (xc - kf * ln2_hi) - kf * ln2_lo;
  double e = 1.0 / 479001600;
  e = e * r + 1.0 / 39916800;
  e = e * r + 1.0 / 3628800;
  e = e * r + 1.0 / 362880;
  e = e * r + 1.0 / 40320;
  e = e * r + 1.0 / 5040;
  e = e * r + 1.0 / 720;
  e = e * r + 1.0 / 120;
  e = e * r + 1.0 / 24;
  e = e * r + 1.0 / 6;
  e = e * r + 0.5;
  e = e * r + 1.0;
  e = e * r + 1.0;
  uint64_t tb, mb;
  std::memcpy(&tb, &t, sizeof tb);
  std::memcpy(&mb, &magic, sizeof mb);
  const uint64_t sb = (tb - mb + 1023u) << 52;
  double scale;
  std::memcpy(&scale, &sb, sizeof scale);
  return tiny ? 0.0 : e * scale;
}

}  // namespace boxseg
