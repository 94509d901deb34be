// Float vectors of the widest kind this build has (Lanes<16>: AVX-512's __m512, Lanes<8>: AVX2's __m256, Lanes<1>:
// one float elsewhere), and the attention kernels' inner loops over them: e^x, and weighted sums of rows.
// Each kind loads float32 values, and bfloat16 or float16 ones widened to float32 on the way into a vector.

#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define PAGED_ATTENTION_AVX2 1
#endif

namespace paged_attention {

template <int kWidth>
struct Lanes;

// One float: the fallback where the build has no vector unit this code knows.
template <>
struct Lanes<1> {
  using Vec = float;
  static float load(const float* p) { return *p; }
  static float load(const c10::BFloat16* p) { return static_cast<float>(*p); }
  static float load(const c10::Half* p) { return static_cast<float>(*p); }
  static void store(float* p, float x) { *p = x; }
  static float set1(float x) { return x; }
  static float add(float a, float b) { return a + b; }
  static float mul(float a, float b) { return a * b; }
  static float max(float a, float b) { return a > b ? a : b; }
  static float fmadd(float a, float b, float c) { return std::fma(a, b, c); }
  static float fnmadd(float a, float b, float c) { return std::fma(-a, b, c); }
  static float round(float x) { return std::nearbyint(x); }
  // 2^n for integral n in [-126, 127].
  static float pow2(float n) {
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }
  static float reduce_max(float x) { return x; }
  static float reduce_add(float x) { return x; }
  static float transpose_sums(const float* sums) { return sums[0]; }
};

#ifdef PAGED_ATTENTION_AVX2
template <>
struct Lanes<8> {
  using Vec = __m256;
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  // A bfloat16 is the top half of a float32; float16 widens with F16C.
  static __m256 load(const c10::BFloat16* p) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
  }
  static __m256 load(const c10::Half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, __m256 x) { _mm256_storeu_ps(p, x); }
  static __m256 set1(float x) { return _mm256_set1_ps(x); }
  static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  static __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
  static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
  static __m256 fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
  static __m256 fnmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }
  static __m256 round(__m256 x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static __m256 pow2(__m256 n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static float reduce_max(__m256 x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  static float reduce_add(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  // Lane j of the result is the sum of sums[j]'s lanes. hadd pairs lanes within each 128-bit half; after two
  // rounds half h of pairs[k] holds vectors 4k..4k+3's sums over that half's lanes.
  static __m256 transpose_sums(const __m256* sums) {
    const __m256 pairs[2] = {
        _mm256_hadd_ps(_mm256_hadd_ps(sums[0], sums[1]), _mm256_hadd_ps(sums[2], sums[3])),
        _mm256_hadd_ps(_mm256_hadd_ps(sums[4], sums[5]), _mm256_hadd_ps(sums[6], sums[7])),
    };
    return _mm256_add_ps(_mm256_permute2f128_ps(pairs[0], pairs[1], 0x20),
                         _mm256_permute2f128_ps(pairs[0], pairs[1], 0x31));
  }
};
#endif

#ifdef __AVX512F__
template <>
struct Lanes<16> {
  using Vec = __m512;
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 load(const c10::BFloat16* p) {
    const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
  }
  static __m512 load(const c10::Half* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, __m512 x) { _mm512_storeu_ps(p, x); }
  static __m512 set1(float x) { return _mm512_set1_ps(x); }
  static __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
  static __m512 mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
  static __m512 max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
  static __m512 fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
  static __m512 fnmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fnmadd_ps(a, b, c); }
  static __m512 round(__m512 x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static __m512 pow2(__m512 n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static float reduce_max(__m512 x) { return _mm512_reduce_max_ps(x); }
  static float reduce_add(__m512 x) { return _mm512_reduce_add_ps(x); }
  // Lane j of the result is the sum of sums[j]'s lanes. Within each 128-bit lane, unpacking pairs of vectors
  // and adding leaves 8 vectors of 2-lane sums, and unpacking those as 64-bit pairs leaves 4 vectors whose
  // 128-bit lane l holds vectors 4k..4k+3's sums over lane l; two rounds of 128-bit shuffles add the lanes up.
  static __m512 transpose_sums(const __m512* sums) {
    __m512 twos[8], fours[4];
    for (int k = 0; k < 8; ++k) {
      twos[k] = _mm512_add_ps(_mm512_unpacklo_ps(sums[2 * k], sums[2 * k + 1]),
                              _mm512_unpackhi_ps(sums[2 * k], sums[2 * k + 1]));
    }
    for (int k = 0; k < 4; ++k) {
      const __m512d low = _mm512_castps_pd(twos[2 * k]), high = _mm512_castps_pd(twos[2 * k + 1]);
      fours[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(low, high)),
                               _mm512_castpd_ps(_mm512_unpackhi_pd(low, high)));
    }
    // 0x88 takes 128-bit lanes 0 and 2 of each operand, 0xDD lanes 1 and 3.
    const __m512 first = _mm512_add_ps(_mm512_shuffle_f32x4(fours[0], fours[1], 0x88),
                                       _mm512_shuffle_f32x4(fours[0], fours[1], 0xDD));
    const __m512 second = _mm512_add_ps(_mm512_shuffle_f32x4(fours[2], fours[3], 0x88),
                                        _mm512_shuffle_f32x4(fours[2], fours[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(first, second, 0x88), _mm512_shuffle_f32x4(first, second, 0xDD));
  }
};
using WidestLanes = Lanes<16>;
#elif defined(PAGED_ATTENTION_AVX2)
using WidestLanes = Lanes<8>;
#else
using WidestLanes = Lanes<1>;
#endif

// e^x lane by lane, x <= 0 (softmax's shifted scores): 2^n * p(r) with x = n ln 2 + r (ln 2 split in two for
// an exact r), |r| <= ln 2 / 2, and p Cephes' expf polynomial, good to float32 rounding in that range; lanes
// below -87.3 give 2^-126 * p, where the softmax weight is negligible. Scalar exp over every score took as
// long as the dot products.
template <typename L>
inline typename L::Vec exp_nonpositive(typename L::Vec x) {
  using V = typename L::Vec;
  x = L::max(x, L::set1(-87.3f));
  const V n = L::round(L::mul(x, L::set1(1.44269504088896341f)));
  V r = L::fnmadd(n, L::set1(0.693359375f), x);
  r = L::fnmadd(n, L::set1(-2.12194440e-4f), r);
  V p = L::set1(1.9875691500e-4f);
  p = L::fmadd(p, r, L::set1(1.3981999507e-3f));
  p = L::fmadd(p, r, L::set1(8.3334519073e-3f));
  p = L::fmadd(p, r, L::set1(4.1665795894e-2f));
  p = L::fmadd(p, r, L::set1(1.6666665459e-1f));
  p = L::fmadd(p, r, L::set1(5.0000001201e-1f));
  p = L::fmadd(p, L::mul(r, r), L::add(r, L::set1(1.f)));
  return L::mul(p, L::pow2(n));
}

// Asks for the cache lines of row[0:count] without waiting for them, into L2 (prefetcht2): on a Zen 4 EPYC, L1
// prefetches of scattered rows were no faster than none, L2 ones 1.6x (docs/attention_cpu.md).
template <typename value_t>
inline void prefetch_row(const value_t* row, int64_t count) {
  for (int64_t i = 0; i < count; i += 64 / sizeof(value_t)) __builtin_prefetch(row + i, 0, 1);
}

// out[r][d] += sum over j < count of weights[r * weight_stride + j] * rows[j][d], for kRows output rows of
// head_size values (out [kRows][head_size]): each row is read once for all kRows outputs, 4 vectors of values at
// a time with every output's sums in registers. Rows (float32, bfloat16 or float16) prefetch_distance ahead are
// prefetched (0: none).
template <typename L, int64_t kRows, typename value_t>
void add_weighted_rows(const float* weights, int64_t weight_stride, const value_t* const* rows, int64_t count,
                       int64_t head_size, float* out, int64_t prefetch_distance) {
  using V = typename L::Vec;
  constexpr int64_t kWidth = sizeof(V) / sizeof(float);
  int64_t d = 0;
  for (; d + 4 * kWidth <= head_size; d += 4 * kWidth) {
    V sums[kRows][4];
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t i = 0; i < 4; ++i) sums[r][i] = L::load(out + r * head_size + d + i * kWidth);
    }
    for (int64_t j = 0; j < count; ++j) {
      if (prefetch_distance > 0 && j + prefetch_distance < count) {
        prefetch_row(rows[j + prefetch_distance] + d, 4 * kWidth);
      }
      V row[4];
      for (int64_t i = 0; i < 4; ++i) row[i] = L::load(rows[j] + d + i * kWidth);
      for (int64_t r = 0; r < kRows; ++r) {
        const V weight = L::set1(weights[r * weight_stride + j]);
        for (int64_t i = 0; i < 4; ++i) sums[r][i] = L::fmadd(weight, row[i], sums[r][i]);
      }
    }
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t i = 0; i < 4; ++i) L::store(out + r * head_size + d + i * kWidth, sums[r][i]);
    }
  }
  for (; d < head_size; ++d) {
    for (int64_t r = 0; r < kRows; ++r) {
      float sum = out[r * head_size + d];
      for (int64_t j = 0; j < count; ++j) sum += weights[r * weight_stride + j] * static_cast<float>(rows[j][d]);
      out[r * head_size + d] = sum;
    }
  }
}

}  // namespace paged_attention
