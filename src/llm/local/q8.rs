//! Int8 weight matrices for one-token steps of generation.
//!
//! Generating a token multiplies every weight matrix by one vector: the time goes to reading
//! weights from memory. f32 weights read 4 bytes per weight; candle's Q4_1 dot product has no
//! SIMD kernel in a default (SSE2) build, so it is compute-bound instead. This keeps each matrix
//! as int8 with one f32 scale per 32 weights (~1.1 bytes per weight; requantised from the
//! GGUF's 4-bit values, so the error is a fraction of theirs) and multiplies with AVX2 + FMA
//! when the CPU has them (runtime detection, scalar fallback), split across cores.

use rayon::prelude::*;

const BLOCK: usize = 32;

/// A (rows, cols) matrix in int8 blocks of 32 with per-block scales.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Matrix {
    /// Quantise row-major f32 weights; `cols` must be a multiple of 32.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || w.len() != rows * cols {
            return None;
        }
        let mut q = vec![0i8; w.len()];
        let mut scales = vec![0f32; w.len() / BLOCK];
        for (b, (src, dst)) in w
            .chunks_exact(BLOCK)
            .zip(q.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let max = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            scales[b] = scale;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (d, s) in dst.iter_mut().zip(src) {
                *d = (s * inv).round().clamp(-127.0, 127.0) as i8;
            }
        }
        Some(Self {
            rows,
            cols,
            q,
            scales,
        })
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `y = W x`.
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "matvec input length");
        let nb = self.cols / BLOCK;
        let mut y = vec![0f32; self.rows];
        let avx2 = has_avx2_fma();
        y.par_chunks_mut(256).enumerate().for_each(|(chunk, out)| {
            for (i, yi) in out.iter_mut().enumerate() {
                let r = chunk * 256 + i;
                let q = &self.q[r * self.cols..(r + 1) * self.cols];
                let s = &self.scales[r * nb..(r + 1) * nb];
                *yi = if avx2 {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        dot_avx2(q, s, x)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    dot_scalar(q, s, x)
                } else {
                    dot_scalar(q, s, x)
                };
            }
        });
        y
    }
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn dot_scalar(q: &[i8], scales: &[f32], x: &[f32]) -> f32 {
    q.chunks_exact(BLOCK)
        .zip(x.chunks_exact(BLOCK))
        .zip(scales)
        .map(|((qb, xb), s)| s * qb.iter().zip(xb).map(|(a, b)| *a as f32 * b).sum::<f32>())
        .sum()
}

/// `Σ_b scales[b] · (q_b · x_b)` over blocks of [`BLOCK`] values.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `q` and `x` must each hold `scales.len() * BLOCK`
/// values (the loads are unchecked); [`Q8Matrix::matvec`] guarantees both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(q: &[i8], scales: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert_eq!(q.len(), scales.len() * BLOCK, "dot_avx2: q length");
    debug_assert_eq!(x.len(), scales.len() * BLOCK, "dot_avx2: x length");
    debug_assert!(has_avx2_fma(), "dot_avx2 needs AVX2 and FMA");
    let mut acc = _mm256_setzero_ps();
    let (qp, xp) = (q.as_ptr(), x.as_ptr());
    for (b, s) in scales.iter().enumerate() {
        let base = b * BLOCK;
        let mut blk = _mm256_setzero_ps();
        for k in 0..4 {
            let o = base + k * 8;
            let qi = _mm_loadl_epi64(qp.add(o) as *const __m128i);
            let qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qi));
            blk = _mm256_fmadd_ps(qf, _mm256_loadu_ps(xp.add(o)), blk);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(*s), blk, acc);
    }
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let sum = _mm_add_ps(hi, lo);
    let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    let sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
    _mm_cvtss_f32(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_matches_f32_within_quantisation_error_on_both_paths() {
        let (rows, cols) = (70, 96);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let m = Q8Matrix::from_f32(&w, rows, cols).unwrap();
        let y = m.matvec(&x);
        let nb = cols / BLOCK;
        for r in 0..rows {
            let exact: f32 = (0..cols).map(|c| w[r * cols + c] * x[c]).sum();
            assert!((y[r] - exact).abs() < 0.02, "row {r}: {} vs {exact}", y[r]);
            let scalar = dot_scalar(
                &m.q[r * cols..(r + 1) * cols],
                &m.scales[r * nb..(r + 1) * nb],
                &x,
            );
            assert!((y[r] - scalar).abs() < 1e-3, "SIMD and scalar agree");
        }
        assert!(Q8Matrix::from_f32(&w, rows, 95).is_none());
    }
}
