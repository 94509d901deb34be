// x @ W.T (+ bias) on the CPU with W kept in ggml quantized blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
// Q5_K, Q6_K).
//
// Layout: row n of `blocks` is output feature n, consecutive blocks of 32 weights, or of 256 for the
// K-quants' super-blocks, which the kernel reads as 8 groups of 32 weights:
//   Q4_0 (18 bytes): fp16 d, 16 nibble bytes    w = d * (q - 8)
//   Q4_1 (20 bytes): fp16 d, fp16 m, 16 nibbles  w = d * q + m
//   Q5_0 (22 bytes): fp16 d, 4 bytes of fifth bits (bit j for weight j), 16 nibble bytes
//                                                w = d * (q - 16)
//   Q5_1 (24 bytes): fp16 d, fp16 m, fifth bits, nibbles  w = d * q + m
//   Q8_0 (34 bytes): fp16 d, 32 int8             w = d * q
//   Q4_K (144 bytes): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and minimums (one pair per group),
//                     128 nibble bytes                          w = (d * scale) * q - dmin * min
//   Q5_K (176 bytes): as Q4_K, with 32 bytes of fifth bits before the nibbles: bit g of byte i is the
//                     high bit of weight i of group g          w = (d * scale) * q - dmin * min
//   Q6_K (210 bytes): 128 nibble bytes (low 4 bits), 64 bytes of 2-bit high parts, 16 int8 scales (one
//                     per 16 weights), fp16 d at the end       w = (d * scale) * (q - 32)
// In Q4_0/Q4_1/Q5_0/Q5_1 nibble byte j holds weight j in its low half and weight j + 16 in its high half. In
// Q4_K/Q5_K nibble bytes 32i..32i+31 hold group 2i in their low halves and group 2i + 1 in their high
// halves. Q6_K's layout is described at its decoder.
//
// Numerics: each weight is bit-identical to blocks.dequantize's (and gguf-py's). Every product is exact
// in float32's 24-bit significand: d * q has at most 11 + 8 significant bits, the K-quants'
// (d * scale) * q at most 11 + 7 + 5 (fp16 d; a 6-bit or int8 scale; q in 0..31 or -32..31). So Q4_1's
// d * q + m and the K-quants' (d * scale) * q - dmin * min round once whether or not an FMA fuses them.
// x * w is accumulated in float32 with FMA, so the result differs from x @ dequantize(blocks).T only by
// summation order.
//
// Speed: a decode step is bound by reading weights, and blocks are 4.5 to 8.5 bits per weight instead
// of 32. Output features are split across threads; each group of 32 weights is decoded once per call
// and used for every row of x (directly from registers for up to 4 rows; else a few weight rows are
// decoded into L1 together and multiply tiles of 4 rows of x with their sums in registers).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define GGUF_LINEAR_AVX2 1
#endif

namespace {

constexpr int64_t kGroupValues = 32;
constexpr int64_t kSuperBlockValues = 256;

inline float float16_at(const uint8_t* bytes) {
  uint16_t bits;
  std::memcpy(&bits, bytes, sizeof(bits));
#ifdef GGUF_LINEAR_AVX2
  return _cvtsh_ss(bits);
#else
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
#endif
}

// Group g's 6-bit scale and minimum from a Q4_K/Q5_K super-block's 12 packed bytes. Groups 0-3 use the
// low 6 bits of bytes g (scale) and g + 4 (minimum); groups 4-7 take their low 4 bits from the halves
// of byte g + 4 and their top 2 bits from the spare top bits of bytes g - 4 (scale) and g (minimum).
inline void k_scale_and_min(const uint8_t* packed, int64_t g, float* scale, float* minimum) {
  if (g < 4) {
    *scale = packed[g] & 0x3F;
    *minimum = packed[g + 4] & 0x3F;
  } else {
    *scale = (packed[g + 4] & 0x0F) | ((packed[g - 4] >> 6) << 4);
    *minimum = (packed[g + 4] >> 4) | ((packed[g] >> 6) << 4);
  }
}

// Where Q6_K keeps group g (0-7) of a super-block. Each half of 128 weights owns 64 nibble bytes and 32
// bytes of 2-bit high parts; its weight 32p + i (part p = 0-3) is nibble p / 2 of byte 32 (p % 2) + i
// and bits 2p, 2p + 1 of high byte i.
struct Q6KGroup {
  int64_t nibble_offset, nibble_shift, high_offset, high_shift;
  explicit Q6KGroup(int64_t g)
      : nibble_offset(64 * (g / 4) + 32 * (g % 2)), nibble_shift(4 * (g % 4 / 2)),
        high_offset(128 + 32 * (g / 4)), high_shift(2 * (g % 4)) {}
};
constexpr int64_t kQ6KScales = 192, kQ6KScale = 208;

#ifdef GGUF_LINEAR_AVX2
// (byte >> shift) & mask for each of 32 bytes. Shifting 16-bit lanes is safe: the mask drops the bits
// that come in from the neighbouring byte (every field here fits in a byte beside its shift).
inline __m256i byte_fields(const uint8_t* bytes, int64_t shift, int mask) {
  const __m256i loaded = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
  return _mm256_and_si256(_mm256_srl_epi16(loaded, _mm_cvtsi64_si128(shift)), _mm256_set1_epi8(static_cast<char>(mask)));
}

// The 32 4-bit values of 16 nibble bytes as bytes, in value order: the low halves, then the high halves.
inline __m256i nibble_bytes(const uint8_t* bytes) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __m256i halves = _mm256_inserti128_si256(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4), 1);
  return _mm256_and_si256(halves, _mm256_set1_epi8(0x0F));
}

// A group of 32 weights is w = a * q + b: `quants` gives its 32 q as bytes (uint8, or int8 for the kSigned
// formats, whose b is 0), `scales` its a (one per half of 16 weights: they differ only in Q6_K, whose
// scales cover 16 weights) and b. Group `group` of a block is always 0 for the 32-weight formats.
struct GroupScales {
  float a_first, a_second, b;
};

struct Q4_0 {
  static constexpr int64_t kValues = 32, kBytes = 18;
  static constexpr bool kSigned = false;
  static constexpr const char* kName = "Q4_0";
  static __m256i quants(const uint8_t* block, int64_t) { return nibble_bytes(block + 2); }
  static GroupScales scales(const uint8_t* block, int64_t) {
    const float d = float16_at(block);
    return {d, d, -8.f * d};  // d * q - 8 * d is exact: d * (q - 8) has at most 11 + 4 significant bits
  }
};

struct Q4_1 {
  static constexpr int64_t kValues = 32, kBytes = 20;
  static constexpr bool kSigned = false;
  static constexpr const char* kName = "Q4_1";
  static __m256i quants(const uint8_t* block, int64_t) { return nibble_bytes(block + 4); }
  static GroupScales scales(const uint8_t* block, int64_t) {
    const float d = float16_at(block);
    return {d, d, float16_at(block + 2)};
  }
};

// Q5_0 and Q5_1: the nibbles of Q4_0/Q4_1 plus a 32-bit word whose bit j is the fifth bit of weight j;
// w = d * (q - 16) or d * q + m.
template <bool kMinimum>
struct FiveBit {
  static constexpr int64_t kValues = 32, kBytes = kMinimum ? 24 : 22;
  static constexpr bool kSigned = false;
  static constexpr const char* kName = kMinimum ? "Q5_1" : "Q5_0";
  static constexpr int64_t kHighOffset = kMinimum ? 4 : 2;
  static __m256i quants(const uint8_t* block, int64_t) {
    uint32_t high_bits;
    std::memcpy(&high_bits, block + kHighOffset, sizeof(high_bits));
    // Byte j gets byte j / 8 of the word (shuffles stay within 16-byte lanes; the word is in every
    // lane), then 0x10 where its bit j % 8 is set.
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int>(high_bits)),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
    const __m256i fifth = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibble_bytes(block + kHighOffset + 4), fifth);
  }
  static GroupScales scales(const uint8_t* block, int64_t) {
    const float d = float16_at(block);
    return {d, d, kMinimum ? float16_at(block + 2) : -16.f * d};
  }
};
using Q5_0 = FiveBit<false>;
using Q5_1 = FiveBit<true>;

struct Q8_0 {
  static constexpr int64_t kValues = 32, kBytes = 34;
  static constexpr bool kSigned = true;
  static constexpr const char* kName = "Q8_0";
  static __m256i quants(const uint8_t* block, int64_t) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  }
  static GroupScales scales(const uint8_t* block, int64_t) {
    const float d = float16_at(block);
    return {d, d, 0.f};
  }
};

// Q4_K and Q5_K: w = (d * scale) * q - dmin * min, q from `kHighBits` extra bits above the nibbles.
template <int64_t kHighBits>
struct KQuant {
  static constexpr int64_t kValues = kSuperBlockValues, kBytes = kHighBits ? 176 : 144;
  static constexpr bool kSigned = false;
  static constexpr const char* kName = kHighBits ? "Q5_K" : "Q4_K";
  static __m256i quants(const uint8_t* block, int64_t group) {
    const __m256i quants = byte_fields(block + 16 + 32 * kHighBits + 32 * (group / 2), 4 * (group % 2), 0x0F);
    if constexpr (kHighBits == 0) return quants;
    return _mm256_or_si256(quants, _mm256_slli_epi16(byte_fields(block + 16, group, 0x01), 4));
  }
  static GroupScales scales(const uint8_t* block, int64_t group) {
    float scale, minimum;
    k_scale_and_min(block + 4, group, &scale, &minimum);
    const float a = float16_at(block) * scale;
    return {a, a, -(float16_at(block + 2) * minimum)};
  }
};
using Q4_K = KQuant<0>;
using Q5_K = KQuant<1>;

struct Q6_K {
  static constexpr int64_t kValues = kSuperBlockValues, kBytes = 210;
  static constexpr bool kSigned = true;
  static constexpr const char* kName = "Q6_K";
  static __m256i quants(const uint8_t* block, int64_t group) {
    const Q6KGroup where(group);
    const __m256i low = byte_fields(block + where.nibble_offset, where.nibble_shift, 0x0F);
    const __m256i high = byte_fields(block + where.high_offset, where.high_shift, 0x03);
    return _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)), _mm256_set1_epi8(32));
  }
  static GroupScales scales(const uint8_t* block, int64_t group) {
    const float d = float16_at(block + kQ6KScale);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + kQ6KScales + 2 * group);
    return {d * scales[0], d * scales[1], 0.f};
  }
};

inline float horizontal_sum(__m256 v) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

// The float32 path's vectors: 16 floats where the CPU has AVX-512 (the extension is built for the machine
// that runs it), else 8. A group of 32 weights fills kGroupVectors of them. Only the width differs: each
// weight and each product is computed the same way, and the sums in another order.
#ifdef __AVX512F__
using Floats = __m512;
using Int32s = __m512i;
constexpr int kLanes = 16;
inline Floats load_floats(const float* values) { return _mm512_loadu_ps(values); }
inline void store_floats(float* values, Floats v) { _mm512_storeu_ps(values, v); }
inline Floats broadcast(float value) { return _mm512_set1_ps(value); }
inline Floats zero_floats() { return _mm512_setzero_ps(); }
inline Floats add(Floats a, Floats b) { return _mm512_add_ps(a, b); }
inline Floats multiply(Floats a, Floats b) { return _mm512_mul_ps(a, b); }
inline Floats multiply_add(Floats a, Floats b, Floats c) { return _mm512_fmadd_ps(a, b, c); }
inline Floats to_floats(Int32s v) { return _mm512_cvtepi32_ps(v); }
inline float lane_sum(Floats v) { return _mm512_reduce_add_ps(v); }
// kLanes bytes (of a register, or at an address) as int32, signed or not.
inline Int32s widen_bytes(__m128i bytes, bool is_signed) {
  return is_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
}
inline Int32s widen_bytes_at(const uint8_t* bytes, bool is_signed) {
  return widen_bytes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)), is_signed);
}
inline Int32s low_nibbles(Int32s v) { return _mm512_and_si512(v, _mm512_set1_epi32(0x0F)); }
inline Int32s high_nibbles(Int32s v) { return _mm512_srli_epi32(v, 4); }
#else
using Floats = __m256;
using Int32s = __m256i;
constexpr int kLanes = 8;
inline Floats load_floats(const float* values) { return _mm256_loadu_ps(values); }
inline void store_floats(float* values, Floats v) { _mm256_storeu_ps(values, v); }
inline Floats broadcast(float value) { return _mm256_set1_ps(value); }
inline Floats zero_floats() { return _mm256_setzero_ps(); }
inline Floats add(Floats a, Floats b) { return _mm256_add_ps(a, b); }
inline Floats multiply(Floats a, Floats b) { return _mm256_mul_ps(a, b); }
inline Floats multiply_add(Floats a, Floats b, Floats c) { return _mm256_fmadd_ps(a, b, c); }
inline Floats to_floats(Int32s v) { return _mm256_cvtepi32_ps(v); }
inline float lane_sum(Floats v) { return horizontal_sum(v); }
// kLanes bytes (the first of a register, or at an address) as int32, signed or not.
inline Int32s widen_bytes(__m128i bytes, bool is_signed) {
  return is_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
}
inline Int32s widen_bytes_at(const uint8_t* bytes, bool is_signed) {
  return widen_bytes(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)), is_signed);
}
inline Int32s low_nibbles(Int32s v) { return _mm256_and_si256(v, _mm256_set1_epi32(0x0F)); }
inline Int32s high_nibbles(Int32s v) { return _mm256_srli_epi32(v, 4); }
#endif
constexpr int kGroupVectors = kGroupValues / kLanes;

// A group's 32 quants as int32, in kGroupVectors vectors, for the float32 path. The formats whose quants
// are bytes in the block (Q4_0, Q4_1 and Q8_0) widen them straight from memory, in fewer instructions than
// from `quants`' register.
template <typename Format>
inline void int32_quants(const uint8_t* block, int64_t group, Int32s* quants) {
  const __m256i bytes = Format::quants(block, group);
  const __m128i halves[2] = {_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1)};
  for (int i = 0; i < kGroupVectors; ++i) {
    if constexpr (kGroupVectors == 2) {
      quants[i] = widen_bytes(halves[i], Format::kSigned);
    } else {
      quants[i] = widen_bytes(i % 2 ? _mm_srli_si128(halves[i / 2], 8) : halves[i / 2], Format::kSigned);
    }
  }
}

// The 32 4-bit values of 16 bytes as int32, in value order (low nibbles, then high). Widening the
// bytes before splitting them takes fewer shuffles than splitting first.
inline void nibbles_to_int32(const uint8_t* bytes, Int32s* quants) {
  constexpr int kHalf = kGroupVectors / 2;
  for (int i = 0; i < kHalf; ++i) {
    const Int32s widened = widen_bytes_at(bytes + kLanes * i, false);
    quants[i] = low_nibbles(widened);
    quants[i + kHalf] = high_nibbles(widened);
  }
}

template <>
inline void int32_quants<Q4_0>(const uint8_t* block, int64_t, Int32s* quants) {
  nibbles_to_int32(block + 2, quants);
}

template <>
inline void int32_quants<Q4_1>(const uint8_t* block, int64_t, Int32s* quants) {
  nibbles_to_int32(block + 4, quants);
}

template <>
inline void int32_quants<Q8_0>(const uint8_t* block, int64_t, Int32s* quants) {
  for (int i = 0; i < kGroupVectors; ++i) {
    quants[i] = widen_bytes_at(block + 2 + kLanes * i, true);
  }
}

// Whether a group's two halves of 16 weights have their own a (Q6_K); the other formats broadcast one.
template <typename Format>
constexpr bool kScalePerHalf = false;
template <>
constexpr bool kScalePerHalf<Q6_K> = true;

// A group's a as 8 lanes of float32: lanes 0-3 go with weights 0-15 in the integer products, 4-7 with 16-31.
template <typename Format>
inline __m256 a_lanes(const GroupScales& scales) {
  if constexpr (kScalePerHalf<Format>) return _mm256_setr_m128(_mm_set1_ps(scales.a_first), _mm_set1_ps(scales.a_second));
  return _mm256_set1_ps(scales.a_first);
}

// The 32 float32 weights of a group, in kGroupVectors vectors. a * q (+ b) rounds once, as
// blocks.dequantize does; the signed formats multiply only, which keeps the sign of a zero product.
template <typename Format>
inline void decode(const uint8_t* block, int64_t group, Floats* weights) {
  const GroupScales scales = Format::scales(block, group);
  Int32s quants[kGroupVectors];
  int32_quants<Format>(block, group, quants);
  for (int i = 0; i < kGroupVectors; ++i) {
    const Floats a = broadcast(i < kGroupVectors / 2 ? scales.a_first : scales.a_second);
    const Floats values = to_floats(quants[i]);
    weights[i] = Format::kSigned ? multiply(a, values) : multiply_add(a, values, broadcast(scales.b));
  }
}

#else
// Each format decodes group `group` of a block (always 0 for 32-weight blocks) into its 32 float32 weights.
struct Q4_0 {
  static constexpr int64_t kValues = 32, kBytes = 18;
  static constexpr const char* kName = "Q4_0";
  static void decode(const uint8_t* block, int64_t, float* weights) {
    const float d = float16_at(block);
    for (int j = 0; j < 16; ++j) {
      weights[j] = d * static_cast<float>((block[2 + j] & 0x0F) - 8);
      weights[j + 16] = d * static_cast<float>((block[2 + j] >> 4) - 8);
    }
  }
};

struct Q4_1 {
  static constexpr int64_t kValues = 32, kBytes = 20;
  static constexpr const char* kName = "Q4_1";
  static void decode(const uint8_t* block, int64_t, float* weights) {
    const float d = float16_at(block), m = float16_at(block + 2);
    for (int j = 0; j < 16; ++j) {
      weights[j] = d * static_cast<float>(block[4 + j] & 0x0F) + m;
      weights[j + 16] = d * static_cast<float>(block[4 + j] >> 4) + m;
    }
  }
};

template <bool kMinimum>
struct FiveBit {
  static constexpr int64_t kValues = 32, kBytes = kMinimum ? 24 : 22;
  static constexpr const char* kName = kMinimum ? "Q5_1" : "Q5_0";
  static void decode(const uint8_t* block, int64_t, float* weights) {
    constexpr int64_t high_offset = kMinimum ? 4 : 2;
    uint32_t high_bits;
    std::memcpy(&high_bits, block + high_offset, sizeof(high_bits));
    const uint8_t* nibbles = block + high_offset + 4;
    const float d = float16_at(block);
    for (int j = 0; j < 32; ++j) {
      const int q = ((j < 16 ? nibbles[j] : nibbles[j - 16] >> 4) & 0x0F) | (((high_bits >> j) & 1) << 4);
      weights[j] = kMinimum ? d * static_cast<float>(q) + float16_at(block + 2) : d * static_cast<float>(q - 16);
    }
  }
};
using Q5_0 = FiveBit<false>;
using Q5_1 = FiveBit<true>;

struct Q8_0 {
  static constexpr int64_t kValues = 32, kBytes = 34;
  static constexpr const char* kName = "Q8_0";
  static void decode(const uint8_t* block, int64_t, float* weights) {
    const float d = float16_at(block);
    const int8_t* quants = reinterpret_cast<const int8_t*>(block + 2);
    for (int j = 0; j < 32; ++j) weights[j] = static_cast<float>(quants[j]) * d;
  }
};

template <int64_t kHighBits>
struct KQuant {
  static constexpr int64_t kValues = kSuperBlockValues, kBytes = kHighBits ? 176 : 144;
  static constexpr const char* kName = kHighBits ? "Q5_K" : "Q4_K";
  static void decode(const uint8_t* block, int64_t group, float* weights) {
    float scale, minimum;
    k_scale_and_min(block + 4, group, &scale, &minimum);
    const float d = float16_at(block) * scale, m = float16_at(block + 2) * minimum;
    const uint8_t* nibbles = block + 16 + 32 * kHighBits + 32 * (group / 2);
    for (int j = 0; j < 32; ++j) {
      int q = (nibbles[j] >> (4 * (group % 2))) & 0x0F;
      if constexpr (kHighBits != 0) q |= ((block[16 + j] >> group) & 0x01) << 4;
      weights[j] = d * static_cast<float>(q) - m;
    }
  }
};
using Q4_K = KQuant<0>;
using Q5_K = KQuant<1>;

struct Q6_K {
  static constexpr int64_t kValues = kSuperBlockValues, kBytes = 210;
  static constexpr const char* kName = "Q6_K";
  static void decode(const uint8_t* block, int64_t group, float* weights) {
    const Q6KGroup where(group);
    const float d = float16_at(block + kQ6KScale);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + kQ6KScales + 2 * group);
    for (int j = 0; j < 32; ++j) {
      const int low = (block[where.nibble_offset + j] >> where.nibble_shift) & 0x0F;
      const int high = (block[where.high_offset + j] >> where.high_shift) & 0x03;
      weights[j] = (d * scales[j / 16]) * static_cast<float>((low | (high << 4)) - 32);
    }
  }
};
#endif

// x rounded to int8 in groups of 32 values, each with its own scale, as llama.cpp rounds activations
// for its integer dot products (its Q8_1 blocks): x[j] ~ scale * quants[j] with scale = max |x| / 127 over
// the group, rounded to nearest (ties to even). `sums` holds scale * sum(quants) per group: what the
// formats with w = a * q + b multiply by b.
struct Int8Activations {
  int64_t groups_per_row;
  std::vector<int8_t> quants;
  std::vector<float> scales, sums;

  Int8Activations(const float* x, int64_t M, int64_t K)
      : groups_per_row(K / kGroupValues), quants(M * K), scales(M * groups_per_row), sums(M * groups_per_row) {
    for (int64_t group = 0; group < M * groups_per_row; ++group) {
      const float* values = x + group * kGroupValues;
      float largest = 0.f;
#pragma omp simd reduction(max : largest)
      for (int64_t j = 0; j < kGroupValues; ++j) largest = std::max(largest, std::fabs(values[j]));
      const float inverse = largest > 0.f ? 127.f / largest : 0.f;
      int total = 0;
#pragma omp simd reduction(+ : total)
      for (int64_t j = 0; j < kGroupValues; ++j) {
        const int quant = static_cast<int>(std::nearbyint(values[j] * inverse));
        quants[group * kGroupValues + j] = static_cast<int8_t>(quant);
        total += quant;
      }
      scales[group] = largest / 127.f;
      sums[group] = scales[group] * static_cast<float>(total);
    }
  }

  // scale * quant for every value: the x that the integer products multiply by, as float32.
  std::vector<float> values() const {
    std::vector<float> rounded(quants.size());
    for (size_t j = 0; j < rounded.size(); ++j) rounded[j] = scales[j / kGroupValues] * static_cast<float>(quants[j]);
    return rounded;
  }
};

#ifdef GGUF_LINEAR_AVX2
constexpr int64_t kTileRows = 4;

// add_group(block, g, parity) for every group g of every block of a row of K weights, parity alternating
// between consecutive groups (so that a caller can alternate accumulators). The group loop is unrolled, so
// what the groups of a block share (the K-quants' float16 factors, which scale goes with which group) is
// worked out once per block, at compile time where it can be.
template <int64_t kGroups, typename AddGroup>
inline void each_group(int64_t K, AddGroup add_group) {
  const int64_t num_blocks = K / (kGroups * kGroupValues);
  if constexpr (kGroups == 1) {
    int64_t block = 0;
    for (; block + 1 < num_blocks; block += 2) {
      add_group(block, 0, 0);
      add_group(block + 1, 0, 1);
    }
    if (block < num_blocks) add_group(block, 0, 0);
  } else {
    for (int64_t block = 0; block < num_blocks; ++block) {
#pragma GCC unroll 8
      for (int64_t g = 0; g < kGroups; ++g) add_group(block, g, g % 2);
    }
  }
}

// sums[r] = x[r] . w for kRows rows of x (row stride K), the weights read in blocks of kGroups groups of
// 32: load_weights(block, g, w) puts group g of block `block` in w[0..kGroupVectors).
// Each FMA waits ~4 cycles for its accumulator and two can start per cycle, so about 8 independent
// accumulators keep the FMA units busy: 4 per row for 1-2 rows, 2 per row for 3-4 (the vectors of two
// consecutive groups take turns over them).
template <int kRows, int64_t kGroups, typename LoadWeights>
inline void dot_tile(const float* x, int64_t K, LoadWeights load_weights, float* sums) {
  constexpr int kChains = kRows <= 2 ? 4 : 2;
  Floats accumulators[kRows][kChains];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kChains; ++c) accumulators[r][c] = zero_floats();
  }
  each_group<kGroups>(K, [&](int64_t block, int64_t g, int parity) {
    Floats weights[kGroupVectors];
    load_weights(block, g, weights);
    for (int r = 0; r < kRows; ++r) {
      const float* x_group = x + r * K + (block * kGroups + g) * kGroupValues;
      for (int i = 0; i < kGroupVectors; ++i) {
        Floats& accumulator = accumulators[r][(parity * kGroupVectors + i) % kChains];
        accumulator = multiply_add(load_floats(x_group + kLanes * i), weights[i], accumulator);
      }
    }
  });
  for (int r = 0; r < kRows; ++r) {
    Floats total = accumulators[r][0];
    for (int c = 1; c < kChains; ++c) total = add(total, accumulators[r][c]);
    sums[r] = lane_sum(total);
  }
}

template <int64_t kGroups, typename LoadWeights>
void dot_all_rows(const float* x, int64_t M, int64_t K, LoadWeights load_weights, float* sums) {
  for (int64_t first = 0; first < M; first += kTileRows) {
    const float* x_tile = x + first * K;
    switch (std::min(kTileRows, M - first)) {
      case 1: dot_tile<1, kGroups>(x_tile, K, load_weights, sums + first); break;
      case 2: dot_tile<2, kGroups>(x_tile, K, load_weights, sums + first); break;
      case 3: dot_tile<3, kGroups>(x_tile, K, load_weights, sums + first); break;
      default: dot_tile<4, kGroups>(x_tile, K, load_weights, sums + first); break;
    }
  }
}

// The K weights of one row, decoded into `decoded`.
template <typename Format>
void decode_row(const uint8_t* row, int64_t K, float* decoded) {
  constexpr int64_t kGroups = Format::kValues / kGroupValues;
  Floats weights[kGroupVectors];
  for (int64_t block = 0; block < K / Format::kValues; ++block) {
    for (int64_t g = 0; g < kGroups; ++g) {
      decode<Format>(row + block * Format::kBytes, g, weights);
      float* group = decoded + (block * kGroups + g) * kGroupValues;
      for (int i = 0; i < kGroupVectors; ++i) store_floats(group + kLanes * i, weights[i]);
    }
  }
}

// sums[m] = x[m] . (weight row `row`) for up to kTileRows rows of x, each group of weights decoded once into
// registers. (Larger steps go to multiply_tiles.)
template <typename Format>
void multiply_row(const float* x, const uint8_t* row, int64_t M, int64_t K, float* sums) {
  constexpr int64_t kGroups = Format::kValues / kGroupValues;
  dot_all_rows<kGroups>(x, M, K, [&](int64_t block, int64_t g, Floats* w) {
    decode<Format>(row + block * Format::kBytes, g, w);
  }, sums);
}

// Weight rows decoded together for a step of more than kTileRows rows: each vector of x then serves
// kOutputTile weight rows, and the kTileRows x kOutputTile sums stay in registers (16 of AVX-512's 32
// registers, 8 of AVX2's 16).
constexpr int64_t kOutputTile = kLanes == 16 ? 4 : 2;

// sums[r][o] = x[r] . decoded[o] for kRows rows of x (row stride K) and kOutputTile decoded weight rows (row
// stride K).
template <int kRows>
inline void dot_block(const float* x, int64_t K, const float* decoded, float (*sums)[kOutputTile]) {
  Floats accumulators[kRows][kOutputTile];
  for (int r = 0; r < kRows; ++r) {
    for (int o = 0; o < kOutputTile; ++o) accumulators[r][o] = zero_floats();
  }
  for (int64_t k = 0; k < K; k += kLanes) {
    Floats weights[kOutputTile];
    for (int o = 0; o < kOutputTile; ++o) weights[o] = load_floats(decoded + o * K + k);
    for (int r = 0; r < kRows; ++r) {
      const Floats values = load_floats(x + r * K + k);
      for (int o = 0; o < kOutputTile; ++o) accumulators[r][o] = multiply_add(values, weights[o], accumulators[r][o]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int o = 0; o < kOutputTile; ++o) sums[r][o] = lane_sum(accumulators[r][o]);
  }
}

// out = x @ W.T + bias for a step of more than kTileRows rows of x: each tile of kOutputTile weight rows is
// decoded once (into L1 for the default model's widths) and multiplies every tile of up to kTileRows rows of x.
// The weight tiles are split across threads.
template <typename Format>
void multiply_tiles(const float* x, const torch::Tensor& blocks, int64_t M, int64_t K, const float* bias,
                    torch::Tensor& out) {
  const int64_t N = blocks.size(0), row_bytes = blocks.size(1);
  const uint8_t* block_data = blocks.data_ptr<uint8_t>();
  float* out_data = out.data_ptr<float>();
  const int64_t num_tiles = (N + kOutputTile - 1) / kOutputTile;
  // As each_output_feature: at least 16 output features per task.
  at::parallel_for(0, num_tiles, 16 / kOutputTile, [&](int64_t begin, int64_t end) {
    // A last tile of fewer rows multiplies the previous tile's leftovers (or zeros) too, and drops those sums.
    std::vector<float> decoded(kOutputTile * K, 0.f);
    float sums[kTileRows][kOutputTile];
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t first = tile * kOutputTile, count = std::min(kOutputTile, N - first);
      for (int64_t o = 0; o < count; ++o) {
        decode_row<Format>(block_data + (first + o) * row_bytes, K, decoded.data() + o * K);
      }
      for (int64_t m = 0; m < M; m += kTileRows) {
        const int64_t rows = std::min(kTileRows, M - m);
        switch (rows) {
          case 1: dot_block<1>(x + m * K, K, decoded.data(), sums); break;
          case 2: dot_block<2>(x + m * K, K, decoded.data(), sums); break;
          case 3: dot_block<3>(x + m * K, K, decoded.data(), sums); break;
          default: dot_block<4>(x + m * K, K, decoded.data(), sums); break;
        }
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t o = 0; o < count; ++o) {
            out_data[(m + r) * N + first + o] = sums[r][o] + (bias ? bias[first + o] : 0.f);
          }
        }
      }
    }
  });
}

// Per int32 lane, the sum of 4 products of uint8 `sizes` and int8 `values` (adjacent bytes). With VNNI
// (the extension is built with it where the CPU has it) one instruction; otherwise maddubs adds pairs
// into int16, which cannot saturate here (see dot_tile_int8), and madd adds pairs of those.
inline __m256i byte_dots(__m256i sizes, __m256i values) {
#if defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), sizes, values);
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), sizes, values);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(sizes, values), _mm256_set1_epi16(1));
#endif
}

// sums[r] = x[first_row + r] . w for kRows rows of x rounded to int8, w one weight row in Format. Per group,
// the 32 byte quants of w and of x multiply in integers (byte_dots: uint8 by int8, so a signed format's
// quants give their sizes and x takes their signs; a pair of products stays within int16, as maddubs needs:
// |q| <= 31 for the unsigned formats, <= 128 for the signed ones, and |x| <= 127) into int32 lanes:
// lanes 0-3 cover weights 0-15, lanes 4-7 weights 16-31, which is where a differs in Q6_K. Then
// x . w = sum over groups of a * scale * dots + b * sums. Consecutive groups alternate between two
// accumulators (vector and scalar), so that their FMAs do not wait on each other.
template <int kRows, typename Format>
inline void dot_tile_int8(const Int8Activations& x, int64_t first_row, const uint8_t* row, int64_t K, float* sums) {
  constexpr int64_t kGroups = Format::kValues / kGroupValues;
  __m256 accumulators[kRows][2];
  float offsets[kRows][2];
  for (int r = 0; r < kRows; ++r) {
    accumulators[r][0] = accumulators[r][1] = _mm256_setzero_ps();
    offsets[r][0] = offsets[r][1] = 0.f;
  }
  auto add_group = [&](int64_t block, int64_t g, int chain) {
    const uint8_t* block_bytes = row + block * Format::kBytes;
    const __m256i quants = Format::quants(block_bytes, g);
    const GroupScales scales = Format::scales(block_bytes, g);
    const __m256i unsigned_quants = Format::kSigned ? _mm256_abs_epi8(quants) : quants;
    const __m256 a = a_lanes<Format>(scales);
    for (int r = 0; r < kRows; ++r) {
      const int64_t index = (first_row + r) * x.groups_per_row + block * kGroups + g;
      const __m256i x_quants = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.quants.data() + index * kGroupValues));
      const __m256 dots = _mm256_cvtepi32_ps(
          byte_dots(unsigned_quants, Format::kSigned ? _mm256_sign_epi8(x_quants, quants) : x_quants));
      __m256& accumulator = accumulators[r][chain];
      accumulator = _mm256_fmadd_ps(dots, _mm256_mul_ps(a, _mm256_set1_ps(x.scales[index])), accumulator);
      if constexpr (!Format::kSigned) offsets[r][chain] += scales.b * x.sums[index];
    }
  };
  each_group<kGroups>(K, add_group);
  for (int r = 0; r < kRows; ++r) {
    sums[r] = horizontal_sum(_mm256_add_ps(accumulators[r][0], accumulators[r][1])) + (offsets[r][0] + offsets[r][1]);
  }
}

// sums[m] = x[m] . (weight row `row`) for every row of x, x rounded to int8; the row's groups are decoded
// once per tile of rows.
template <typename Format>
void multiply_row_int8(const Int8Activations& x, const uint8_t* row, int64_t M, int64_t K, float* sums) {
  for (int64_t first = 0; first < M; first += kTileRows) {
    switch (std::min(kTileRows, M - first)) {
      case 1: dot_tile_int8<1, Format>(x, first, row, K, sums + first); break;
      case 2: dot_tile_int8<2, Format>(x, first, row, K, sums + first); break;
      case 3: dot_tile_int8<3, Format>(x, first, row, K, sums + first); break;
      default: dot_tile_int8<4, Format>(x, first, row, K, sums + first); break;
    }
  }
}
#else
template <typename Format>
void decode_row(const uint8_t* row, int64_t K, float* decoded) {
  constexpr int64_t kGroups = Format::kValues / kGroupValues;
  for (int64_t block = 0; block < K / Format::kValues; ++block) {
    for (int64_t g = 0; g < kGroups; ++g) {
      Format::decode(row + block * Format::kBytes, g, decoded + (block * kGroups + g) * kGroupValues);
    }
  }
}

// sums[m] = x[m] . (weight row `row`), each group of 32 weights decoded once for every row of x.
template <typename Format>
void multiply_row(const float* x, const uint8_t* row, int64_t M, int64_t K, float* sums) {
  constexpr int64_t kGroups = Format::kValues / kGroupValues;
  std::fill(sums, sums + M, 0.f);
  float weights[kGroupValues];
  for (int64_t block = 0; block < K / Format::kValues; ++block) {
    for (int64_t g = 0; g < kGroups; ++g) {
      Format::decode(row + block * Format::kBytes, g, weights);
      const int64_t offset = (block * kGroups + g) * kGroupValues;
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t j = 0; j < kGroupValues; ++j) sums[m] += x[m * K + offset + j] * weights[j];
      }
    }
  }
}
#endif

// out[m, n] = x[m] . (weight row n) + bias[n], the output features split across threads:
// multiply(row, sums) puts the products of one weight row with every row of x in sums[0..M).
template <typename Multiply>
void each_output_feature(const torch::Tensor& blocks, int64_t M, int64_t K, const float* bias, torch::Tensor& out,
                         Multiply multiply) {
  const int64_t N = blocks.size(0), row_bytes = blocks.size(1);
  const uint8_t* block_data = blocks.data_ptr<uint8_t>();
  float* out_data = out.data_ptr<float>();
  // Chunks of at least 16 output features: enough work per task that both cores of a small machine
  // share even a 64-feature projection.
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> sums(M);
    for (int64_t n = begin; n < end; ++n) {
      multiply(block_data + n * row_bytes, sums.data());
      const float offset = bias ? bias[n] : 0.f;
      for (int64_t m = 0; m < M; ++m) out_data[m * N + n] = sums[m] + offset;
    }
  });
}

template <typename Format>
void gguf_linear_kernel(const torch::Tensor& x, const torch::Tensor& blocks, const float* bias, bool int8_activations,
                        torch::Tensor& out) {
  const int64_t M = x.size(0), K = x.size(1);
  const float* x_data = x.data_ptr<float>();
  if (!int8_activations) {
#ifdef GGUF_LINEAR_AVX2
    if (M > kTileRows) {
      multiply_tiles<Format>(x_data, blocks, M, K, bias, out);
      return;
    }
#endif
    each_output_feature(blocks, M, K, bias, out, [&](const uint8_t* row, float* sums) {
      multiply_row<Format>(x_data, row, M, K, sums);
    });
    return;
  }
  const Int8Activations rounded(x_data, M, K);
#ifdef GGUF_LINEAR_AVX2
  each_output_feature(blocks, M, K, bias, out, [&](const uint8_t* row, float* sums) {
    multiply_row_int8<Format>(rounded, row, M, K, sums);
  });
#else
  // Without integer vector instructions the rounded x multiplies as floats: the same results, not faster.
  const std::vector<float> rounded_x = rounded.values();
  each_output_feature(blocks, M, K, bias, out, [&](const uint8_t* row, float* sums) {
    multiply_row<Format>(rounded_x.data(), row, M, K, sums);
  });
#endif
}

// The blocks of N rows of K weights each, in Format.
template <typename Format>
void check_blocks(const torch::Tensor& blocks, int64_t K) {
  TORCH_CHECK(blocks.device().is_cpu(), "blocks must be a CPU tensor");
  TORCH_CHECK(K > 0 && K % Format::kValues == 0, "K (", K, ") must be a positive multiple of ", Format::kValues,
              " for ", Format::kName);
  TORCH_CHECK(blocks.scalar_type() == at::kByte, "blocks must be uint8, got ", blocks.scalar_type());
  TORCH_CHECK(blocks.dim() == 2 && blocks.is_contiguous(), "blocks must be a contiguous 2-D tensor, got shape ",
              blocks.sizes());
  const int64_t num_blocks = K / Format::kValues, row_bytes = num_blocks * Format::kBytes;
  TORCH_CHECK(blocks.size(1) == row_bytes, "blocks rows must be ", row_bytes, " bytes for K = ", K, " (",
              num_blocks, " ", Format::kName, " blocks of ", Format::kBytes, "), got ", blocks.size(1));
}

template <typename Format>
torch::Tensor gguf_linear_of(const torch::Tensor& input, const torch::Tensor& blocks,
                             const std::optional<torch::Tensor>& bias, bool int8_activations) {
  TORCH_CHECK(input.device().is_cpu(), "x must be a CPU tensor");
  TORCH_CHECK(input.scalar_type() == at::kFloat, "x must be float32, got ", input.scalar_type());
  TORCH_CHECK(input.dim() >= 1, "x must have a last dimension of K values");
  // [..., K] -> [M, K], copied only when its rows are not contiguous already. (A decode step's plain 2-D
  // input skips even the reshape: this runs for every projection of every layer.)
  const bool plain = input.dim() == 2 && input.is_contiguous();
  const torch::Tensor x = plain ? input : input.reshape({-1, input.size(-1)}).contiguous();
  check_blocks<Format>(blocks, x.size(1));
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kFloat && bias->is_contiguous(),
                "bias must be a contiguous float32 CPU tensor");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == blocks.size(0), "bias must have shape [N] = [", blocks.size(0),
                "], got ", bias->sizes());
    bias_data = bias->data_ptr<float>();
  }

  torch::Tensor out = torch::empty({x.size(0), blocks.size(0)}, x.options());
  gguf_linear_kernel<Format>(x, blocks, bias_data, int8_activations, out);
  if (plain) return out;
  std::vector<int64_t> output_shape = input.sizes().vec();
  output_shape.back() = blocks.size(0);
  return out.view(output_shape);
}

// W as float32 [N, K], bit-identical to blocks.dequantize's: what a step too large for the blocks multiplies.
template <typename Format>
torch::Tensor gguf_dequantize_of(const torch::Tensor& blocks, int64_t K) {
  check_blocks<Format>(blocks, K);
  const int64_t N = blocks.size(0), row_bytes = blocks.size(1);
  torch::Tensor out = torch::empty({N, K}, torch::dtype(torch::kFloat32));
  const uint8_t* block_data = blocks.data_ptr<uint8_t>();
  float* out_data = out.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) decode_row<Format>(block_data + n * row_bytes, K, out_data + n * K);
  });
  return out;
}

// visit(Format{}) for the format of ggml type id quant_type.
template <typename Visit>
torch::Tensor with_format(int64_t quant_type, Visit visit) {
  switch (quant_type) {
    case 2: return visit(Q4_0{});
    case 3: return visit(Q4_1{});
    case 6: return visit(Q5_0{});
    case 7: return visit(Q5_1{});
    case 8: return visit(Q8_0{});
    case 12: return visit(Q4_K{});
    case 13: return visit(Q5_K{});
    case 14: return visit(Q6_K{});
  }
  TORCH_CHECK(false, "unsupported ggml quant type ", quant_type,
              "; supported: 2 (Q4_0), 3 (Q4_1), 6 (Q5_0), 7 (Q5_1), 8 (Q8_0), 12 (Q4_K), 13 (Q5_K), 14 (Q6_K)");
}

}  // namespace

// x: float32 [..., K], blocks: uint8 [N, (K / block values) * block bytes], bias: float32 [N] -> float32 [..., N].
// quant_type is the ggml type id; int8_activations rounds x to int8 in groups of 32 (Int8Activations) and
// multiplies in integers.
torch::Tensor gguf_linear(torch::Tensor x, torch::Tensor blocks, int64_t quant_type, std::optional<torch::Tensor> bias,
                          bool int8_activations) {
  return with_format(quant_type,
                     [&](auto format) { return gguf_linear_of<decltype(format)>(x, blocks, bias, int8_activations); });
}

// blocks: uint8 [N, (K / block values) * block bytes] -> float32 [N, K].
torch::Tensor gguf_dequantize(torch::Tensor blocks, int64_t quant_type, int64_t in_features) {
  return with_format(quant_type, [&](auto format) { return gguf_dequantize_of<decltype(format)>(blocks, in_features); });
}

// GGUFLinear's forward: gguf_linear, or for a step of more than max_block_rows rows (None: no limit), which is
// compute-bound, a dense matmul with the weight dequantized for the call.
torch::Tensor linear(torch::Tensor x, torch::Tensor blocks, int64_t quant_type, std::optional<torch::Tensor> bias,
                     bool int8_activations, std::optional<int64_t> max_block_rows) {
  const int64_t K = x.size(-1);
  if (max_block_rows.has_value() && x.numel() > *max_block_rows * K) {
    return at::linear(x, gguf_dequantize(blocks, quant_type, K), bias);
  }
  return gguf_linear(x, blocks, quant_type, bias, int8_activations);
}

// How many floats the float32 path's vectors hold as built here: 16 (AVX-512), 8 (AVX2) or 1 (scalar code).
int64_t vector_floats() {
#ifdef GGUF_LINEAR_AVX2
  return kLanes;
#else
  return 1;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("gguf_linear", &gguf_linear,
             "x @ W.T (+ bias) with W in ggml Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K / Q6_K blocks (CPU)",
             pybind11::arg("x"), pybind11::arg("blocks"), pybind11::arg("quant_type"), pybind11::arg("bias") = pybind11::none(),
             pybind11::arg("int8_activations") = false);
  module.def("linear", &linear, "GGUFLinear's forward: gguf_linear, or a dense matmul past max_block_rows rows",
             pybind11::arg("x"), pybind11::arg("blocks"), pybind11::arg("quant_type"), pybind11::arg("bias"),
             pybind11::arg("int8_activations"), pybind11::arg("max_block_rows"));
  module.def("vector_floats", &vector_floats, "floats per vector of the float32 path as built (16, 8 or 1)");
  module.def("gguf_dequantize", &gguf_dequantize, "W as float32 [N, K] from its ggml blocks (CPU)",
             pybind11::arg("blocks"), pybind11::arg("quant_type"), pybind11::arg("in_features"));
}

// The layer's forward as a torch operator, TORCH_EXTENSION_NAME::linear, for the decoder program.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, library) {
  library.def("linear(Tensor x, Tensor blocks, int quant_type, Tensor? bias, bool int8_activations, "
              "int? max_block_rows) -> Tensor",
              &linear);
}
