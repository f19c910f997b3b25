#include "kernels/conv_gemm.hpp"

#include "kernels/avx512.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rows.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

namespace convgemm::kernels {
namespace {

#ifdef CONVGEMM_HAVE_AVX512
constexpr int64_t row_block = conv_gemm_row_block;  // MR: rows of C per micro-tile
// ...except a C of 9, 18, 27 or 36 rows (backward-data's W^T of 1-4 channels under a 3x3 filter), which runs in
// 9-row micro-tiles (27 accumulators: 31 of the 32 vector registers with B's three and the broadcast), so that
// every micro-panel of B (a tile of dY, streamed from memory) is read by as few row blocks as possible with as many
// FMAs per load as possible. lenet1's 9 x 784 x 32 GEMM of W^T * dY over 64 samples' dY (one thread, /tmp
// harness): 141-147 -> 170-179 GFLOP/s as one 9-row tile instead of 5 + 4; 18 rows +5 %, 36 rows +3 %, 27 level.
// Taller C keeps 8-row tiles: 9-row blocks for every height measured level to 0.92x on the 256 filters of r50_3x3c.
constexpr int64_t max_tile_rows = 9;
constexpr int64_t column_block = conv_gemm_column_block;  // NR: three vectors of 16 columns
// K is walked in blocks so that the micro-panel of B a column block reads (k_block rows of 192 bytes) stays in the
// 48 KiB L1 while every row block of A passes over it; except by forward's GEMM over a compact B (see
// conv_gemm_avx512), which takes all of K in one pass.
constexpr int64_t k_block = conv_gemm_depth_block;
// Row blocks of A per L2 block: 32 x 8 rows x 128 floats = 128 KiB.
constexpr int64_t a_row_blocks = 32;
// A compact B block at most this large (lenet1's 9 x 784 column tile: 28 KiB) stays in L1 whichever order the
// micro-tiles take, so row blocks go outermost and each runs across all of B in one call (see TileRun).
constexpr int64_t l1_resident_b_bytes = 32 << 10;
// The largest K, and the largest transposed A (backward-data's W^T), this kernel takes; see conv_gemm.
constexpr int64_t max_inner = conv_gemm_max_depth;
constexpr int64_t max_transposed_rows = 512;
// The most rows of A for which a B read from a wider matrix is streamed one micro-panel at a time (see
// multiply_streamed_panels): every row block multiplies the micro-panel while it is in L1, and C is written once per
// stream_depth_block of K. For forward's W up to 256 rows, against packing K blocks of 128 rows of all of B (the
// order taller A keeps), ResNet-50's 1x1 forwards (batch 16, 2 threads, medians of 15 calls, two rounds): 256->128
// filters at 56x56 +20-33 %, 512->128 at 28x28 +17 %, 256->256 at 28x28 +12 %, 128->128 at 28x28 +10 %; 512 filters
// lost (128->512 at 28x28 and 256->1024 at 14x14: 0.94x). For backward-data's W^T, 64 rows: at 128 rows level, at
// 256 rows 0.95x.
constexpr int64_t streamed_max_rows = 256;
constexpr int64_t streamed_max_transposed_rows = 64;
// The depth of a streamed micro-panel: up to 256 rows of B in one pass rather than 128, so that C is written once
// over the 256 channels of r50_1x1a (its forward +3-4 %, medians of 5-9 alternating runs in three A/Bs; 192 + 64
// level), though its 48 KiB micro-panel then shares L1 with A's rows and C.
constexpr int64_t stream_depth_block = 2 * k_block;
// The most rows of W (16 row blocks) under which every row block reads a streamed micro-panel of at least k_block
// rows in place, rather than the first copying it into the panel buffer for the others (see
// multiply_streamed_panels). Such a micro-panel (24-48 KiB) does not stay in L1 beside A's rows and the next
// micro-panel's prefetched rows either way, so the others read the copy from L2 as they would the image; the copy is
// then the cost, and it weighs most where it is shared by fewest row blocks. The forward of a 1x1 convolution, batch
// 16, 2 threads: r50_1x1a (64 filters over 256 channels at 56x56) 408 -> 420 GFLOP/s in the suite (medians of ten
// rounds, the two libraries alternating, ahead in every round); in a /tmp harness (three rounds each, buffers not
// page-aligned) 64 filters over 192 channels +1.5 %, over 512 at 28x28 +2 %, over 1024 at 28x28 +4 %, 32 filters
// over 256 +5 %, 128 filters +1-2 %; 256 filters level (copied); a micro-panel of 64 rows (64 channels) lost 1.5 %
// (copied). Not for backward-data's W^T, whose in-place loop does not interleave the stream (see micro_tile).
constexpr int64_t in_place_max_rows = 128;
constexpr bool reads_panels_in_place(int64_t m, int64_t k, bool transposed) {
  return !transposed && m <= in_place_max_rows && k >= k_block;
}
// Whether B is read in place (see conv_gemm_row_padding).
constexpr bool b_is_compact(int64_t n, int64_t ldb) { return ldb - n <= conv_gemm_row_padding; }
// Whether A (W, or W^T when transposed) is short enough for the streamed order (the limits above).
constexpr bool packs_panel_at_a_time(int64_t m, bool transposed) {
  return m <= (transposed ? streamed_max_transposed_rows : streamed_max_rows);
}
// Whether conv_gemm_avx512 streams B one micro-panel at a time when given a panel buffer (see there): both the loop
// and the panel buffer's size (conv_gemm_panel_floats) follow this one test.
constexpr bool streams_panels(int64_t m, int64_t k, bool transposed, bool compact) {
  return packs_panel_at_a_time(m, transposed) && (!compact || (transposed && k > k_block));
}

// How a micro-tile treats the C already there:
// - fresh: overwrites it (the first K block of a GEMM that does not accumulate);
// - add_after: starts its sums from zero and adds C before it stores (its load off the FMAs' chains: a later K
//   block over a compact B, a caller's accumulate);
// - from_c: starts its sums from C, so that every entry of C is one chain of FMAs over all of K whatever the K
//   blocks: a later K block over a B inside a wider matrix. The tiles within a sample (a 1x1 convolution's image,
//   in micro-panels 256 or 128 rows deep) then make the sums of whole samples (all of K in one pass), and y does not
//   depend on the tiling. (Everywhere, it cost r50_3x3c's and r50_3x3d's forward 4-10 %: their C, the tile of y,
//   comes from L2 at the start of each K block, ahead of the FMAs.)
enum class Start { fresh, add_after, from_c };

// Adds the C already there (add_after), then, on the last K block, the bias and the ReLU; stores the lanes of
// mask, or (non_temporal) all 16 with a store that bypasses the cache, c then on a 64-byte boundary. The ReLU keeps
// v where v > 0 and writes 0 elsewhere, NaN and -0 included, as relu_forward.
template <Start start, bool last, bool non_temporal>
CONVGEMM_AVX512 inline void finish_vector(__m512 value, float* c, __mmask16 mask, __m512 bias, bool relu) {
  if constexpr (start == Start::add_after) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, c));
  if constexpr (last) {
    value = _mm512_add_ps(value, bias);
    if (relu) value = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(value, _mm512_setzero_ps(), _CMP_GT_OQ), value);
  }
  if constexpr (non_temporal) _mm512_stream_ps(c, value);
  else _mm512_mask_storeu_ps(c, mask, value);
}

// C[rows x columns] (+)= A[rows x kc] * B[kc x columns] for rows <= max_tile_rows (the template), columns <= 48
// (masks).
// `start` says what becomes of the C already there; `last` applies the epilogue before the store. Both are template
// parameters: tested at run time, GCC threaded the tests through the 24 stores, a branch maze that cost lenet1's
// forward (K = 9, where the epilogue is a third of the tile) 13 % (medians of 8 alternating pairs; a 32 x 784 x 9
// GEMM alone, one thread: 131 -> 164 GFLOP/s). `full`: columns is 16 * vectors, so the masks are
// constants and the loads and stores plain ones (with masks known only at run time, GCC kept them on the stack and
// reloaded three per step of l): r50_1x1a backward-data +20 %, forward +7 %, r50_c1 forward +11 %, vgg_1_2 forward
// +7 % (medians of 4-5 alternating pairs).
// What a micro-tile over a B read in place from a wider matrix does besides its FMAs (see multiply_streamed_panels):
// the first row block writes the rows of B it loads into the micro-panel buffer that the other row blocks then read
// (copy_to, leading dimension 48; null for those), and every row block asks for its share of the next micro-panel's
// rows to be brought into L1, spread over its steps of l.
struct PanelStream {
  float* copy_to = nullptr;
  const float* prefetch_from = nullptr;  // the first of prefetch_rows rows of B, 48 columns, ldb apart
  int64_t prefetch_rows = 0, ldb = 0;
};

// A micro-tile that streams asks for a row of the next micro-panel every prefetch_every steps of l (more rows per
// group where its share is larger than its steps allow).
constexpr int prefetch_every = 8;

// Asks for the 48 floats at `row` to be brought into L1: four lines, so that a row that does not start on a line is
// covered to its last float. Always inlined: GCC 12 drops the prefetches of a plain inline helper called from an
// always_inline function (a ten-line reproduction emits none; clang keeps them), and streamed steps written as such a
// function lost all of theirs (twice, in versions of this file that did so).
CONVGEMM_AVX512 __attribute__((always_inline)) inline void prefetch_panel_row(const float* row) {
  const char* from = reinterpret_cast<const char*>(row);
  _mm_prefetch(from, _MM_HINT_T0);
  _mm_prefetch(from + 64, _MM_HINT_T0);
  _mm_prefetch(from + 128, _MM_HINT_T0);
  _mm_prefetch(from + 4 * column_block - 4, _MM_HINT_T0);
}

// A stream's work after a micro-tile that did not interleave it with its steps (a ragged micro-panel, or K < 16):
// the copy of the kc x columns B it read, then the prefetches.
CONVGEMM_AVX512 void finish_stream(const PanelStream& stream, int64_t kc, const float* b, int64_t ldb,
                                   int64_t columns) {
  for (int64_t l = 0; stream.copy_to != nullptr && l < kc; ++l) {
#pragma GCC unroll 3
    for (int j = 0; j < 3; ++j) {
      const __mmask16 mask = first_lanes(columns - 16 * j);
      _mm512_mask_storeu_ps(stream.copy_to + l * column_block + 16 * j, mask,
                            _mm512_maskz_loadu_ps(mask, b + l * ldb + 16 * j));
    }
  }
  for (int64_t row = 0; row < stream.prefetch_rows; ++row) prefetch_panel_row(stream.prefetch_from + row * stream.ldb);
}

// One step of l: C[rows x 16 * vectors] += A[:, l] * B[l, :], a_column and b_row pointing at A[0, l] and B[l, 0];
// `copies`: B's row is also stored at copy_row. Always inlined, so that acc stays in registers.
template <int rows, int vectors, bool copies = false>
CONVGEMM_AVX512 __attribute__((always_inline)) inline void micro_step(__m512 (&acc)[rows][vectors],
                                                                      const __mmask16 (&masks)[vectors],
                                                                      const float* a_column, int64_t ars,
                                                                      const float* b_row, float* copy_row = nullptr) {
  __m512 b_vectors[vectors];
#pragma GCC unroll 3
  for (int j = 0; j < vectors; ++j) b_vectors[j] = _mm512_maskz_loadu_ps(masks[j], b_row + 16 * j);
  if constexpr (copies) {
#pragma GCC unroll 3
    for (int j = 0; j < vectors; ++j) _mm512_mask_storeu_ps(copy_row + 16 * j, masks[j], b_vectors[j]);
  }
#pragma GCC unroll 9
  for (int i = 0; i < rows; ++i) {
    const __m512 a_value = _mm512_set1_ps(a_column[i * ars]);
#pragma GCC unroll 3
    for (int j = 0; j < vectors; ++j) acc[i][j] = _mm512_fmadd_ps(a_value, b_vectors[j], acc[i][j]);
  }
}

// The accumulators at the start of a micro-tile: C's values (from_c), else zero.
template <int rows, int vectors, Start start>
CONVGEMM_AVX512 __attribute__((always_inline)) inline void start_tile(__m512 (&acc)[rows][vectors],
                                                                      const __mmask16 (&masks)[vectors], const float* c,
                                                                      int64_t ldc) {
#pragma GCC unroll 9
  for (int i = 0; i < rows; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < vectors; ++j) {
      acc[i][j] = start == Start::from_c ? _mm512_maskz_loadu_ps(masks[j], c + i * ldc + 16 * j) : _mm512_setzero_ps();
    }
}

// Adds the C already there (add_after), then, on the last K block, the bias and the ReLU, and stores the tile.
// Every loop over acc is fully unrolled (none indexes it at run time), so the accumulators stay in registers.
template <int rows, int vectors, Start start, bool last, bool non_temporal>
CONVGEMM_AVX512 __attribute__((always_inline)) inline void store_tile(__m512 (&acc)[rows][vectors],
                                                                      const __mmask16 (&masks)[vectors], float* c,
                                                                      int64_t ldc, const float* bias, bool relu) {
#pragma GCC unroll 9
  for (int i = 0; i < rows; ++i) {
    const __m512 bias_i = _mm512_set1_ps(last && bias != nullptr ? bias[i] : 0.0f);
#pragma GCC unroll 3
    for (int j = 0; j < vectors; ++j) {
      finish_vector<start, last, non_temporal>(acc[i][j], c + i * ldc + 16 * j, masks[j], bias_i, relu);
    }
  }
}

// Where a micro-tile stores its C, and the epilogue of the last K block: one argument, read after the loop.
struct TileOutput {
  float* c;
  int64_t ldc;
  const float* bias;
  bool relu;
};

// A full micro-tile (48 columns, 16 or more steps of l, so at least two groups of prefetch_every) of a streamed B, A's
// columns contiguous (forward's W) or, transposed_a, its rows (backward-data's W^T, a(i, l) = a[i + l * acs]), its
// stream's work spread over the steps (see multiply_streamed_panels): after
// every prefetch_every steps it asks for the next rows of its share of the next micro-panel (the share over the
// groups, rounded up: a prefetch past the share, of rows another row block asks for or of none, costs nothing).
// `in_place`: B is read where it is (leading dimension ldb): by the first row block of a B inside a wider matrix, which
// `copies` each row it loads into the panel buffer, and by every row block of a compact B (a 1x1 convolution's
// whole-sample image) whose stream only prefetches; the other row blocks of a B inside a wider matrix read the panel
// buffer, whose leading dimension is then a constant. A function of its own with few values live around its loop: as
// a branch of micro_tile_body, and with B's leading dimension a run-time value, GCC kept B's eight row pointers of a
// group on the stack (r50_1x1a's forward GEMM alone, one thread, /tmp harness: 160-184 against 191-200 GFLOP/s).
template <int rows, Start start, bool last, bool non_temporal, bool copies, bool in_place, bool transposed_a>
CONVGEMM_AVX512 void stream_tile(int64_t kc, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                                 const TileOutput& out, const PanelStream& stream) {
  constexpr int vectors = column_block / 16;
  const __mmask16 masks[vectors] = {0xFFFF, 0xFFFF, 0xFFFF};
  __m512 acc[rows][vectors];
  start_tile<rows, vectors, start>(acc, masks, out.c, out.ldc);
  float* const copy_to = stream.copy_to;
  static_assert(in_place || !copies);
  const int64_t b_ld = in_place ? ldb : column_block;  // B in place, or the panel buffer
  const int64_t per_group = (stream.prefetch_rows + kc / prefetch_every - 1) / (kc / prefetch_every);
  const int64_t group_ld = per_group * stream.ldb;
  int64_t l0 = 0;
  for (; l0 + prefetch_every <= kc; l0 += prefetch_every) {
#pragma GCC unroll 8
    for (int64_t l = l0; l < l0 + prefetch_every; ++l) {
      micro_step<rows, vectors, copies>(acc, masks, transposed_a ? a + l * acs : a + l, transposed_a ? 1 : ars,
                                        b + l * b_ld, copies ? copy_to + l * column_block : nullptr);
    }
    for (int64_t row = 0; row < per_group; ++row) {
      prefetch_panel_row(stream.prefetch_from + l0 / prefetch_every * group_ld + row * stream.ldb);
    }
  }
  for (int64_t l = l0; l < kc; ++l) {
    micro_step<rows, vectors, copies>(acc, masks, transposed_a ? a + l * acs : a + l, transposed_a ? 1 : ars,
                                      b + l * b_ld, copies ? copy_to + l * column_block : nullptr);
  }
  store_tile<rows, vectors, start, last, non_temporal>(acc, masks, out.c, out.ldc, out.bias, out.relu);
}

// Micro-tiles that one call computes one after the other, each b_step further along B, c_step further along C and
// a_step further along A: the micro-panels of one row block (a micro-panel on), or the row blocks over one
// micro-panel (8 rows on). A call per micro-tile pays the dispatch (the table, first/last/full, 14 arguments) and the
// masks' setup every time, which tiles as short as lenet1's (9 steps of l in forward, 32 in backward-data) feel: with
// each row block's micro-panels in one call, lenet1's forward +3-5 % and backward-data +0-11 % (2 threads, medians
// of 5-7 alternating runs against the library before, five and six A/Bs), the other shapes level. prefetch: rows of
// B to ask for, an equal share after each tile.
struct TileRun {
  int64_t count = 1;
  int64_t b_step = 0, c_step = 0, a_step = 0;
  const PanelStream* prefetch = nullptr;
};

// `runs`: tiles.count tiles rather than one. A template parameter, so that a single tile compiles as straight-line
// code: through the loop, which keeps its pointers live across the tile, a tile ran slower (lenet1's forward, one
// tile per call: 0.83x; weight gradients of r50_3x3c / r50_3x3d 0.92x / 0.94x).
template <int rows, int vectors, bool full, Start start, bool last, bool non_temporal, bool runs>
CONVGEMM_AVX512 void micro_tile_body(int64_t kc, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                                     float* c, int64_t ldc, int64_t columns, const float* bias, bool relu,
                                     const TileRun& tiles) {
  __mmask16 masks[vectors];
#pragma GCC unroll 3
  for (int j = 0; j < vectors; ++j) masks[j] = full ? __mmask16(0xFFFF) : first_lanes(columns - 16 * j);
  for (int64_t t = 0; t < (runs ? tiles.count : 1); ++t, a += tiles.a_step, b += tiles.b_step, c += tiles.c_step) {
    __m512 acc[rows][vectors];
    start_tile<rows, vectors, start>(acc, masks, c, ldc);
    for (int64_t l = 0; l < kc; ++l) micro_step<rows, vectors>(acc, masks, a + l * acs, ars, b + l * ldb);
    store_tile<rows, vectors, start, last, non_temporal>(acc, masks, c, ldc, bias, relu);
    if (runs && tiles.prefetch != nullptr) {
      const PanelStream& next = *tiles.prefetch;
      for (int64_t row = t * next.prefetch_rows / tiles.count; row < (t + 1) * next.prefetch_rows / tiles.count;
           ++row) {
        prefetch_panel_row(next.prefetch_from + row * next.ldb);
      }
    }
  }
}

// Calls body.template operator()<start, last, non_temporal>() with the run-time values as template arguments (see
// micro_tile_body and stream_tile, whose prologues and epilogues they select); non_temporal only with a fresh start
// and last (a tile that writes C in one pass), and only where the tile may_stream (whole micro-panels: no code for
// the others).
template <bool may_stream, class Body>
inline void with_epilogue(Start start, bool last, bool non_temporal, const Body& body) {
  const auto ends = [&]<Start s>() {
    if (last)
      body.template operator()<s, true, false>();
    else
      body.template operator()<s, false, false>();
  };
  switch (start) {
    case Start::fresh:
      if (last && may_stream && non_temporal) return body.template operator()<Start::fresh, true, may_stream>();
      return ends.template operator()<Start::fresh>();
    case Start::add_after: return ends.template operator()<Start::add_after>();
    case Start::from_c: return ends.template operator()<Start::from_c>();
  }
}

// The body for these tiles' columns, first and last. bias: the first tile's first row's, or null. non_temporal: C may
// be written around the cache (GemmEpilogue::non_temporal), which these tiles do where they write it in one pass,
// whole vectors on 64-byte boundaries. stream: the work of a micro-panel stream (or null), interleaved with the steps
// of l by stream_tile where it takes the tile, done after the steps otherwise; only with a run of one tile.
template <int rows, int vectors>
CONVGEMM_AVX512 void micro_tile(int64_t kc, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                                float* c, int64_t ldc, int64_t columns, Start start, bool last, const float* bias,
                                bool relu, bool non_temporal, const PanelStream* stream, const TileRun& tiles) {
  constexpr bool may_stream = vectors == column_block / 16;
  const bool streams_c = non_temporal && columns == column_block && reinterpret_cast<uintptr_t>(c) % 64 == 0 &&
                         ldc % 16 == 0 && tiles.c_step % 16 == 0;
  const auto run_tiles = [&]<bool full, bool runs>() {
    with_epilogue<may_stream>(start, last, streams_c, [&]<Start c_start, bool last_block, bool around_cache>() {
      micro_tile_body<rows, vectors, full, c_start, last_block, around_cache, runs>(kc, a, ars, acs, b, ldb, c, ldc,
                                                                                    columns, bias, relu, tiles);
    });
  };
  const auto run = [&]<bool full>() {
    if (tiles.count > 1) return run_tiles.template operator()<full, true>();
    run_tiles.template operator()<full, false>();
  };
  // Below 16 steps of l the masked body stays on AMD Zen 5: lenet1's forward (K = 9) measured 25-30 % slower there
  // through the full one (twice, whichever epilogue; not in a harness that does not write B just before, so store
  // forwarding from im2col's masked stores is the suspect). On Zen 4 the full one is faster: lenet1's forward +12 %
  // (2 threads, medians of 11 alternating runs; one thread +10 %). K = 32 and more gain on both.
  static const bool short_tiles_full = !cpu_is_amd_zen5();
  if (columns == 16 * vectors && (kc >= 16 || short_tiles_full)) {
    if constexpr (vectors == column_block / 16) {
      // A transposed (W^T) streams over its steps where B is the panel buffer or is copied into it; over a compact B
      // read in place, whose stream only prefetches, that loop (A's and B's strides both run-time values) ran
      // r50_1x1a's backward-data at 0.75x, so there it streams after its steps. So does an A with neither its rows
      // nor its columns contiguous, and a tile of fewer than two groups of prefetch_every steps.
      if (stream != nullptr && kc >= 2 * prefetch_every &&
          (acs == 1 || (ars == 1 && (stream->copy_to != nullptr || ldb == column_block)))) {
        const TileOutput out{c, ldc, bias, relu};
        const auto streamed = [&]<bool copies, bool in_place>() {
          with_epilogue<may_stream>(start, last, streams_c, [&]<Start c_start, bool last_block, bool around_cache>() {
            if (acs == 1) {
              return stream_tile<rows, c_start, last_block, around_cache, copies, in_place, false>(kc, a, ars, acs, b,
                                                                                                   ldb, out, *stream);
            }
            stream_tile<rows, c_start, last_block, around_cache, copies, in_place, true>(kc, a, ars, acs, b, ldb, out,
                                                                                         *stream);
          });
        };
        if (stream->copy_to != nullptr) return streamed.template operator()<true, true>();
        // (The panel buffer's leading dimension is column_block; a compact B of 48 columns is the same either way.)
        if (ldb != column_block) return streamed.template operator()<false, true>();
        return streamed.template operator()<false, false>();
      }
    }
    run.template operator()<true>();
  } else {
    run.template operator()<false>();
  }
  if (stream != nullptr) finish_stream(*stream, kc, b, ldb, columns);
}

// Splits `extent` into the fewest blocks of at most `most`, as equal as possible: blocks(17, 8) gives 6 + 6 + 5
// rather than 8 + 8 + 1. A one-row micro-tile has 3 accumulators, too few to hide the FMA latency (lenet1's
// backward-data, then 8 + 1 rows of W^T, spent a fifth of its GEMM time in it); each entry of C is the same sum
// whichever block computes it.
struct Blocks {
  int64_t extent, count;
  Blocks(int64_t extent_, int64_t most) : extent(extent_), count((extent_ + most - 1) / most) {}
  int64_t begin(int64_t block) const { return block * extent / count; }
  int64_t size(int64_t block) const { return begin(block + 1) - begin(block); }
};

// tile_table<Tiles, columns>(rows)[r][c] = Tiles::of<r, c> for r in 1..rows, c in 1..columns (index 0 unused): a
// kernel's micro-tile for every size of C's edges, so that the last, smaller blocks take only what they need.
template <class Tiles, int row, int... column>
constexpr auto tile_table_row(std::integer_sequence<int, column...>) {
  return std::array<typename Tiles::Function, sizeof...(column) + 1>{nullptr, Tiles::template of<row, column + 1>...};
}
template <class Tiles, int columns, int... row>
constexpr auto tile_table(std::integer_sequence<int, row...>) {
  return std::array<std::array<typename Tiles::Function, columns + 1>, sizeof...(row) + 1>{
      {{}, tile_table_row<Tiles, row + 1>(std::make_integer_sequence<int, columns>())...}};
}

// micro_tiles[rows][vectors]
struct MicroTiles {
  using Function = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, int64_t,
                            Start, bool, const float*, bool, bool, const PanelStream*, const TileRun&);
  template <int rows, int vectors>
  static constexpr Function of = micro_tile<rows, vectors>;
};
constexpr auto micro_tiles =
    tile_table<MicroTiles, column_block / 16>(std::make_integer_sequence<int, max_tile_rows>());

// The row blocks of conv_gemm's C: at most row_block rows each, or max_tile_rows (see there).
Blocks gemm_row_blocks(int64_t m) {
  const bool nine = m % max_tile_rows == 0 && m <= 4 * max_tile_rows;
  return Blocks(m, nine ? max_tile_rows : row_block);
}

// Copies rows [0, kc) of B's columns [0, n) into consecutive micro-panels (kc x 48 each, read by micro_tile with
// leading dimension 48), reading each row of B once, left to right: a few long runs of memory per row rather than
// one 192-byte piece of each of kc rows per panel.
CONVGEMM_AVX512 void pack_panels(int64_t kc, int64_t n, const float* b, int64_t ldb, float* panels) {
  const int64_t full_panels = n / column_block, columns_left = n - full_panels * column_block;
  for (int64_t l = 0; l < kc; ++l) {
    const float* row = b + l * ldb;
    for (int64_t p = 0; p < full_panels; ++p) {
      float* to = panels + (p * kc + l) * column_block;
      const float* from = row + p * column_block;
#pragma GCC unroll 3
      for (int j = 0; j < 3; ++j) _mm512_storeu_ps(to + 16 * j, _mm512_loadu_ps(from + 16 * j));
    }
    if (columns_left > 0) {
      float* to = panels + (full_panels * kc + l) * column_block;
      const float* from = row + full_panels * column_block;
#pragma GCC unroll 3
      for (int j = 0; j < 3; ++j) {
        const __mmask16 mask = first_lanes(columns_left - 16 * j);
        _mm512_mask_storeu_ps(to + 16 * j, mask, _mm512_maskz_loadu_ps(mask, from + 16 * j));
      }
    }
  }
}

// A B inside a wider matrix under at most streamed_max_rows rows of A (a 1x1 convolution's image under its filters),
// or streamed_max_transposed_rows of W^T (a tile of dY, or a 1x1 convolution's whole-sample dY): one micro-panel at a
// time, K blocks outermost. The first row block reads the micro-panel in place and stores each row it loads into the
// panel buffer, which the other row blocks then read (from L1 and L2, with the buffer's one stride rather than the
// image's, whose rows are thousands of bytes apart); without a panel buffer (reads_panels_in_place: a deep
// micro-panel under few row blocks) every row block reads it in place. Meanwhile every row block asks for its share
// of the next micro-panel's rows, one every prefetch_every steps, so that B streams from memory while the FMAs run
// and the in-place reads find it in cache. The last micro-panel asks for the first of the caller's
// next GEMM (next_b). r50_1x1a's forward GEMM alone, one thread: 166 -> 200 GFLOP/s against copying the next
// micro-panel in a share of rows per row block, with separate loads, its rows asked into L2 three micro-panels ahead
// and into L1 three rows ahead of the copy (/tmp harnesses; 200-217 with the micro-panel already packed in L2).
void multiply_streamed_panels(int64_t n, int64_t k, const float* a, int64_t ars, int64_t acs, const float* b,
                              int64_t ldb, float* c, int64_t ldc, const GemmEpilogue& epilogue, float* panel_buffer,
                              const Blocks& row_blocks, const float* next_b) {
  const int64_t panels_per_block = (n + column_block - 1) / column_block;
  const int64_t panel_count = (k + stream_depth_block - 1) / stream_depth_block * panels_per_block;
  struct Panel {
    const float* b = nullptr;  // its first row and column in B
    int64_t l0 = 0, kc = 0, j0 = 0, columns = 0;
  };
  const auto panel = [&](int64_t index) {
    if (index >= panel_count) {  // the first of the next GEMM's, or none
      return next_b == nullptr ? Panel{} : Panel{next_b, 0, std::min(stream_depth_block, k), 0, column_block};
    }
    const int64_t l0 = index / panels_per_block * stream_depth_block, j0 = index % panels_per_block * column_block;
    return Panel{b + l0 * ldb + j0, l0, std::min(stream_depth_block, k - l0), j0, std::min(column_block, n - j0)};
  };
  for (int64_t index = 0; index < panel_count; ++index) {
    const Panel current = panel(index), next = panel(index + 1);
    const Start start = current.l0 == 0 && !epilogue.accumulate ? Start::fresh : Start::from_c;
    const bool last = current.l0 + current.kc == k;
    for (int64_t i = 0; i < row_blocks.count; ++i) {
      // Row block i's share of the next micro-panel's rows: [i * kc / count, (i + 1) * kc / count).
      const int64_t prefetch_begin = i * next.kc / row_blocks.count;
      const int64_t prefetch_end = (i + 1) * next.kc / row_blocks.count;
      // The first row block copies the micro-panel for the others where there is a buffer; without one, all read it
      // in place.
      const bool in_place = i == 0 || panel_buffer == nullptr;
      const PanelStream stream{.copy_to = i == 0 ? panel_buffer : nullptr,
                               .prefetch_from = next.b == nullptr ? nullptr : next.b + prefetch_begin * ldb,
                               .prefetch_rows = prefetch_end - prefetch_begin,
                               .ldb = ldb};
      const int64_t i0 = row_blocks.begin(i), rows = row_blocks.size(i);
      micro_tiles[rows][(current.columns + 15) / 16](current.kc, a + i0 * ars + current.l0 * acs, ars, acs,
                                                     in_place ? current.b : panel_buffer, in_place ? ldb : column_block,
                                                     c + i0 * ldc + current.j0, ldc, current.columns, start, last,
                                                     epilogue.bias == nullptr ? nullptr : epilogue.bias + i0,
                                                     epilogue.relu, epilogue.non_temporal, &stream, TileRun{});
    }
  }
}

// Blocks of K outermost (C is finished by the last one).
// A compact B (a column tile) is read in place: blocks of rows of A small enough for L2 (backward-data's W^T has up
// to C*R*S rows), then column blocks, then row blocks, so that each B micro-panel is loaded into L1 once and used by
// every row block of the A block, which stays in L2 while the column blocks pass. Forward's GEMM (A = W, not
// transposed) takes all of its K (up to max_inner) as one block instead: its micro-panels then come from L2 (the
// column tile is there) for every row block, but C is written once rather than once per 128 rows of K, and that
// wins: forward of batch-1 r50_3x3b (K = 1152) +8-10 %, alex_g2 (1200) +3-10 %, lenet2 (288) +5-8 %, vgg_1_2
// (576) +5-8 %, r50_3x3a (576) +3-6 %, r50_3x3b +5 %, r50_c1 (147) level to +5 % (2 threads, medians of 3-7
// alternating runs, in two A/Bs). Not for backward-data's W^T over a deep dY (r50_3x3d, K = 512: 0.95x).
// A B inside a wider matrix (a 1x1 convolution's image, dY) is copied into micro-panels first: under a short A (see
// packs_panel_at_a_time) by multiply_streamed_panels, one micro-panel at a time (or not copied at all, see
// reads_panels_in_place). Taller A (backward-data's W^T, hundreds of rows: level to -5 % one panel at a time, the
// micro-panel's C no longer in L1) packs the whole K block (it stays in L2), and then row blocks are outermost: each
// 8-row block of C is written left to right, a few long runs, instead of every row of C taking a 192-byte piece per
// panel. A compact B under a short W^T deeper than one K block (a 1x1 convolution's whole-sample dY under at most 64
// channels) streams too: read in place one K block of 128 rows at a time, C (dx) was written, read back and written
// again. ResNet-50's 64 <- 256 channels at 56x56, backward-
// data: +8-10 % (2 threads, medians of 15 calls, three rounds of both; 0.92x in a harness whose buffers were exact
// page multiples, which no other layout repeated).
// Without a panel buffer (a tile narrower than a micro-panel under a tight workspace cap, tiles of several samples), a
// B inside a wider matrix that is not streamed in place is read in place by every row block, in the K blocks the
// panel loops would take. (Every K block after the first starts from C, so C gets the sums of one pass in any case.)
void conv_gemm_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t ars, int64_t acs, const float* b,
                      int64_t ldb, float* c, int64_t ldc, const GemmEpilogue& epilogue, float* panels,
                      const float* next_b) {
  const bool transposed = acs != 1;  // backward-data's W^T
  const bool compact = b_is_compact(n, ldb);
  const Blocks row_blocks = gemm_row_blocks(m);
  const bool streams_in_place = reads_panels_in_place(m, k, transposed);
  if (streams_panels(m, k, transposed, compact) && (panels != nullptr || streams_in_place)) {
    return multiply_streamed_panels(n, k, a, ars, acs, b, ldb, c, ldc, epilogue, streams_in_place ? nullptr : panels,
                                    row_blocks, next_b);
  }
  const bool pack = !compact && panels != nullptr;
  const bool one_pass = compact && !transposed;  // forward's W over a column tile
  const bool stands_in_for_stream = !compact && !pack && packs_panel_at_a_time(m, transposed);
  const int64_t depth_block = one_pass ? k : stands_in_for_stream ? stream_depth_block : k_block;
  const int64_t full_panels = n / column_block, full_columns = full_panels * column_block;
  for (int64_t l0 = 0; l0 < k; l0 += depth_block) {
    const int64_t kc = std::min(depth_block, k - l0);
    const Start start = l0 == 0 && !epilogue.accumulate ? Start::fresh : compact ? Start::add_after : Start::from_c;
    const bool last = l0 + kc == k;
    // Micro-tiles from row block i and column j0 on, `run` of them in one call.
    const auto tiles = [&](int64_t i, int64_t j0, const float* b_tile, int64_t b_ld, const TileRun& run,
                           const PanelStream* stream = nullptr) {
      const int64_t i0 = row_blocks.begin(i), rows = row_blocks.size(i);
      const int64_t columns = std::min(column_block, n - j0);
      micro_tiles[rows][(columns + 15) / 16](
          kc, a + i0 * ars + l0 * acs, ars, acs, b_tile, b_ld, c + i0 * ldc + j0, ldc, columns, start, last,
          epilogue.bias == nullptr ? nullptr : epilogue.bias + i0, epilogue.relu, epilogue.non_temporal, stream, run);
    };
    // Row block i across all of B: its full micro-panels (each panel_step further on) in one call, then the ragged
    // edge.
    const auto row_of_tiles = [&](int64_t i, const float* b_block, int64_t b_ld, int64_t panel_step) {
      if (full_panels > 0) {
        tiles(i, 0, b_block, b_ld, {.count = full_panels, .b_step = panel_step, .c_step = column_block});
      }
      if (full_columns < n) tiles(i, full_columns, b_block + full_panels * panel_step, b_ld, {});
    };
    if (pack) {
      pack_panels(kc, n, b + l0 * ldb, ldb, panels);
      for (int64_t i = 0; i < row_blocks.count; ++i) row_of_tiles(i, panels, column_block, kc * column_block);
      continue;
    }
    // One row block (the order is the same) or a B that stays in L1: row block by row block, across all of B.
    if (row_blocks.count == 1 || kc * n * int64_t{sizeof(float)} <= l1_resident_b_bytes) {
      for (int64_t i = 0; i < row_blocks.count; ++i) row_of_tiles(i, b + l0 * ldb, ldb, column_block);
      continue;
    }
    // With a next_b, B streams from memory (a 1x1 convolution's whole-sample dY): every row block asks for its share
    // of the next micro-panel's rows, which the first row block will read there (r50_1x1a's backward-data +6 %,
    // medians of 7 alternating runs). There a full micro-panel under row blocks of 8 rows each (no bias: backward-
    // data's W^T) runs in one call, the shares asked for between its tiles: r50_1x1a's backward-data +6.5 % (398 ->
    // 424 GFLOP/s, medians of 5 alternating runs; a /tmp harness 400 -> 428; one call without the shares between
    // the tiles +2 %). (A run of row blocks everywhere measured 0.95-1.05x by shape, so the other GEMMs keep one call
    // per micro-tile.)
    const bool runs_row_blocks = next_b != nullptr && m % row_block == 0 && epilogue.bias == nullptr;
    for (int64_t r0 = 0; r0 < row_blocks.count; r0 += a_row_blocks) {
      const int64_t r_end = std::min(row_blocks.count, r0 + a_row_blocks);
      for (int64_t j0 = 0; j0 < n; j0 += column_block) {
        const float* next_panel = j0 + column_block < n ? b + l0 * ldb + j0 + column_block
                                  : l0 + kc < k         ? b + (l0 + kc) * ldb
                                                        : next_b;
        if (runs_row_blocks && j0 + column_block <= n) {
          const PanelStream stream{
              .prefetch_from = next_panel, .prefetch_rows = next_panel == nullptr ? 0 : kc, .ldb = ldb};
          tiles(r0, j0, b + l0 * ldb + j0, ldb,
                {.count = r_end - r0, .c_step = row_block * ldc, .a_step = row_block * ars, .prefetch = &stream});
          continue;
        }
        for (int64_t i = r0; i < r_end; ++i) {
          const int64_t begin = (i - r0) * kc / (r_end - r0), end = (i - r0 + 1) * kc / (r_end - r0);
          const PanelStream stream{.prefetch_from = next_panel == nullptr ? nullptr : next_panel + begin * ldb,
                                   .prefetch_rows = next_panel == nullptr ? 0 : end - begin,
                                   .ldb = ldb};
          tiles(i, j0, b + l0 * ldb + j0, ldb, {}, next_b != nullptr ? &stream : nullptr);
        }
      }
    }
  }
}

// --- backward-weights: C (+)= A * B^T ---------------------------------------------------------------------------
// Both operands hold the reduction (pixels) contiguously. Two kernels (weight_gemm picks):
// - the dot kernel: each micro-tile is a block of dot products, 16 pixels per step in every accumulator, one
//   horizontal sum per entry of C at the end of a K block. Rows of A (dY) are re-read from L1 by every micro-tile of
//   their row block; rows of B (the column tile) stream from L2. Best where C is narrow (few columns of dW).
// - the panel kernel: B^T is packed, 16 x 16 blocks transposed in registers, into the micro-panels the forward
//   GEMM's micro-tiles read, and those run with A's rows broadcast. Best for tall and wide C (dW of many filters).
constexpr int64_t dot_rows = 6;        // rows of A per micro-tile
constexpr int64_t dot_columns = 4;     // rows of B (columns of C) per micro-tile
// Rows of A per micro-tile where C's column blocks are at most 3 wide (n = 5 or 6: 3 + 2, 3 + 3): 8 x 3 accumulators
// instead of 6 x 3. Measured on lenet1's n = 9 (3 + 3 + 3) before the wide tiles below took it: 119 -> 143 GFLOP/s
// for its 32 x 9 x 784 GEMM (one thread, /tmp harness), its weight gradient +4 % (medians of 6 alternating pairs).
// Where 4-wide blocks are possible 6 x 4 stays ahead of 8 x 3 (r50_3x3a's 64 x 576: 160 against 131). Each entry of
// C is the same sum either way.
constexpr int64_t dot_rows_narrow = 8;
// ...except that a C of exactly 9 columns (the dW of a one-channel 3 x 3 filter: lenet1) runs in 3 x 9 micro-tiles
// (27 accumulators; the step holds A's 3 rows and streams B's 9), so that each row of A (dY, streamed from memory)
// is read by one micro-tile instead of three: lenet1's weight gradient +12-14 % (medians of 5-7 alternating runs, 2
// threads). Other widths lost in 3-row tiles (8 columns 0.92x, 6 columns 0.85x, 147 columns 0.91x).
constexpr int64_t wide_dot_rows = 3;
constexpr int64_t wide_dot_columns = 9;
constexpr int64_t dot_k_block = 1024;  // 6 (or 8) rows of A x 4 KiB: the A block stays in L1
constexpr int64_t max_dot_rows = 64;   // see weight_gemm and uses_weight_panels
// The panel kernel takes C of more than 64 rows and at least four micro-panels of columns (see weight_gemm_panels):
// narrower C fills too little of the 48-column micro-tile. The dot kernel takes the rest.
constexpr int64_t panel_min_columns = 4 * column_block;
constexpr bool uses_weight_panels(int64_t m, int64_t n) { return m > max_dot_rows && n >= panel_min_columns; }
constexpr int64_t dot_b_block_bytes = 512 << 10;
// Where B is read in place from a wider matrix (a 1x1 convolution's image, streamed from memory), the first row
// block of A asks for the rows of B this many column blocks ahead, a line of each row per step: otherwise that first
// pass over B waits on memory, four new row streams per column block, more than the hardware prefetchers take up in
// time. r50_1x1a's weight gradient +5-6 % (1 block ahead +3 %, 4 blocks +4 %; asking for the next row block's rows
// of A as well, +1 %, was left out; 2 threads, medians of 7 alternating runs of one binary with a toggle).
constexpr int64_t dot_prefetch_blocks = 2;
// The depth the panel kernel multiplies per pass (see weight_gemm_panels).
constexpr int64_t weight_panel_depth(int64_t k) { return std::min(k, max_inner); }

// One step of a dot micro-tile: 16 pixels (the lanes of mask) of every row of A against every row of B. One
// operand's vectors are loaded first and held while the other's stream past: B's (the usual tiles, more rows than
// columns), or A's (holds_a: the wide tiles).
template <int rows, int columns, bool holds_a>
CONVGEMM_AVX512 inline void dot_step(__m512 (&acc)[rows][columns], const float* a, int64_t lda, const float* b,
                                     int64_t ldb, __mmask16 mask) {
  constexpr int held = holds_a ? rows : columns, streamed = holds_a ? columns : rows;
  const float* const held_rows = holds_a ? a : b;
  const float* const streamed_rows = holds_a ? b : a;
  const int64_t held_ld = holds_a ? lda : ldb, streamed_ld = holds_a ? ldb : lda;
  __m512 held_vectors[held];
#pragma GCC unroll 9
  for (int h = 0; h < held; ++h) held_vectors[h] = _mm512_maskz_loadu_ps(mask, held_rows + h * held_ld);
#pragma GCC unroll 9
  for (int t = 0; t < streamed; ++t) {
    __m512 vector = _mm512_maskz_loadu_ps(mask, streamed_rows + t * streamed_ld);
    // Held in a register: otherwise GCC folds the load into each of the `held` FMAs and the step becomes load-bound
    // (27 loads instead of 11 for 24 FMAs, measured 40 % slower).
    asm("" : "+v"(vector));
#pragma GCC unroll 9
    for (int h = 0; h < held; ++h) {
      __m512& sum = holds_a ? acc[h % rows][t % columns] : acc[t % rows][h % columns];
      sum = _mm512_fmadd_ps(vector, held_vectors[h], sum);
    }
  }
}

// The sums of the 16 lanes of four vectors, as the four lanes of one: two rounds of unpack-and-add leave every
// 128-bit block holding its part of all four sums, two rounds of block shuffles add the blocks. (Masked forms with
// every lane set: GCC 12's unmasked ones warn about their own undefined temporaries.)
CONVGEMM_AVX512 inline __m128 sum_lanes4(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  constexpr __mmask16 all = 0xFFFF;
  const __m512 s01 = _mm512_add_ps(_mm512_mask_unpacklo_ps(v0, all, v0, v1), _mm512_mask_unpackhi_ps(v0, all, v0, v1));
  const __m512 s23 = _mm512_add_ps(_mm512_mask_unpacklo_ps(v2, all, v2, v3), _mm512_mask_unpackhi_ps(v2, all, v2, v3));
  __m512 s = _mm512_add_ps(_mm512_mask_shuffle_ps(s01, all, s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_mask_shuffle_ps(s01, all, s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  s = _mm512_add_ps(s, _mm512_mask_shuffle_f32x4(s, all, s, s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_add_ps(s, _mm512_mask_shuffle_f32x4(s, all, s, s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_mask_extractf32x4_ps(_mm_setzero_ps(), 0xF, s, 0);
}

// C[rows x columns] (+)= A[rows x kc] * B[columns x kc]^T; `add` adds to the C already there. prefetch_b: the first
// of dot_columns rows of B (ldb apart) to ask for into L1 alongside, or null (see dot_prefetch_blocks).
template <int rows, int columns, bool holds_a = false>
CONVGEMM_AVX512 void dot_tile(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                              int64_t ldc, bool add, const float* prefetch_b) {
  __m512 acc[rows][columns];
#pragma GCC unroll 8
  for (int i = 0; i < rows; ++i)
#pragma GCC unroll 9
    for (int j = 0; j < columns; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t l = 0;
  // (Not in the wide tiles, whose 27 accumulators leave no registers for it: lenet1's weight gradient 0.95x.)
  if (!holds_a && prefetch_b != nullptr) {
    for (; l + 16 <= kc; l += 16) {
#pragma GCC unroll 4
      for (int t = 0; t < dot_columns; ++t) {
        _mm_prefetch(reinterpret_cast<const char*>(prefetch_b + t * ldb + l), _MM_HINT_T0);
      }
      dot_step<rows, columns, holds_a>(acc, a + l, lda, b + l, ldb, 0xFFFF);
    }
  }
  for (; l + 16 <= kc; l += 16) dot_step<rows, columns, holds_a>(acc, a + l, lda, b + l, ldb, 0xFFFF);
  if (l < kc) dot_step<rows, columns, holds_a>(acc, a + l, lda, b + l, ldb, first_lanes(kc - l));
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < rows; ++i) {
    float* c_row = c + i * ldc;
    // Four columns at a time (j0 and the indices modulo columns are constants once unrolled).
#pragma GCC unroll 3
    for (int j0 = 0; j0 < columns; j0 += 4) {
      const int left = columns - j0;
      __m128 sums =
          sum_lanes4(acc[i][j0], left > 1 ? acc[i][(j0 + 1) % columns] : zero,
                     left > 2 ? acc[i][(j0 + 2) % columns] : zero, left > 3 ? acc[i][(j0 + 3) % columns] : zero);
      if (left >= 4) {
        if (add) sums = _mm_add_ps(sums, _mm_loadu_ps(c_row + j0));
        _mm_storeu_ps(c_row + j0, sums);
      } else {
        alignas(16) float lanes[4];
        _mm_store_ps(lanes, sums);
#pragma GCC unroll 4
        for (int j = 0; j < left; ++j) c_row[j0 + j] = add ? c_row[j0 + j] + lanes[j] : lanes[j];
      }
    }
  }
}

// dot_tiles[rows][columns]
struct DotTiles {
  using Function = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, bool, const float*);
  template <int rows, int columns>
  static constexpr Function of = dot_tile<rows, columns>;
};
constexpr auto dot_tiles = tile_table<DotTiles, dot_columns>(std::make_integer_sequence<int, dot_rows_narrow>());
// wide_dot_tiles[rows]: rows x wide_dot_columns
constexpr std::array<DotTiles::Function, wide_dot_rows + 1> wide_dot_tiles = {
    nullptr, dot_tile<1, wide_dot_columns, true>, dot_tile<2, wide_dot_columns, true>,
    dot_tile<3, wide_dot_columns, true>};

void weight_gemm_dot(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                     float* c, int64_t ldc, bool accumulate) {
  const bool wide = n == wide_dot_columns;  // one column block
  const Blocks column_blocks(n, wide ? wide_dot_columns : dot_columns);
  const bool narrow = (n + column_blocks.count - 1) / column_blocks.count < dot_columns;  // every block <= 3 wide
  const Blocks row_blocks(m, wide ? wide_dot_rows : narrow ? dot_rows_narrow : dot_rows);
  const bool b_in_place = ldb - k > conv_gemm_row_padding;  // not a column tile: see dot_prefetch_blocks
  for (int64_t l0 = 0; l0 < k; l0 += dot_k_block) {
    const int64_t kc = std::min(dot_k_block, k - l0);
    const bool add = accumulate || l0 > 0;
    // Column blocks in groups whose rows of B (kc pixels each) take at most dot_b_block_bytes, each group passed
    // over by every row block of A while it stays in L2 (all of B at once is 1 MiB for r50_3x3a's 576 x 448 tile, 1.2
    // MiB for vgg_1_2's): r50_3x3a's weight gradient +4 %, vgg_1_2's +5 %, the others level (8 alternating pairs).
    // Each entry of C is the same sum in the same order.
    const int64_t group = std::max<int64_t>(1, dot_b_block_bytes / (kc * dot_columns * int64_t{sizeof(float)}));
    for (int64_t j_begin = 0; j_begin < column_blocks.count; j_begin += group) {
      const int64_t j_end = std::min(column_blocks.count, j_begin + group);
      for (int64_t i = 0; i < row_blocks.count; ++i) {
        const int64_t i0 = row_blocks.begin(i), rows = row_blocks.size(i);
        for (int64_t j = j_begin; j < j_end; ++j) {
          const int64_t j0 = column_blocks.begin(j), columns = column_blocks.size(j);
          const auto tile = wide ? wide_dot_tiles[rows] : dot_tiles[rows][columns];
          const int64_t ahead = j + dot_prefetch_blocks;
          const float* prefetch_b =
              b_in_place && i == 0 && ahead < j_end ? b + column_blocks.begin(ahead) * ldb + l0 : nullptr;
          tile(kc, a + i0 * lda + l0, lda, b + j0 * ldb + l0, ldb, c + i0 * ldc + j0, ldc, add, prefetch_b);
        }
      }
    }
  }
}

// Transposes the 16 x 16 block r (row i becomes column i): unpacks pair rows, shuffles gather 4 x 4 blocks within
// each 128-bit lane, then two rounds of 128-bit lane shuffles put the blocks in place.
CONVGEMM_AVX512 inline void transpose16(__m512 (&r)[16]) {
  constexpr __mmask16 all = 0xFFFF;  // masked forms, as in sum_lanes4
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_mask_unpacklo_ps(r[i], all, r[i], r[i + 1]);
    t[i + 1] = _mm512_mask_unpackhi_ps(r[i], all, r[i], r[i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_mask_shuffle_ps(t[i], all, t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_mask_shuffle_ps(t[i], all, t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_mask_shuffle_ps(t[i + 1], all, t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_mask_shuffle_ps(t[i + 1], all, t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // Lanes 0 and 2 (0x88) or 1 and 3 (0xDD) of the first operand, then of the second.
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_mask_shuffle_f32x4(r[i], all, r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_mask_shuffle_f32x4(r[i], all, r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_mask_shuffle_f32x4(r[i + 8], all, r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_mask_shuffle_f32x4(r[i + 8], all, r[i + 8], r[i + 12], 0xDD);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_mask_shuffle_f32x4(t[i], all, t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_mask_shuffle_f32x4(t[i], all, t[i], t[i + 8], 0xDD);
  }
}

// Packs B[columns x kc]^T (columns <= 48 rows of B, kc <= max_inner of their entries) into one kc x 48 micro-panel,
// 16 x 16 blocks at a time. Lanes past `columns` are zero; micro_tile's masks do not read them anyway.
CONVGEMM_AVX512 void pack_transposed_panel(int64_t kc, int64_t columns, const float* b, int64_t ldb, float* panel) {
  for (int64_t j = 0; j < columns; j += 16) {
    const int64_t rows = std::min<int64_t>(16, columns - j);
    for (int64_t l = 0; l < kc; l += 16) {
      const __mmask16 mask = first_lanes(kc - l);
      __m512 block[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        block[i] = i < rows ? _mm512_maskz_loadu_ps(mask, b + (j + i) * ldb + l) : _mm512_setzero_ps();
      }
      transpose16(block);
      const int64_t steps = std::min<int64_t>(16, kc - l);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        if (i < steps) _mm512_storeu_ps(panel + (l + i) * column_block + j, block[i]);
      }
    }
  }
}

// Micro-panels outermost, each packed into the buffer and used by every row block of A, over all of K (a tile's
// pixels, up to max_inner) at once: C (a partial dW, up to hundreds of KiB) is then loaded and stored once per call
// rather than once per 128 pixels, while the panel (K x 48 floats) comes from L2 instead of L1: weight gradient of
// alex_g2 +4-11 %, r50_3x3d +6-8 %, batch-1 r50_3x3b +1-8 %, r50_3x3c +2-7 %, r50_3x3b level (2 threads, medians
// of 5 alternating runs, one binary with a toggle and then the old against the new library; K blocks of 256
// gained half as much). It replaces OpenBLAS past 64 rows of dW, where the dot kernel is slower
// too (weight_gemm): r50_3x3b's weight gradient +13 %, alex_g2 +16 %, r50_3x3c +7 %, the batch-1 r50_3x3b +6 %,
// r50_3x3d level (medians of 6 alternating pairs, 2 threads). At 64 rows it lost to the dot kernel in the
// convolution (same binary, 6 alternating runs: r50_1x1a 0.70x, vgg_1_2 0.86x, lenet2 and r50_3x3a 0.95x; the
// transposing copy weighs twice as much per FLOP there), though a one-thread harness had it 13-20 % ahead.
void weight_gemm_panels(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                        float* c, int64_t ldc, bool accumulate, float* panel) {
  const Blocks row_blocks(m, row_block);
  const int64_t depth_block = weight_panel_depth(k);
  for (int64_t l0 = 0; l0 < k; l0 += depth_block) {
    const int64_t kc = std::min(depth_block, k - l0);
    const Start start = l0 == 0 && !accumulate ? Start::fresh : Start::add_after;
    for (int64_t j0 = 0; j0 < n; j0 += column_block) {
      const int64_t columns = std::min(column_block, n - j0);
      pack_transposed_panel(kc, columns, b + j0 * ldb + l0, ldb, panel);
      for (int64_t i = 0; i < row_blocks.count; ++i) {
        const int64_t i0 = row_blocks.begin(i), rows = row_blocks.size(i);
        micro_tiles[rows][(columns + 15) / 16](kc, a + i0 * lda + l0, lda, 1, panel, column_block, c + i0 * ldc + j0,
                                               ldc, columns, start, /*last=*/false, nullptr, false, false, nullptr,
                                               TileRun{});
      }
    }
  }
}
#endif

}  // namespace

int64_t conv_gemm_panel_floats(Transpose transpose_a, int64_t m, int64_t n, int64_t k, int64_t ldb) {
  constexpr int64_t panel = conv_gemm_column_block;
#ifdef CONVGEMM_HAVE_AVX512
  static_assert(panel == column_block);
  // A short A streams one micro-panel at a time (see multiply_streamed_panels), a taller one packs a K block of all
  // of B: for a B of one micro-panel the shorter A needs the larger buffer (256 rows deep against 128), and a caller
  // that sizes one buffer for blocks of A of several heights (backward-data's channel blocks, 8 and 7 channels of a
  // 3 x 3 filter: 72 and 63 rows) passes the tallest, so the size covers every height up to m. A compact B needs
  // none unless it streams.
  const bool transposed = transpose_a == Transpose::yes, compact = b_is_compact(n, ldb);
  const int64_t streamed = std::min(k, stream_depth_block) * panel;
  if (streams_panels(m, k, transposed, compact)) return reads_panels_in_place(m, k, transposed) ? 0 : streamed;
  if (compact) return 0;
  return std::max(streamed, std::min(k, k_block) * ((n + panel - 1) / panel) * panel);
#else
  return 0;
#endif
}

int64_t conv_gemm_max_transposed_rows(int64_t k) {
#ifdef CONVGEMM_HAVE_AVX512
  if (use_avx512_kernels() && k > k_block) return max_transposed_rows;
#endif
  return std::numeric_limits<int64_t>::max();
}

void conv_gemm(Transpose transpose_a, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* c, int64_t ldc, GemmEpilogue epilogue, float* panels, const float* next_b) {
#ifdef CONVGEMM_HAVE_AVX512
  // Where OpenBLAS's packed kernels are faster (measured), they run instead: on backward-data's W^T beyond 512 rows
  // over more than one K block (the C tile no longer stays in cache across K blocks, r50_3x3c 298 against 244; its
  // K blocks innermost for each block of rows of A only drew level with OpenBLAS; the convolution plans split their
  // channels to stay within it instead, see conv_gemm_max_transposed_rows), and past 2048 along K, where C is
  // revisited by 16+ K blocks and OpenBLAS's deeper packed blocks win (r50_3x3d forward, K = 4608: 278 against 244).
  // Over one K block (K = out_channels <= 128) C is written once, and the kernel wins at any height: backward-data
  // of r50_3x3a (576 rows) +9 %, vgg_1_2 (576) +7 %, alex_g2 (1200) +8 %, r50_3x3b (1152) +5 % (medians of 8
  // alternating pairs).
  const bool transposed = transpose_a == Transpose::yes;
  const bool kernel_fits = k <= max_inner && (!transposed || m <= conv_gemm_max_transposed_rows(k));
  if (use_avx512_kernels() && kernel_fits) {
    // a(i, l) = a[i * row_stride + l * column_stride]
    conv_gemm_avx512(m, n, k, a, transposed ? 1 : lda, transposed ? lda : 1, b, ldb, c, ldc, epilogue, panels,
                     next_b);
    // Non-temporal stores are weakly ordered: fenced here, so that C is in memory before whatever the caller does
    // next (another thread may read it once this task ends).
    if (epilogue.non_temporal) _mm_sfence();
    return;
  }
#endif
  sgemm(transpose_a, Transpose::no, m, n, k, 1.0f, a, lda, b, ldb, epilogue.accumulate ? 1.0f : 0.0f, c, ldc);
  if (epilogue.bias != nullptr || epilogue.relu) {
    for (int64_t i = 0; i < m; ++i) {
      add_bias_in_place(c + i * ldc, n, epilogue.bias == nullptr ? 0.0f : epilogue.bias[i], epilogue.relu);
    }
  }
}

int64_t weight_gemm_panel_floats(int64_t m, int64_t n, int64_t k) {
#ifdef CONVGEMM_HAVE_AVX512
  if (uses_weight_panels(m, n)) return weight_panel_depth(k) * column_block;
#endif
  return 0;
}

void weight_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                 int64_t ldc, bool accumulate, float* panel) {
#ifdef CONVGEMM_HAVE_AVX512
  if (use_avx512_kernels() && uses_weight_panels(m, n) && panel != nullptr) {
    weight_gemm_panels(m, n, k, a, lda, b, ldb, c, ldc, accumulate, panel);
    return;
  }
  // The dot kernel streams B from L2 once per 6 rows of A. Up to 64 rows it is faster than OpenBLAS (lenet2 and
  // r50_3x3a: 179 / 227 against 162 / 213 GFLOP/s) and than the panel kernel (weight_gemm_panels); past 64 rows
  // OpenBLAS's packed B was faster on wide C (r50_3x3c: 230 against 267; the panel kernel now takes it), but not on
  // C narrower than the panel kernel takes, where the dot kernel stays: 2 threads, weight gradients of 16 images
  // of 56 x 56, 128 filters over 3 channels of 7 x 7 (147 columns) +13 %, 256 filters over 3 channels of 3 x 3
  // (27 columns) +57 %, 128 filters over one channel +20-40 %, over 16 channels (144 columns) +3 % (/tmp/mb/pw_bench,
  // same binary, alternating runs).
  if (use_avx512_kernels() && !uses_weight_panels(m, n)) {
    weight_gemm_dot(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    return;
  }
#endif
  sgemm(Transpose::no, Transpose::yes, m, n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
}

const char* conv_gemm_kernel() { return use_avx512_kernels() ? "convgemm AVX-512" : "OpenBLAS"; }

}  // namespace convgemm::kernels
