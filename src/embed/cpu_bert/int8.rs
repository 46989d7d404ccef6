//! int8 linear layers: weights quantized per output channel at load, activations per row at
//! run time (asymmetric: a scale and a zero point per row, so the one-sided GELU and attention
//! outputs use all 256 codes), products accumulated in int32 by rten-gemm's kernels (AVX-512 VNNI
//! `vpdpbusd` where the CPU has it, AVX2 `vpmaddubsw` elsewhere, picked at run time), then scaled
//! back to fp32 with the bias added.
//!
//! Why each column's scale bounds *pairs* of weights: AVX2's `vpmaddubsw` adds the u8×i8
//! products of input channels 2i and 2i+1 into an i16, which saturates above 32,767. With
//! activations in [0, 255] and |w_2i| + |w_2i+1| ≤ 128 for every pair (the scale is the largest
//! pair sum / 127, so the rounded pair sums stay ≤ 128) the pair stays below 255·128 = 32,640: no
//! kernel ever saturates and every kernel computes the same exact integers. The embeddings are
//! therefore bit-identical on AVX2 and VNNI CPUs, and the accuracy measured on one machine holds
//! on every other. Measured on the parity set (layers as in `CpuBert::load`): min cosine to fp32
//! 0.99932 with this bound; plain ±63 weights gave 0.99890, and ±127 (exact only on VNNI) 0.99953.
//!
//! Why rten-gemm rather than kernels of our own: it is a maintained crate with prepacked
//! weights, runtime dispatch and zero-point handling; measured here (AMD EPYC, AVX2, 2 threads,
//! 4,096 × 384 · 384 × 1,536) its int8 GEMM takes 18 ms against 28.7 ms for `gemm`'s fp32.

use rayon::prelude::*;
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix};
use rten_tensor::NdTensorView;

use super::{simd, ROW_BLOCK};

/// Largest sum of two paired weights' magnitudes before rounding (see the module docs).
const PAIR_LEVELS: f32 = 127.0;

thread_local! {
    /// rten-gemm's executor holds a boxed kernel that is `Sync` but not `Send`; one per thread
    /// keeps [`QuantizedMatrix`] (and so the embedder) `Send`. Creating one only checks CPU
    /// features; every thread picks the same kernel, so matrices packed on one thread are valid
    /// on all.
    static EXECUTOR: GemmExecutor<u8, i8, i32> = GemmExecutor::new();
}

/// The name of the int8 kernel rten-gemm picked on this CPU (for reports).
pub fn kernel_name() -> String {
    EXECUTOR.with(|e| e.kernel_name().to_string())
}

/// A `[in, out]` weight matrix quantized per output column and packed for the int8 kernel.
pub struct QuantizedMatrix {
    packed: PackedBMatrix<i8>,
    /// Per output column: weight = quantized · scale.
    col_scale: Vec<f32>,
    /// Per output column: the sum of its quantized weights, for the activations' zero points.
    col_sum: Vec<i32>,
    in_dim: usize,
}

impl QuantizedMatrix {
    /// Quantize row-major `w` (`[in_dim, out_dim]`) per output column.
    pub fn new(w: &[f32], in_dim: usize, out_dim: usize) -> Self {
        assert_eq!(w.len(), in_dim * out_dim);
        // Per column: the largest |w_2i| + |w_2i+1| over the pairs of input channels.
        let mut pair_max = vec![0f32; out_dim];
        for pair in w.chunks(2 * out_dim) {
            let (first, second) = pair.split_at(out_dim);
            for (c, m) in pair_max.iter_mut().enumerate() {
                let sum = first[c].abs() + second.get(c).map_or(0.0, |v| v.abs());
                *m = m.max(sum);
            }
        }
        let col_scale: Vec<f32> = pair_max
            .iter()
            .map(|&m| if m > 0.0 { m / PAIR_LEVELS } else { 1.0 })
            .collect();
        let quantized: Vec<i8> = w
            .chunks_exact(out_dim)
            .flat_map(|row| {
                row.iter()
                    .zip(&col_scale)
                    .map(|(v, s)| (v / s).round().clamp(-PAIR_LEVELS, PAIR_LEVELS) as i8)
            })
            .collect();
        let mut col_sum = vec![0i32; out_dim];
        for row in quantized.chunks_exact(out_dim) {
            for (s, &q) in col_sum.iter_mut().zip(row) {
                *s += i32::from(q);
            }
        }
        let packed = EXECUTOR.with(|e| {
            e.prepack_b(NdTensorView::from_data(
                [in_dim, out_dim],
                quantized.as_slice(),
            ))
        });
        Self {
            packed,
            col_scale,
            col_sum,
            in_dim,
        }
    }
}

/// Buffers an int8 forward pass reuses across layers: quantized activations, their per-row
/// scales and zero points, and the int32 products.
#[derive(Default)]
pub struct Scratch {
    activations: Vec<u8>,
    row_scale: Vec<f32>,
    zero_points: Vec<u8>,
    products: Vec<i32>,
}

/// `out[rows, out_dim] = x[rows, in_dim] · w + b` through the int8 kernel.
pub fn linear(
    x: &[f32],
    rows: usize,
    w: &QuantizedMatrix,
    b: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let (in_dim, out_dim) = (w.in_dim, b.len());
    assert_eq!(w.col_scale.len(), out_dim);
    assert!(x.len() >= rows * in_dim && out.len() >= rows * out_dim);
    if rows == 0 {
        return;
    }
    let Scratch {
        activations,
        row_scale,
        zero_points,
        products,
    } = scratch;
    activations.resize(rows * in_dim, 0);
    row_scale.resize(rows, 0.0);
    zero_points.resize(rows, 0);
    products.resize(rows * out_dim, 0);
    activations
        .par_chunks_mut(in_dim * ROW_BLOCK)
        .zip(row_scale.par_chunks_mut(ROW_BLOCK))
        .zip(zero_points.par_chunks_mut(ROW_BLOCK))
        .zip(x[..rows * in_dim].par_chunks(in_dim * ROW_BLOCK))
        .for_each(|(((q, scales), zeros), x)| {
            for (((q, s), z), x) in q
                .chunks_exact_mut(in_dim)
                .zip(scales.iter_mut())
                .zip(zeros.iter_mut())
                .zip(x.chunks_exact(in_dim))
            {
                (*s, *z) = simd::quantize_row(x, q);
            }
        });
    let products = &mut products[..rows * out_dim];
    EXECUTOR.with(|e| {
        e.gemm(
            products,
            GemmInputA::Unpacked(NdTensorView::from_data(
                [rows, in_dim],
                &activations[..rows * in_dim],
            )),
            GemmInputB::Packed(&w.packed),
            // No `a_quant`: rten-gemm 0.27 applies the zero points of the first 6-row tile to
            // every later tile (checked against a naive product: rows ≥ 6 came out wrong), so
            // the zero points are subtracted in `dequantize_row` instead.
            GemmOptions::default(),
        )
        .expect("int8 gemm: shapes are checked above")
    });
    out[..rows * out_dim]
        .par_chunks_mut(out_dim * ROW_BLOCK)
        .zip(products.par_chunks(out_dim * ROW_BLOCK))
        .zip(row_scale.par_chunks(ROW_BLOCK))
        .zip(zero_points.par_chunks(ROW_BLOCK))
        .for_each(|(((out, acc), scales), zeros)| {
            for (((o, a), &s), &z) in out
                .chunks_exact_mut(out_dim)
                .zip(acc.chunks_exact(out_dim))
                .zip(scales)
                .zip(zeros)
            {
                simd::dequantize_row(a, (s, z), &w.col_sum, &w.col_scale, b, o);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix in [-amp, amp].
    fn matrix(len: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    #[test]
    fn int8_linear_tracks_fp32_and_is_exact_on_representable_values() {
        let (rows, in_dim, out_dim) = (37, 96, 80);
        let x = matrix(rows * in_dim, 1, 2.0);
        let w = matrix(in_dim * out_dim, 2, 0.1);
        let b = matrix(out_dim, 3, 0.5);
        let q = QuantizedMatrix::new(&w, in_dim, out_dim);
        let mut out = vec![0f32; rows * out_dim];
        linear(&x, rows, &q, &b, &mut out, &mut Scratch::default());
        let mut worst = 0f32;
        for r in 0..rows {
            for c in 0..out_dim {
                let exact: f32 = (0..in_dim)
                    .map(|k| x[r * in_dim + k] * w[k * out_dim + c])
                    .sum::<f32>()
                    + b[c];
                worst = worst.max((out[r * out_dim + c] - exact).abs());
            }
        }
        // Rounding error of 7-bit weights and 8-bit activations over 96 terms of size ≤ 0.2.
        assert!(worst < 0.05, "max abs error {worst}");
        assert!(worst > 0.0, "int8 cannot be exact on random values");

        // Values on the quantization grids come out exactly. Activations: each row spans
        // [-2, 127/64] (scale 1/64, zero point 128). Weights: column c has scale s_c and its
        // largest pair sum is 127·s_c (pairs (127, 0) and (-60, 67)).
        let x: Vec<f32> = [-2.0, 1.984_375, 0.5, -0.25, 1.984_375, -2.0, -0.75, 0.0].to_vec();
        let steps = [127.0, 0.0, -60.0, 67.0];
        let col_scale = [0.01f32, 0.002, 0.5];
        let w: Vec<f32> = (0..4 * 3)
            .map(|i| steps[i / 3] * col_scale[i % 3])
            .collect();
        let q = QuantizedMatrix::new(&w, 4, 3);
        let mut out = vec![0f32; 2 * 3];
        linear(&x, 2, &q, &[0.0; 3], &mut out, &mut Scratch::default());
        for (r, row) in out.chunks_exact(3).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let exact: f32 = (0..4).map(|k| x[r * 4 + k] * w[k * 3 + c]).sum();
                assert!(
                    (v - exact).abs() <= 1e-5 * exact.abs().max(1.0),
                    "({r},{c}): {v} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn no_pair_of_quantized_weights_can_saturate_avx2() {
        // A column whose largest weights sit side by side: the scale must bound their sum.
        let (in_dim, out_dim) = (64, 3);
        let mut w = matrix(in_dim * out_dim, 5, 0.05);
        for c in 0..out_dim {
            w[10 * out_dim + c] = 0.3;
            w[11 * out_dim + c] = -0.29;
        }
        let q = QuantizedMatrix::new(&w, in_dim, out_dim);
        for c in 0..out_dim {
            for k in (0..in_dim).step_by(2) {
                let code = |k: usize| (w[k * out_dim + c] / q.col_scale[c]).round().abs();
                assert!(code(k) + code(k + 1) <= 128.0, "column {c}, pair {k}");
            }
            assert!(q.col_scale[c] >= 0.59 / 127.0 * 0.999);
        }
    }

    #[test]
    fn zero_rows_and_zero_weights_stay_finite() {
        let q = QuantizedMatrix::new(&[0.0; 8], 4, 2);
        let mut out = vec![9f32; 2 * 2];
        linear(
            &[0.0; 8],
            2,
            &q,
            &[1.0, -1.0],
            &mut out,
            &mut Scratch::default(),
        );
        assert_eq!(out, vec![1.0, -1.0, 1.0, -1.0]);
    }
}
