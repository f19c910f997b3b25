// The GEMM of the forward and backward-data convolutions: C[m x n] = A[m x k] * B[k x n] (or C += that), then a
// per-row bias and a ReLU. A is the (small) filter matrix, read in place as W or W^T through its
// leading dimension; B is a column tile or a dY tile, row-major with leading dimension ldb; C row-major.
//
// Why not OpenBLAS alone: these GEMMs have m = 32..512 rows against thousands of columns, where OpenBLAS spends a good
// part of its time packing both operands, and a bias or ReLU costs it another pass over C. convgemm's own AVX-512
// kernel (8 rows x 48 columns of accumulators in registers, the epilogue applied in registers before the one store)
// runs these shapes faster up to K = 2048. It reads a compact B (a column tile, see conv_gemm_row_padding) in place; a
// B that is part of a wider matrix (a 1x1 convolution's image, a tile of dY) is first copied into the caller's panel
// buffer: under at most 256 rows of W or 64 of W^T one micro-panel at a time, by the first row block's micro-tile as
// it reads it in place (one buffer), else one K block at a time; except under at most 128 rows of W over K >= 128,
// where every row block reads each micro-panel in place (no buffer: the copy cost more than it saved). Deeper K, and
// backward-data beyond 512 rows of W^T over more than one K block, stay with OpenBLAS (faster there, see
// conv_gemm.cpp); forward lowers deeper column matrices in blocks of at most conv_gemm_depth_block rows and adds the
// blocks' products. CPUs without AVX-512 F get OpenBLAS and a separate epilogue pass; so does everything when
// CONVGEMM_KERNELS=portable is set in the environment (the tests run both).
#pragma once

#include "kernels/gemm.hpp"

#include <cstdint>

namespace convgemm::kernels {

struct GemmEpilogue {
  const float* bias = nullptr;  // one value per row of C, or none
  bool relu = false;            // max(c, 0), 0 for NaN (relu_forward's definition)
  bool accumulate = false;      // C += A * B (the bias and ReLU still apply to the sum)
  // C is not read again soon (the caller's output, larger than the caches): the AVX-512 kernel writes it around the
  // cache, with non-temporal stores, where it writes C in one pass (k within one block, no accumulate) and C's rows
  // and micro-tiles start on 64-byte boundaries; elsewhere, and on OpenBLAS, it is an ordinary store. Same values.
  bool non_temporal = false;
};

// The columns of C one micro-tile of the kernel covers: a GEMM whose n is a multiple of it has no ragged edge.
inline constexpr int64_t conv_gemm_column_block = 48;
// The rows of C one micro-tile covers (most GEMMs; see conv_gemm.cpp): a block of A's rows that is a multiple of it
// has no thinner micro-tile.
inline constexpr int64_t conv_gemm_row_block = 8;

// A B whose rows are at most this many floats longer than n (a column tile or gathered dY whose rows are padded to
// whole cache lines) counts as compact: it is read in place. A B read from a wider matrix (a 1x1 convolution's
// image, a tile of dY) is copied into panels first, where the caller gives a panel buffer.
inline constexpr int64_t conv_gemm_row_padding = 15;

// The rows of B (the depth, K) the kernel multiplies per pass over C: a GEMM of at most this K reads and writes C
// once. Deeper GEMMs than conv_gemm_max_depth run on OpenBLAS (see conv_gemm.cpp).
inline constexpr int64_t conv_gemm_depth_block = 128;
inline constexpr int64_t conv_gemm_max_depth = 2048;

// The most rows of a transposed A (backward-data's W^T) over depth k that conv_gemm runs on its AVX-512 kernel
// (taller ones run on OpenBLAS): any number over one K block, 512 beyond, where C is revisited. No limit where the
// kernel does not run at all (everything is OpenBLAS then, so no height gains from being split).
int64_t conv_gemm_max_transposed_rows(int64_t k);

// The floats of the panel buffer conv_gemm uses for an op(A) of up to m rows and a k x n B with leading dimension
// ldb: for a B read from a wider matrix, and for a compact one under a W^T of at most 64 rows deeper than one K
// block (a 1x1 convolution's whole-sample dY, streamed too); 0 where it uses none.
int64_t conv_gemm_panel_floats(Transpose transpose_a, int64_t m, int64_t n, int64_t k, int64_t ldb);

// A is op(a) for a row-major a with leading dimension lda: a itself, or its transpose (W^T for backward-data).
// panels: conv_gemm_panel_floats(transpose_a, m, n, k, ldb) floats of scratch, or null (without them, a B that is not
// compact is read in place, slower where it spans several micro-panels, with the same sums). next_b: the B of the
// caller's next GEMM (same k and ldb) where B comes from memory (a 1x1 convolution's image or dY), else null; such a
// GEMM asks for each next micro-panel of its B, and during its last one for the first of next_b, to be brought into
// cache while it multiplies. Only a hint.
void conv_gemm(Transpose transpose_a, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* c, int64_t ldc, GemmEpilogue epilogue = {}, float* panels = nullptr,
               const float* next_b = nullptr);

// The floats of the panel buffer weight_gemm needs for C[m x n] over depth k (0 where it needs none).
int64_t weight_gemm_panel_floats(int64_t m, int64_t n, int64_t k);

// C[m x n] = A[m x k] * B[n x k]^T, or C += that when accumulate: backward-weights' dY * im2col(x)^T, both operands
// row-major with the reduction (pixels) along their rows. panel: weight_gemm_panel_floats(m, n, k) floats of scratch
// (without them, a GEMM that would use them runs on OpenBLAS).
void weight_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                 int64_t ldc, bool accumulate, float* panel);

// "convgemm AVX-512" or "OpenBLAS": what conv_gemm runs on this CPU.
const char* conv_gemm_kernel();

}  // namespace convgemm::kernels
