// im2col and col2im share one traversal: for each tap (c, r, s) and output row p, the output columns q whose
// input column falls inside the image form one contiguous range (valid_columns); outside it the column matrix
// holds zeros (padding). Computing the range once per tap keeps the inner loops branch-free, so they vectorise
// for stride 1. Index arithmetic rather than shifted pointers: the input offset may be negative (left padding).
#include "kernels/im2col.hpp"
#include "kernels/avx512.hpp"
#include "kernels/vector_clones.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace convgemm::kernels {
namespace {

// Smallest q >= 0 with q*stride + offset >= target, clamped to [0, limit].
int64_t first_output_at_or_past(int64_t target, int64_t offset, int64_t stride, int64_t limit) {
  const int64_t distance = target - offset;
  if (distance <= 0) return 0;
  return std::min(limit, (distance + stride - 1) / stride);
}

}  // namespace

ValidColumns valid_columns(const ImageGeometry& g, int64_t s) {
  const int64_t offset = s * g.dilation_width - g.pad_left;
  const int64_t first = first_output_at_or_past(0, offset, g.stride_width, g.output_width);
  const int64_t last = std::max(first, first_output_at_or_past(g.width, offset, g.stride_width, g.output_width));
  return {first, last, offset};
}

namespace {

// Calls row(col_row, c, r, p, valid, q_from, q_to, col_column) for every tap and every output row p that the pixel
// range [pixel_begin, pixel_end) touches, where valid is the tap's valid_columns (computed once per tap: it
// divides), [q_from, q_to) is the part of row p inside the range and col_column the column of (p, q_from) in the
// tile. A tap that reads inside the image on every one of those rows, at horizontal stride 1 (every tap of an
// unpadded stride-1 convolution), goes to span(col_row, input_start, p_first, p_last) instead: each of its rows is a
// plain span of the input, starting at input_start(p) + q_from, with no bounds to check.
template <class RowFunction, class SpanFunction>
CONVGEMM_CLONE_INLINE inline void for_each_tap_row(const ImageGeometry& g, int64_t pixel_begin, int64_t pixel_end,
                                                   RowFunction&& row, SpanFunction&& span) {
  const int64_t Q = g.output_width;
  const int64_t p_first = pixel_begin / Q;
  const int64_t p_last = (pixel_end - 1) / Q;
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t r = 0; r < g.kernel_height; ++r) {
      // Input rows grow with p, so the first and last rows being inside puts every row between inside.
      const bool rows_inside = input_row(g, p_first, r) >= 0 && input_row(g, p_last, r) >= 0;
      for (int64_t s = 0; s < g.kernel_width; ++s) {
        const int64_t col_row = (c * g.kernel_height + r) * g.kernel_width + s;
        const ValidColumns valid = valid_columns(g, s);
        if (rows_inside && g.stride_width == 1 && valid.first == 0 && valid.last == Q) {
          span(
              col_row,
              [&](int64_t p)
                  CONVGEMM_CLONE_INLINE { return (c * g.height + input_row(g, p, r)) * g.width + valid.input_offset; },
              p_first, p_last);
          continue;
        }
        for (int64_t p = p_first; p <= p_last; ++p) {
          const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
          const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
          row(col_row, c, r, p, valid, q_from, q_to, p * Q + q_from - pixel_begin);
        }
      }
    }
  }
}

// Output rows are short (11 pixels in a LeNet's second layer), so a library memcpy or fill costs more in its
// call than in its copying: these stay inline, and copy_floats moves blocks of 8 floats with fixed-size copies
// (one vector move each), the last block shifted back to end at the row's end rather than finishing element by
// element.
CONVGEMM_CLONE_INLINE inline void copy_floats(float* __restrict dst, const float* __restrict src, int64_t count) {
  constexpr int64_t block = 8;
  if (count < block) {
    for (int64_t i = 0; i < count; ++i) dst[i] = src[i];
    return;
  }
  for (int64_t i = 0; i + block < count; i += block) std::memcpy(dst + i, src + i, block * sizeof(float));
  std::memcpy(dst + count - block, src + count - block, block * sizeof(float));
}
CONVGEMM_CLONE_INLINE inline void add_floats(float* __restrict dst, const float* __restrict src, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] += src[i];
}
CONVGEMM_CLONE_INLINE inline void zero_floats(float* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = 0.0f;
}

CONVGEMM_VECTOR_CLONES
void im2col_cloned(const ImageGeometry& g, const float* image, int64_t pixel_begin, int64_t pixel_end, float* col,
                   int64_t col_stride) {
  const int64_t stride = g.stride_width;
  for_each_tap_row(
      g, pixel_begin, pixel_end,
      [&](int64_t col_row, int64_t c, int64_t r, int64_t p, const ValidColumns& valid, int64_t q_from, int64_t q_to,
          int64_t col_column) CONVGEMM_CLONE_INLINE {
        float* dst = col + col_row * col_stride + col_column;  // dst[q - q_from] is pixel (p, q)
        const int64_t h = input_row(g, p, r);
        if (h < 0) {
          zero_floats(dst, q_to - q_from);
          return;
        }
        const int64_t row_start = (c * g.height + h) * g.width + valid.input_offset;
        if (stride == 1 && valid.first <= q_from && q_to <= valid.last) {  // no padding in the row
          copy_floats(dst, image + row_start + q_from, q_to - q_from);
          return;
        }
        const int64_t first = std::clamp(valid.first, q_from, q_to);
        const int64_t last = std::clamp(valid.last, first, q_to);
        zero_floats(dst, first - q_from);
        if (stride == 1) {
          copy_floats(dst + (first - q_from), image + row_start + first, last - first);
        } else {
          for (int64_t q = first; q < last; ++q) dst[q - q_from] = image[row_start + q * stride];
        }
        zero_floats(dst + (last - q_from), q_to - last);
      },
      [&](int64_t col_row, const auto& input_start, int64_t p_first, int64_t p_last) CONVGEMM_CLONE_INLINE {
        const int64_t Q = g.output_width;
        for (int64_t p = p_first; p <= p_last; ++p) {
          const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
          const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
          copy_floats(col + col_row * col_stride + p * Q + q_from - pixel_begin, image + input_start(p) + q_from,
                      q_to - q_from);
        }
      });
}

CONVGEMM_VECTOR_CLONES
void col2im_accumulate_cloned(const ImageGeometry& g, const float* col, int64_t col_stride, int64_t pixel_begin,
                              int64_t pixel_end, float* image) {
  const int64_t stride = g.stride_width;
  for_each_tap_row(
      g, pixel_begin, pixel_end,
      [&](int64_t col_row, int64_t c, int64_t r, int64_t p, const ValidColumns& valid, int64_t q_from, int64_t q_to,
          int64_t col_column) CONVGEMM_CLONE_INLINE {
        const int64_t h = input_row(g, p, r);
        if (h < 0) return;                                           // the tap read padding: its gradient goes nowhere
        const float* src = col + col_row * col_stride + col_column;  // src[q - q_from] is (p, q)
        const int64_t row_start = (c * g.height + h) * g.width + valid.input_offset;
        if (stride == 1 && valid.first <= q_from && q_to <= valid.last) {  // no padding in the row
          add_floats(image + row_start + q_from, src, q_to - q_from);
          return;
        }
        const int64_t first = std::clamp(valid.first, q_from, q_to);
        const int64_t last = std::clamp(valid.last, first, q_to);
        if (first == last) return;
        if (stride == 1) {
          add_floats(image + row_start + first, src + (first - q_from), last - first);
        } else {
          for (int64_t q = first; q < last; ++q) image[row_start + q * stride] += src[q - q_from];
        }
      },
      [&](int64_t col_row, const auto& input_start, int64_t p_first, int64_t p_last) CONVGEMM_CLONE_INLINE {
        const int64_t Q = g.output_width;
        for (int64_t p = p_first; p <= p_last; ++p) {
          const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
          const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
          add_floats(image + input_start(p) + q_from, col + col_row * col_stride + p * Q + q_from - pixel_begin,
                     q_to - q_from);
        }
      });
}

#ifdef CONVGEMM_HAVE_AVX512
// The lanes of the 16 pixels from q0 that are in the row part [.., q_to) and read inside the image, [first, last).
CONVGEMM_AVX512 CONVGEMM_CLONE_INLINE inline __mmask16 inside_lanes(int64_t q0, int64_t q_to, int64_t first,
                                                                    int64_t last) {
  return first_lanes(q_to - q0) & first_lanes(last - q0) & static_cast<__mmask16>(~first_lanes(first - q0));
}

// Bits 0..7 of x moved to bits 0, 2, .., 14: lane j of a stride-2 row reads element 2j of its 32.
constexpr __mmask16 spread_to_even_bits(unsigned x) {
  x &= 0xFF;
  x = (x | (x << 4)) & 0x0F0F;
  x = (x | (x << 2)) & 0x3333;
  x = (x | (x << 1)) & 0x5555;
  return static_cast<__mmask16>(x);
}

// The load masks that read 16 pixels of a row at horizontal stride 1 or 2, of which the lanes `inside`: one load
// (stride 1), or two loads of 16 floats each whose even elements are the pixels (stride 2).
struct PixelMasks {
  __mmask16 low, high;
};
template <int stride>
CONVGEMM_AVX512 CONVGEMM_CLONE_INLINE inline PixelMasks pixel_masks(__mmask16 inside) {
  static_assert(stride == 1 || stride == 2);
  if constexpr (stride == 1) return {inside, 0};
  return {spread_to_even_bits(inside), spread_to_even_bits(inside >> 8)};
}

// Pixels q0 .. q0 + 15 of a row, row[q * stride] with row pointing at pixel q0; lanes outside the masks are 0 and
// not read (a masked load does not touch them, so the row may start before the image).
template <int stride>
CONVGEMM_AVX512 CONVGEMM_CLONE_INLINE inline __m512 load_pixels(const float* row, PixelMasks masks) {
  if constexpr (stride == 1) return _mm512_maskz_loadu_ps(masks.low, row);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(masks.low, row), even,
                                _mm512_maskz_loadu_ps(masks.high, row + 16));
}

// dst[q - q_from] for q in [q_from, q_to) = image_row[q * stride] where q is in [first, last), 0 elsewhere: per 16
// pixels one masked store after load_pixels. This replaces the generic rows' zero/copy/zero split, which cost more
// than the copy on a LeNet's 11-28 pixel rows, and their scalar loop at stride 2 (a ResNet stem).
template <int stride>
CONVGEMM_AVX512 CONVGEMM_CLONE_INLINE inline void copy_row_padded(float* dst, const float* image_row, int64_t q_from,
                                                                  int64_t q_to, int64_t first, int64_t last) {
  for (int64_t q0 = q_from; q0 < q_to; q0 += 16) {
    const __m512 pixels =
        load_pixels<stride>(image_row + stride * q0, pixel_masks<stride>(inside_lanes(q0, q_to, first, last)));
    _mm512_mask_storeu_ps(dst + (q0 - q_from), first_lanes(q_to - q0), pixels);
  }
}

// Whole rows of up to max_row_chunks vectors (a LeNet's 11-28 pixels, a ResNet's 56) take the whole-row path below.
constexpr int64_t max_row_chunks = max_whole_row_width / 16;
// Wider rows up to this many vectors (256 pixels) load whole rows with masks worked out once per call.
constexpr int64_t max_tap_chunks = 16;
// Kernels up to this wide have those masks worked out once per kernel column; wider ones take copy_row_padded.
constexpr int64_t max_masked_kernel_width = 16;

// What a whole output row of `chunks` vectors needs for each kernel column s: the output columns it reads inside
// the image, and the load and store masks of each vector. They depend on s alone, so im2col works them out once per
// call rather than once per tap: with two divisions and a loop over the row's vectors, that setup cost as much as
// the copy itself on the 3-row tiles of a 224-pixel image (measured: im2col of vgg_1_2 at 25-40 GB/s).
template <int stride, int chunks>
struct RowMasks {
  ValidColumns valid[max_masked_kernel_width];
  __mmask16 inside[max_masked_kernel_width][chunks];  // the lanes that read inside the image
  PixelMasks load[max_masked_kernel_width][chunks];
  __mmask16 store[chunks];

  CONVGEMM_AVX512 RowMasks(const ImageGeometry& g, int64_t used_chunks) {
    for (int64_t j = 0; j < used_chunks; ++j) store[j] = first_lanes(g.output_width - 16 * j);
    for (int64_t s = 0; s < g.kernel_width; ++s) {
      valid[s] = valid_columns(g, s);
      for (int64_t j = 0; j < used_chunks; ++j) {
        inside[s][j] = inside_lanes(16 * j, g.output_width, valid[s].first, valid[s].last);
        load[s][j] = pixel_masks<stride>(inside[s][j]);
      }
    }
  }
};

// Rows [p_from, p_to) of `chunks` vectors each, Q floats apart, set to 0 through the store masks.
template <int chunks>
CONVGEMM_AVX512 CONVGEMM_CLONE_INLINE inline void zero_rows(float* rows, int64_t p_from, int64_t p_to, int64_t Q,
                                                            const __mmask16 (&store)[chunks]) {
  for (int64_t p = p_from; p < p_to; ++p) {
#pragma GCC unroll 4
    for (int j = 0; j < chunks; ++j) _mm512_mask_storeu_ps(rows + p * Q + 16 * j, store[j], _mm512_setzero_ps());
  }
}

// im2col over whole output rows of at most max_row_chunks vectors, the common case of small images: each row costs
// load_pixels and one masked store per vector, no per-row arithmetic.
template <int stride, int chunks>
CONVGEMM_AVX512 void im2col_whole_rows_avx512(const ImageGeometry& g, const float* image, int64_t p_begin,
                                              int64_t p_end, float* col, int64_t col_stride) {
  const int64_t Q = g.output_width;
  // A local, not g's fields: the stores may alias g, so a field read in the loop was reloaded after every store.
  const int64_t row_step = g.stride_height * g.width;
  const RowMasks<stride, chunks> masks(g, chunks);
  // Copied out of the struct into locals, which stay in mask registers: the stores could alias the struct, so its
  // masks were reloaded for every vector (lenet1's im2col 20 % slower).
  __mmask16 store[chunks];
#pragma GCC unroll 4
  for (int j = 0; j < chunks; ++j) store[j] = masks.store[j];
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t r = 0; r < g.kernel_height; ++r) {
      // Output rows whose input row is inside the image: [p_inside, p_outside); padding rows around them.
      const int64_t offset = r * g.dilation_height - g.pad_top;
      const int64_t p_inside =
          std::clamp(first_output_at_or_past(0, offset, g.stride_height, g.output_height), p_begin, p_end);
      const int64_t p_outside =
          std::clamp(first_output_at_or_past(g.height, offset, g.stride_height, g.output_height), p_inside, p_end);
      for (int64_t s = 0; s < g.kernel_width; ++s) {
        PixelMasks load[chunks];
#pragma GCC unroll 4
        for (int j = 0; j < chunks; ++j) load[j] = masks.load[s][j];
        float* dst = col + ((c * g.kernel_height + r) * g.kernel_width + s) * col_stride - p_begin * Q;
        zero_rows(dst, p_begin, p_inside, Q, store);
        const float* row =
            p_inside == p_outside
                ? image  // no row inside the image: row is not read
                : image + (c * g.height + p_inside * g.stride_height + offset) * g.width + masks.valid[s].input_offset;
        for (int64_t p = p_inside; p < p_outside; ++p, row += row_step) {
#pragma GCC unroll 4
          for (int j = 0; j < chunks; ++j) {
            _mm512_mask_storeu_ps(dst + p * Q + 16 * j, store[j], load_pixels<stride>(row + stride * 16 * j, load[j]));
          }
        }
        zero_rows(dst, p_outside, p_end, Q, store);
      }
    }
  }
}

// Asks for the input rows that the next tile of output rows (the next pixel range, of as many rows as this one)
// will read for the first time into L2. A 224-pixel image of 64 channels (12.8 MB) does not fit in L2, and its
// 64 row streams, one per channel, are more than the hardware prefetchers follow: im2col waited on them.
CONVGEMM_AVX512 void prefetch_next_rows(const ImageGeometry& g, const float* image, int64_t p_first, int64_t p_last) {
  const int64_t next_last = std::min(g.output_height - 1, 2 * p_last - p_first + 1);
  const int64_t h_begin = std::max<int64_t>(0, last_input_row(g, p_last) + 1);
  const int64_t h_end = std::min(g.height, last_input_row(g, next_last) + 1);
  if (h_begin >= h_end) return;
  for (int64_t c = 0; c < g.channels; ++c) {
    const char* rows = reinterpret_cast<const char*>(image + (c * g.height + h_begin) * g.width);
    for (int64_t byte = 0; byte < (h_end - h_begin) * g.width * int64_t{sizeof(float)}; byte += 64) {
      _mm_prefetch(rows + byte, _MM_HINT_T1);
    }
  }
}

// The image rows output rows [p_first, p_last] read, clamped to the image: [first, last], empty when last < first.
struct ImageRows {
  int64_t first, last;
};
ImageRows rows_read(const ImageGeometry& g, int64_t p_first, int64_t p_last) {
  return {std::max<int64_t>(0, first_input_row(g, p_first)), std::min(g.height - 1, last_input_row(g, p_last))};
}

// im2col at horizontal stride 2 for rows of up to max_tap_chunks vectors (the ResNet stem's 112 pixels): every input
// row is split once into its even and odd elements (zero outside the image), after which each kernel column's row of
// the column matrix is a contiguous window of one of the two: input column 2q + o, o = s * dilation - pad_left, is
// even[q + o / 2] for even o and odd[q + (o - 1) / 2] for odd o. An output vector is then one unaligned load from
// L1 and one masked store, instead of load_pixels' two masked loads and a permutation per kernel column. The loops
// run c, p, r, s so that each input row is split once per channel and tile, not once per kernel row that reads it
// (consecutive output rows at vertical stride 2 share 5 of a 7-row kernel's input rows); the split rows live in a
// ring of max_split_ring rows on the stack, indexed by h mod max_split_ring: the rows of one output row span at
// most that many, so a row is overwritten only once no later output row reads it. Measured on r50_c1 (3 x 224 x
// 224, 7 x 7, pad 3): 2.29 -> 1.22 ns per stored vector (one thread, /tmp harness; splitting per kernel row
// instead: 1.58), its forward +13 % and weight gradient +10 % (2 threads, medians of 5 alternating runs of the old
// and the new library), the column matrix the same bits. Rows that do not start on a vector (the first of a tile cut
// inside a row) take copy_row_padded, as in im2col_avx512. Returns false, doing nothing, where the rows do not fit the
// ring.
constexpr int64_t max_split_row = 16 * max_tap_chunks + 64;  // a row's vectors, and a kernel's reach of 64 floats
constexpr int64_t max_split_ring = 16;                       // input rows a kernel spans: (R - 1) * dilation + 1

CONVGEMM_AVX512 bool im2col_stride2_ring_avx512(const ImageGeometry& g, const float* image, int64_t pixel_begin,
                                                int64_t pixel_end, float* col, int64_t col_stride) {
  const int64_t Q = g.output_width, S = g.kernel_width, W = g.width;
  const int64_t chunks = (Q + 15) / 16;
  if (chunks > max_tap_chunks || S > max_masked_kernel_width) return false;
  if ((g.kernel_height - 1) * g.dilation_height + 1 > max_split_ring) return false;
  const int64_t o_first = -g.pad_left, o_last = (S - 1) * g.dilation_width - g.pad_left;
  const int64_t k_lo = o_first >> 1;
  const int64_t split_chunks = (16 * chunks + (o_last >> 1) - k_lo + 15) / 16;
  if (16 * split_chunks > max_split_row) return false;
  // One ring row: the even elements, then the odd ones, 16 * split_chunks floats each.
  const int64_t half = 16 * split_chunks, ring_row = 2 * half;
  const RowMasks<2, max_tap_chunks> masks(g, chunks);
  // window[s]: where kernel column s's row starts in a ring row.
  int64_t window[max_masked_kernel_width];
  for (int64_t s = 0; s < S; ++s) {
    const int64_t o = s * g.dilation_width - g.pad_left;
    window[s] = (o & 1) * half + (o >> 1) - k_lo;
  }
  PixelMasks split_load[max_split_row / 16];
  for (int64_t i = 0; i < split_chunks; ++i) {
    const int64_t w0 = 2 * (k_lo + 16 * i);
    split_load[i] = {inside_lanes(w0, W, 0, W), inside_lanes(w0 + 16, W, 0, W)};
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  alignas(64) float ring[max_split_ring * 2 * max_split_row];
  const int64_t p_first = pixel_begin / Q, p_last = (pixel_end - 1) / Q;
  prefetch_next_rows(g, image, p_first, p_last);
  for (int64_t c = 0; c < g.channels; ++c) {
    const float* const channel = image + c * g.height * W;
    int64_t next_split = 0;  // input rows below this one are split (those output row p reads are still in the ring)
    for (int64_t p = p_first; p <= p_last; ++p) {
      const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
      const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
      const bool on_vector = q_from % 16 == 0;
      const int64_t j_first = q_from / 16, j_last = (q_to - 1) / 16;
      const __mmask16 last_store = masks.store[j_last] & first_lanes(q_to - 16 * j_last);
      if (on_vector) {
        // Split the input rows this output row reads for the first time.
        const int64_t h_end = std::min(g.height, last_input_row(g, p) + 1);
        for (int64_t h = std::max(next_split, first_input_row(g, p)); h < h_end; ++h) {
          if (h < 0) continue;
          const float* const row = channel + h * W;
          float* const dst = ring + (h % max_split_ring) * ring_row;
          for (int64_t i = 0; i < split_chunks; ++i) {
            const float* const pixels = row + 2 * (k_lo + 16 * i);
            const __m512 low = _mm512_maskz_loadu_ps(split_load[i].low, pixels);
            const __m512 high = _mm512_maskz_loadu_ps(split_load[i].high, pixels + 16);
            _mm512_store_ps(dst + 16 * i, _mm512_permutex2var_ps(low, even, high));
            _mm512_store_ps(dst + half + 16 * i, _mm512_permutex2var_ps(low, odd, high));
          }
        }
        next_split = std::max(next_split, h_end);
      }
      for (int64_t r = 0; r < g.kernel_height; ++r) {
        const int64_t h = input_row(g, p, r);
        // pixel q of kernel column s's row at row_start[s * col_stride + q]
        float* const row_start = col + (c * g.kernel_height + r) * S * col_stride - pixel_begin + p * Q;
        if (!on_vector) {  // a part of a row that does not start on a vector (the first of a tile)
          for (int64_t s = 0; s < S; ++s) {
            const ValidColumns& valid = masks.valid[s];
            float* const dst = row_start + s * col_stride + q_from;
            if (h < 0) {
              copy_row_padded<2>(dst, image, q_from, q_to, 0, 0);
            } else {
              copy_row_padded<2>(dst, channel + h * W + valid.input_offset, q_from, q_to, valid.first, valid.last);
            }
          }
          continue;
        }
        if (h < 0) {  // a row of padding: zeros in every kernel column
          for (int64_t s = 0; s < S; ++s) {
            float* const dst = row_start + s * col_stride;
            for (int64_t j = j_first; j < j_last; ++j) {
              _mm512_mask_storeu_ps(dst + 16 * j, masks.store[j], _mm512_setzero_ps());
            }
            _mm512_mask_storeu_ps(dst + 16 * j_last, last_store, _mm512_setzero_ps());
          }
          continue;
        }
        const float* const split = ring + (h % max_split_ring) * ring_row;
        for (int64_t s = 0; s < S; ++s) {
          const float* const src = split + window[s];
          float* const dst = row_start + s * col_stride;
          for (int64_t j = j_first; j < j_last; ++j) {
            _mm512_mask_storeu_ps(dst + 16 * j, masks.store[j], _mm512_loadu_ps(src + 16 * j));
          }
          _mm512_mask_storeu_ps(dst + 16 * j_last, last_store, _mm512_loadu_ps(src + 16 * j_last));
        }
      }
    }
  }
  return true;
}

// im2col for horizontal stride 1 or 2 where the whole-row path does not apply (tiles that start or end inside a
// row, rows of more than max_row_chunks vectors): row by row; rows of up to max_tap_chunks vectors with the masks of
// RowMasks (vgg's 224 at stride 1; at stride 2, rows the split ring of im2col_stride2_ring_avx512 does not take), the
// others, and parts of rows that do not start on a vector, through copy_row_padded, which works the masks out per
// vector.
// (Its own loop nest rather than for_each_tap_row: a lambda with the AVX-512 target cannot be called from that
// template's baseline instantiation.)
template <int stride>
CONVGEMM_AVX512 void im2col_avx512(const ImageGeometry& g, const float* image, int64_t pixel_begin, int64_t pixel_end,
                                   float* col, int64_t col_stride) {
  const int64_t Q = g.output_width;
  if (pixel_begin % Q == 0 && pixel_end % Q == 0 && Q <= max_whole_row_width &&
      g.kernel_width <= max_masked_kernel_width) {
    constexpr std::array whole_rows = {im2col_whole_rows_avx512<stride, 1>, im2col_whole_rows_avx512<stride, 2>,
                                       im2col_whole_rows_avx512<stride, 3>, im2col_whole_rows_avx512<stride, 4>};
    static_assert(whole_rows.size() == max_row_chunks);
    whole_rows[(Q + 15) / 16 - 1](g, image, pixel_begin / Q, pixel_end / Q, col, col_stride);
    return;
  }
  if constexpr (stride == 2) {
    if (im2col_stride2_ring_avx512(g, image, pixel_begin, pixel_end, col, col_stride)) return;
  }
  const int64_t chunks = (Q + 15) / 16;
  const bool masked_rows = chunks <= max_tap_chunks && g.kernel_width <= max_masked_kernel_width;
  const RowMasks<stride, max_tap_chunks> masks(g, masked_rows ? chunks : 0);
  const int64_t p_first = pixel_begin / Q, p_last = (pixel_end - 1) / Q;
  // Asks for channel c's input rows of this tile into L1, prefetch_ahead channels before its taps read them. A
  // 224-pixel image of 64 channels (12.8 MB) comes from memory in 64 row streams, one per channel, which the hardware
  // prefetchers do not follow, and each tap row started by waiting on its input row: vgg_1_2 lowered its tiles at
  // 2.4 ns per stored vector, 1.4 with the image already in cache. Asking for the next tile's rows at once
  // (prefetch_next_rows, which the stride-2 ring keeps) gained ~10 %: they are out of L2 again before they are read,
  // under the 1.2 MB of column matrix written meanwhile. One channel's taps take ~0.6 us, several memory latencies,
  // so two channels ahead suffice (1, 2, 4 and 8 measured the same); rows the previous tile read are cache hits,
  // cheap to ask for again. vgg_1_2 (tiles of 528 pixels): 2.38 -> 1.79 ns per stored vector (one thread, /tmp
  // harness), the column matrix the same bits; its forward +10 %, weight gradient +9 % (2 threads, medians of 5-7
  // alternating runs of the old and new library).
  constexpr int64_t prefetch_ahead = 2;
  const ImageRows read = rows_read(g, p_first, p_last);
  const int64_t channel_rows_bytes = (read.last - read.first + 1) * g.width * int64_t{sizeof(float)};
  const auto prefetch_channel = [&](int64_t c) {
    const char* rows = reinterpret_cast<const char*>(image + (c * g.height + read.first) * g.width);
    for (int64_t byte = 0; byte < channel_rows_bytes; byte += 64) _mm_prefetch(rows + byte, _MM_HINT_T0);
  };
  for (int64_t c = 0; c < std::min(prefetch_ahead, g.channels); ++c) prefetch_channel(c);
  for (int64_t c = 0; c < g.channels; ++c) {
    if (c + prefetch_ahead < g.channels) prefetch_channel(c + prefetch_ahead);
    for (int64_t r = 0; r < g.kernel_height; ++r) {
      for (int64_t s = 0; s < g.kernel_width; ++s) {
        const ValidColumns valid = masked_rows ? masks.valid[s] : valid_columns(g, s);
        float* col_row = col + ((c * g.kernel_height + r) * g.kernel_width + s) * col_stride - pixel_begin;
        for (int64_t p = p_first; p <= p_last; ++p) {
          const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
          const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
          const int64_t h = input_row(g, p, r);
          float* dst = col_row + p * Q + q_from;
          // A row, or a part of one starting on a vector boundary (tiles of whole micro-panels over rows of a
          // multiple of 16 pixels: vgg_1_2, r50_c1), takes the row's masks, the last vector cut at q_to.
          // (A row of padding, h < 0, is zeroed by copy_row_padded below.)
          if (masked_rows && q_from % 16 == 0 && h >= 0) {
            float* const row_start = dst - q_from;  // pixel q of the row at row_start[q]
            const int64_t j_last = (q_to - 1) / 16;
            const __mmask16 last_store = masks.store[j_last] & first_lanes(q_to - 16 * j_last);
            const float* row = image + (c * g.height + h) * g.width + valid.input_offset;
            for (int64_t j = q_from / 16; j < j_last; ++j) {
              _mm512_mask_storeu_ps(row_start + 16 * j, masks.store[j],
                                    load_pixels<stride>(row + stride * 16 * j, masks.load[s][j]));
            }
            _mm512_mask_storeu_ps(row_start + 16 * j_last, last_store,
                                  load_pixels<stride>(row + stride * 16 * j_last,
                                                      pixel_masks<stride>(masks.inside[s][j_last] & last_store)));
            continue;
          }
          if (h < 0) {  // a row of padding: nothing to read
            copy_row_padded<stride>(dst, image, q_from, q_to, 0, 0);
          } else {
            copy_row_padded<stride>(dst, image + (c * g.height + h) * g.width + valid.input_offset, q_from, q_to,
                                    valid.first, valid.last);
          }
        }
      }
    }
  }
}

// col2im over whole output rows at horizontal stride 1, image row by image row: each 16-pixel piece of a row of dx
// is loaded once, receives every tap's contribution in registers (a masked load of the column row, shifted by the
// tap's offset: lanes whose output column falls outside the row read nothing) and is stored once, instead of a
// load-add-store of the image per tap. The additions happen in the same order as the tap-by-tap loops (r, then s),
// so the result is the same, bit for bit. Measured: col2im was 36 % of lenet2's backward-data.
// The row's vectors (`chunks`, a template parameter so that their sums stay in registers) are summed side by side,
// tap by tap: independent chains of additions rather than one vector's nine dependent ones after another's, which
// the core could not overlap: backward-data of lenet1 +10 %, lenet2 +8 %, r50_3x3a +6 %, r50_3x3b +2 % (2 threads,
// medians of 5 alternating pairs).
constexpr int64_t max_gather_kernel_width = 16;

// `overwrite` (p_begin = 0, p_end = the output's height: the whole image) starts every row's sums at zero instead of
// loading the image, and walks all of its rows, so that dx needs no zeroing pass before (rows no output reaches are
// written as zeros): backward-data of lenet2 +4-5 %, lenet1 +3 %, r50_3x3c / r50_3x3d / batch-1 r50_3x3b +1-2 %
// (medians of 7 alternating runs, 2 threads).
template <int chunks, bool overwrite>
CONVGEMM_AVX512 void col2im_whole_rows_avx512(const ImageGeometry& g, const float* col, int64_t col_stride,
                                              int64_t p_begin, int64_t p_end, float* image) {
  const int64_t Q = g.output_width, W = g.width;
  // tap_lanes[s][j]: the lanes of image columns 16j.. whose output column q = w + pad_left - s * dilation is in
  // [0, Q); row_lanes[j]: the lanes inside the image row.
  __mmask16 tap_lanes[max_gather_kernel_width][chunks], row_lanes[chunks];
  for (int64_t j = 0; j < chunks; ++j) {
    row_lanes[j] = first_lanes(W - 16 * j);
    for (int64_t s = 0; s < g.kernel_width; ++s) {
      const int64_t q0 = 16 * j + g.pad_left - s * g.dilation_width;  // the output column of lane 0
      tap_lanes[s][j] = inside_lanes(q0, q0 + W - 16 * j, 0, Q);
    }
  }
  // Image rows this tile's output rows reach.
  const ImageRows reached = overwrite ? ImageRows{0, g.height - 1} : rows_read(g, p_begin, p_end - 1);
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t h = reached.first; h <= reached.last; ++h) {
      float* image_row = image + (c * g.height + h) * W;
      __m512 sum[chunks];
#pragma GCC unroll 4
      for (int j = 0; j < chunks; ++j) {
        sum[j] = overwrite ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(row_lanes[j], image_row + 16 * j);
      }
      for (int64_t r = 0; r < g.kernel_height; ++r) {
        const int64_t t = h + g.pad_top - r * g.dilation_height;  // p * stride_height for the output row p
        if (t < 0 || t % g.stride_height != 0) continue;
        const int64_t p = t / g.stride_height;
        if (p < p_begin || p >= p_end) continue;
        const float* col_row =
            col + (c * g.kernel_height + r) * g.kernel_width * col_stride + (p - p_begin) * Q + g.pad_left;
        for (int64_t s = 0; s < g.kernel_width; ++s) {
          // col_row + s * col_stride - s * dilation is output column pad_left - s * dilation of tap (r, s)
          const float* tap = col_row + s * (col_stride - g.dilation_width);
#pragma GCC unroll 4
          for (int j = 0; j < chunks; ++j) {
            sum[j] = _mm512_add_ps(sum[j], _mm512_maskz_loadu_ps(tap_lanes[s][j], tap + 16 * j));
          }
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < chunks; ++j) _mm512_mask_storeu_ps(image_row + 16 * j, row_lanes[j], sum[j]);
    }
  }
}

// col2im at horizontal stride 2, tap row by tap row as the generic loops, in the same order of additions (so the
// same result, bit for bit): 16 column entries at a time go to the even lanes of two vectors of the image row (a
// permute each) and are added there under a mask that leaves the odd pixels, which other taps feed, untouched.
// The generic loops do this one scalar at a time. Image rows up to 256 pixels take col2im_stride2_rows_avx512
// instead, which sums each image row in registers first.
CONVGEMM_AVX512 void col2im_stride2_avx512(const ImageGeometry& g, const float* col, int64_t col_stride,
                                           int64_t pixel_begin, int64_t pixel_end, float* image) {
  const int64_t Q = g.output_width;
  const __m512i low_half = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);  // lane 2j <- j
  const __m512i high_half = _mm512_add_epi32(low_half, _mm512_set1_epi32(8));                 // lane 2j <- j + 8
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t r = 0; r < g.kernel_height; ++r) {
      for (int64_t s = 0; s < g.kernel_width; ++s) {
        const ValidColumns valid = valid_columns(g, s);
        const float* col_row = col + ((c * g.kernel_height + r) * g.kernel_width + s) * col_stride - pixel_begin;
        for (int64_t p = pixel_begin / Q; p <= (pixel_end - 1) / Q; ++p) {
          const int64_t h = input_row(g, p, r);
          if (h < 0) continue;  // the tap read padding: its gradient goes nowhere
          const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
          const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
          const int64_t first = std::clamp(valid.first, q_from, q_to);
          const int64_t last = std::clamp(valid.last, first, q_to);
          const int64_t row_start = (c * g.height + h) * g.width + valid.input_offset;  // may be < 0: index only
          for (int64_t q0 = first; q0 < last; q0 += 16) {
            const __mmask16 lanes = first_lanes(last - q0);
            const __m512 values = _mm512_maskz_loadu_ps(lanes, col_row + p * Q + q0);
            float* pixels = image + (row_start + 2 * q0);  // pixel of q0, inside the image
            const __mmask16 low = spread_to_even_bits(lanes), high = spread_to_even_bits(lanes >> 8);
            const __m512 sum_low = _mm512_maskz_loadu_ps(low, pixels);
            const __m512 sum_high = _mm512_maskz_loadu_ps(high, pixels + 16);
            _mm512_mask_storeu_ps(pixels, low,
                                  _mm512_add_ps(sum_low, _mm512_maskz_permutexvar_ps(low, low_half, values)));
            _mm512_mask_storeu_ps(pixels + 16, high,
                                  _mm512_add_ps(sum_high, _mm512_maskz_permutexvar_ps(high, high_half, values)));
          }
        }
      }
    }
  }
}

// col2im at horizontal stride 2, image row by image row ("gather"): every image row the tile's output rows reach is
// summed in registers as two parity halves, even[k] (image column 2k) and odd[k] (column 2k + 1), then interleaved
// (two permutes per 32 pixels) and added onto the image once. Kernel column s reads image column 2q + o
// (o = s * dilation - pad_left), which is element q + floor(o / 2) of the half of o's parity: each tap row (c, r, s)
// at output row p adds a window of its entries, shifted, into one half, a masked unaligned load and an add per 16
// entries, instead of col2im_stride2_avx512's two permutes and a masked load-add-store of two image vectors.
// The order of additions differs from the tap-by-tap loops (rounding, not bit-identical results). Measured on
// r50_c1 (3 x 224 x 224, 7 x 7, pad 3): 2.7 -> 1.2 ns per 16 column entries over tiles of 624 pixels (one thread,
// /tmp harness), its backward-data +15 % (2 threads, medians of 7 alternating runs of the old and new library).
// `vectors` (per half, a template parameter so that the 2 * vectors sums stay in registers) covers image rows up to
// 32 * vectors pixels.
template <int vectors>
CONVGEMM_AVX512 void col2im_stride2_rows_avx512(const ImageGeometry& g, const float* col, int64_t col_stride,
                                                int64_t pixel_begin, int64_t pixel_end, float* image) {
  const int64_t Q = g.output_width, W = g.width, S = g.kernel_width;
  const int64_t p_first = pixel_begin / Q, p_last = (pixel_end - 1) / Q;
  // Per kernel column s: which half it feeds, the shift k - q of its entries into that half, its valid output
  // columns, and the lanes of each vector of the half that a whole output row feeds (worked out once per call; the
  // tile's first and last output rows, which it may cut, work out theirs).
  bool odd_half[max_gather_kernel_width];
  int64_t shift[max_gather_kernel_width];
  ValidColumns valid[max_gather_kernel_width];
  __mmask16 whole_row_lanes[max_gather_kernel_width][vectors];
  for (int64_t s = 0; s < S; ++s) {
    const int64_t o = s * g.dilation_width - g.pad_left;
    odd_half[s] = (o & 1) != 0;
    shift[s] = o >> 1;  // floor(o / 2), also for negative o
    valid[s] = valid_columns(g, s);
    for (int64_t j = 0; j < vectors; ++j) {
      whole_row_lanes[s][j] = inside_lanes(16 * j - shift[s], valid[s].last, valid[s].first, valid[s].last);
    }
  }
  // Pixel 2i of 32 <- even[i], pixel 2i + 1 <- odd[i] (index 16 + i of the two-source permute).
  const __m512i low_pixels = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i high_pixels = _mm512_add_epi32(low_pixels, _mm512_set1_epi32(8));
  const ImageRows rows = rows_read(g, p_first, p_last);  // the image rows this tile's output rows reach
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t h = rows.first; h <= rows.last; ++h) {
      __m512 even[vectors], odd[vectors];
#pragma GCC unroll 8
      for (int j = 0; j < vectors; ++j) even[j] = odd[j] = _mm512_setzero_ps();
      bool reached = false;  // rows between the taps of a kernel taller-strided than it is tall get nothing
      for (int64_t r = 0; r < g.kernel_height; ++r) {
        const int64_t t = h + g.pad_top - r * g.dilation_height;  // p * stride_height for the output row p
        if (t < 0 || t % g.stride_height != 0) continue;
        const int64_t p = t / g.stride_height;
        if (p < p_first || p > p_last) continue;
        reached = true;
        const int64_t q_from = std::max<int64_t>(0, pixel_begin - p * Q);
        const int64_t q_to = std::min<int64_t>(Q, pixel_end - p * Q);
        const bool whole_row = q_from == 0 && q_to == Q;
        // Index of the tile's column entry (p, 0) of tap row (c, r, 0); may be < 0: lanes below q_from read nothing.
        const int64_t row_entries = (c * g.kernel_height + r) * S * col_stride + p * Q - pixel_begin;
        for (int64_t s = 0; s < S; ++s) {
          __mmask16 lanes[vectors];
          if (whole_row) {
#pragma GCC unroll 8
            for (int j = 0; j < vectors; ++j) lanes[j] = whole_row_lanes[s][j];
          } else {  // the tile's first or last output row, cut to [q_from, q_to)
            const int64_t first = std::max(valid[s].first, q_from), last = std::min(valid[s].last, q_to);
#pragma GCC unroll 8
            for (int j = 0; j < vectors; ++j) lanes[j] = inside_lanes(16 * j - shift[s], last, first, last);
          }
          // Lane i of vector j is element k = 16j + i of the half: output column q = k - shift.
          const float* entries = col + (row_entries + s * col_stride - shift[s]);
          if (odd_half[s]) {
#pragma GCC unroll 8
            for (int j = 0; j < vectors; ++j) {
              odd[j] = _mm512_add_ps(odd[j], _mm512_maskz_loadu_ps(lanes[j], entries + 16 * j));
            }
          } else {
#pragma GCC unroll 8
            for (int j = 0; j < vectors; ++j) {
              even[j] = _mm512_add_ps(even[j], _mm512_maskz_loadu_ps(lanes[j], entries + 16 * j));
            }
          }
        }
      }
      if (!reached) continue;
      float* image_row = image + (c * g.height + h) * W;
#pragma GCC unroll 8
      for (int j = 0; j < vectors; ++j) {
        float* pixels = image_row + 32 * j;
        const __mmask16 low = first_lanes(W - 32 * j), high = first_lanes(W - 32 * j - 16);
        _mm512_mask_storeu_ps(
            pixels, low,
            _mm512_add_ps(_mm512_maskz_loadu_ps(low, pixels), _mm512_permutex2var_ps(even[j], low_pixels, odd[j])));
        _mm512_mask_storeu_ps(pixels + 16, high,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(high, pixels + 16),
                                            _mm512_permutex2var_ps(even[j], high_pixels, odd[j])));
      }
    }
  }
}

// Image rows up to this wide go to col2im_stride2_rows_avx512 (8 + 8 sums; r50_c1's stem has 224 pixels, 7 + 7).
constexpr int64_t max_stride2_row_width = 256;

bool col2im_takes_stride2_rows(const ImageGeometry& g) {
  return g.width <= max_stride2_row_width && g.kernel_width <= max_gather_kernel_width;
}

void col2im_stride2_rows(const ImageGeometry& g, const float* col, int64_t col_stride, int64_t pixel_begin,
                         int64_t pixel_end, float* image) {
  constexpr std::array kernels = {col2im_stride2_rows_avx512<1>, col2im_stride2_rows_avx512<2>,
                                  col2im_stride2_rows_avx512<3>, col2im_stride2_rows_avx512<4>,
                                  col2im_stride2_rows_avx512<5>, col2im_stride2_rows_avx512<6>,
                                  col2im_stride2_rows_avx512<7>, col2im_stride2_rows_avx512<8>};
  kernels[(g.width + 31) / 32 - 1](g, col, col_stride, pixel_begin, pixel_end, image);
}
#endif

}  // namespace

// The entry points: plain functions over the cloned ones (see vector_clones.hpp), or the AVX-512 rows.
void im2col(const ImageGeometry& g, const float* image, int64_t pixel_begin, int64_t pixel_end, float* col,
            int64_t col_stride) {
#ifdef CONVGEMM_HAVE_AVX512
  if (g.stride_width <= 2 && use_avx512_kernels()) {
    (g.stride_width == 1 ? im2col_avx512<1> : im2col_avx512<2>)(g, image, pixel_begin, pixel_end, col, col_stride);
    return;
  }
#endif
  im2col_cloned(g, image, pixel_begin, pixel_end, col, col_stride);
}

#ifdef CONVGEMM_HAVE_AVX512
namespace {
// Whether col2im_whole_rows_avx512 takes these pixels of this image.
bool col2im_takes_whole_rows(const ImageGeometry& g, int64_t pixel_begin, int64_t pixel_end) {
  const int64_t Q = g.output_width;
  return g.stride_width == 1 && pixel_begin % Q == 0 && pixel_end % Q == 0 && g.width <= max_whole_row_width &&
         g.kernel_width <= max_gather_kernel_width && use_avx512_kernels();
}

template <bool overwrite>
void col2im_whole_rows(const ImageGeometry& g, const float* col, int64_t col_stride, int64_t pixel_begin,
                       int64_t pixel_end, float* image) {
  constexpr std::array kernels = {col2im_whole_rows_avx512<1, overwrite>, col2im_whole_rows_avx512<2, overwrite>,
                                  col2im_whole_rows_avx512<3, overwrite>, col2im_whole_rows_avx512<4, overwrite>};
  const int64_t Q = g.output_width;
  kernels[(g.width + 15) / 16 - 1](g, col, col_stride, pixel_begin / Q, pixel_end / Q, image);
}
}  // namespace
#endif

void col2im_accumulate(const ImageGeometry& g, const float* col, int64_t col_stride, int64_t pixel_begin,
                       int64_t pixel_end, float* image) {
#ifdef CONVGEMM_HAVE_AVX512
  if (col2im_takes_whole_rows(g, pixel_begin, pixel_end)) {
    col2im_whole_rows<false>(g, col, col_stride, pixel_begin, pixel_end, image);
    return;
  }
  if (g.stride_width == 2 && use_avx512_kernels()) {
    if (col2im_takes_stride2_rows(g)) {
      col2im_stride2_rows(g, col, col_stride, pixel_begin, pixel_end, image);
      return;
    }
    col2im_stride2_avx512(g, col, col_stride, pixel_begin, pixel_end, image);
    return;
  }
#endif
  col2im_accumulate_cloned(g, col, col_stride, pixel_begin, pixel_end, image);
}

void col2im(const ImageGeometry& g, const float* col, int64_t col_stride, float* image) {
  const int64_t pixels = g.output_pixels();
#ifdef CONVGEMM_HAVE_AVX512
  if (col2im_takes_whole_rows(g, 0, pixels)) {
    col2im_whole_rows<true>(g, col, col_stride, 0, pixels, image);
    return;
  }
#endif
  std::fill(image, image + g.channels * g.height * g.width, 0.0f);
  col2im_accumulate(g, col, col_stride, 0, pixels, image);
}

}  // namespace convgemm::kernels
