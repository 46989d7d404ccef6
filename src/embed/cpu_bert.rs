//! A BERT encoder forward pass for CPUs, on packed token rows.
//!
//! candle-transformers' `BertModel` (kept as the reference and the GPU path) runs padded
//! `[batch, len, hidden]` tensors through generic ops: every op allocates a fresh tensor (a
//! 100 MB attention-score tensor per layer at batch 32 × 256 tokens), GELU and softmax call
//! scalar `erf`/`exp`, and padding tokens cost as much as real ones. On a 2-core CPU that left
//! two thirds of the time outside matrix multiplication. This forward pass instead:
//!
//! - packs the real tokens of a batch into one `[tokens, hidden]` matrix: no padding anywhere;
//! - runs every linear layer as one `gemm` call (AVX-512 kernels) with the bias pre-loaded into
//!   the output, Q, K and V fused into one `[hidden, 3·hidden]` projection and the
//!   1/sqrt(head_dim) scale folded into the query weights at load time;
//! - computes attention per (sequence, head) straight from strided views of the fused QKV
//!   matrix, with no reshapes or copies, in parallel over (sequence, head) pairs;
//! - fuses residual + LayerNorm, and uses vectorised `exp`/`erf` for softmax and GELU
//!   (relative error ~1e-7, far below what the parity test can see).
//!
//! The weights are read through candle's `VarBuilder`, so any checkpoint layout that
//! candle-transformers loads loads here too.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::sync::Mutex;

pub mod int8;

pub use int8::kernel_name as int8_kernel_name;

use super::precision::Precision;

/// Weights of one encoder layer.
struct Layer {
    qkv: Linear,
    attn_out: Linear,
    ln1_w: Vec<f32>,
    ln1_b: Vec<f32>,
    inter: Linear,
    out: Linear,
    ln2_w: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// One linear layer: its weights at the encoder's precision and its fp32 bias.
struct Linear {
    weights: Weights,
    bias: Vec<f32>,
    in_dim: usize,
}

enum Weights {
    /// Row-major `[in, out]` (see [`linear`]).
    F32(Vec<f32>),
    /// Quantized per output channel (see `int8`).
    Int8(int8::QuantizedMatrix),
}

impl Linear {
    /// A layer from checkpoint weights `[out, in]` (PyTorch's layout) and its bias.
    fn new(w_out_in: &[f32], bias: Vec<f32>, in_dim: usize, precision: Precision) -> Self {
        let out_dim = bias.len();
        let w = transpose(w_out_in, out_dim, in_dim);
        let weights = match precision {
            Precision::Fp32 => Weights::F32(w),
            Precision::Int8 => Weights::Int8(int8::QuantizedMatrix::new(&w, in_dim, out_dim)),
        };
        Self {
            weights,
            bias,
            in_dim,
        }
    }

    /// `out[rows, out] = x[rows, in] · W + b`.
    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], scratch: &mut int8::Scratch) {
        match &self.weights {
            Weights::F32(w) => linear(x, rows, self.in_dim, w, &self.bias, out),
            Weights::Int8(q) => int8::linear(x, rows, q, &self.bias, out, scratch),
        }
    }
}

/// The encoder, ready to run on the CPU.
pub struct CpuBert {
    hidden: usize,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f32,
    act: HiddenAct,
    max_positions: usize,
    type_vocab: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln_w: Vec<f32>,
    emb_ln_b: Vec<f32>,
    layers: Vec<Layer>,
    precision: Precision,
    /// Buffers of finished forward passes, handed to the next ones: allocating them afresh
    /// each batch cost ~3% of an int8 `bench embed` profile in page faults and zeroing. One per
    /// concurrent caller at most, each as large as the largest batch it has run.
    workspaces: Mutex<Vec<Workspace>>,
}

/// The intermediate matrices of one forward pass (see [`CpuBert::workspaces`]).
#[derive(Default)]
struct Workspace {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attn: Vec<f32>,
    inter: Vec<f32>,
    int8: int8::Scratch,
}

/// One sequence of a batch: its token ids and token type ids.
pub struct Sequence<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

impl CpuBert {
    /// Read the weights of a BERT checkpoint (`bert.`-prefixed or not), quantizing the linear
    /// layers when `precision` is int8.
    pub fn load(
        vb: VarBuilder,
        config: &BertConfig,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else if let Some(t) = config
            .model_type
            .as_deref()
            .filter(|t| vb.contains_tensor(&format!("{t}.embeddings.word_embeddings.weight")))
        {
            vb.pp(t)
        } else {
            candle_core::bail!("no embeddings.word_embeddings.weight in the checkpoint")
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        if h % config.num_attention_heads != 0 {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            );
        }
        let head_dim = h / config.num_attention_heads;
        let get = |shape: &[usize], name: &str| -> candle_core::Result<Vec<f32>> {
            vb.get(shape, name)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()
        };
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut qkv_w = get(&[h, h], &format!("{p}.attention.self.query.weight"))?;
            let mut qkv_b = get(&[h], &format!("{p}.attention.self.query.bias"))?;
            qkv_w.iter_mut().for_each(|w| *w *= scale);
            qkv_b.iter_mut().for_each(|b| *b *= scale);
            for part in ["key", "value"] {
                qkv_w.extend(get(&[h, h], &format!("{p}.attention.self.{part}.weight"))?);
                qkv_b.extend(get(&[h], &format!("{p}.attention.self.{part}.bias"))?);
            }
            // int8 where it keeps the embeddings within cosine 0.999 of fp32: the attention
            // output and the FFN's first projection. The QKV projection (its error is amplified
            // by the attention scores) and the FFN's second projection (GELU outputs with
            // outlier neurons) each cost more than the whole budget, so they stay fp32. Measured
            // per layer with `bench embed --precision fp32,int8` on the parity set (README).
            let int8_where_accurate =
                |w: &[f32], b: Vec<f32>, in_dim: usize| Linear::new(w, b, in_dim, precision);
            let fp32 =
                |w: &[f32], b: Vec<f32>, in_dim: usize| Linear::new(w, b, in_dim, Precision::Fp32);
            layers.push(Layer {
                qkv: fp32(&qkv_w, qkv_b, h),
                attn_out: int8_where_accurate(
                    &get(&[h, h], &format!("{p}.attention.output.dense.weight"))?,
                    get(&[h], &format!("{p}.attention.output.dense.bias"))?,
                    h,
                ),
                ln1_w: get(&[h], &format!("{p}.attention.output.LayerNorm.weight"))?,
                ln1_b: get(&[h], &format!("{p}.attention.output.LayerNorm.bias"))?,
                inter: int8_where_accurate(
                    &get(&[i, h], &format!("{p}.intermediate.dense.weight"))?,
                    get(&[i], &format!("{p}.intermediate.dense.bias"))?,
                    h,
                ),
                out: fp32(
                    &get(&[h, i], &format!("{p}.output.dense.weight"))?,
                    get(&[h], &format!("{p}.output.dense.bias"))?,
                    i,
                ),
                ln2_w: get(&[h], &format!("{p}.output.LayerNorm.weight"))?,
                ln2_b: get(&[h], &format!("{p}.output.LayerNorm.bias"))?,
            });
        }
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            head_dim,
            intermediate: i,
            eps: config.layer_norm_eps as f32,
            act: config.hidden_act,
            max_positions: config.max_position_embeddings,
            type_vocab: config.type_vocab_size,
            word: get(&[config.vocab_size, h], "embeddings.word_embeddings.weight")?,
            position: get(
                &[config.max_position_embeddings, h],
                "embeddings.position_embeddings.weight",
            )?,
            token_type: get(
                &[config.type_vocab_size, h],
                "embeddings.token_type_embeddings.weight",
            )?,
            emb_ln_w: get(&[h], "embeddings.LayerNorm.weight")?,
            emb_ln_b: get(&[h], "embeddings.LayerNorm.bias")?,
            layers,
            precision,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The arithmetic of the linear layers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Width of each output row.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Run the encoder on `seqs`; returns the last hidden states as packed rows: sequence `s`
    /// owns rows `offsets[s]..offsets[s + 1]` of the `[tokens, hidden]` matrix.
    pub fn forward(&self, seqs: &[Sequence<'_>]) -> candle_core::Result<(Vec<f32>, Vec<usize>)> {
        let h = self.hidden;
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0usize);
        for s in seqs {
            if s.ids.len() > self.max_positions {
                candle_core::bail!(
                    "sequence of {} tokens exceeds max_position_embeddings {}",
                    s.ids.len(),
                    self.max_positions
                );
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + s.ids.len());
        }
        let tokens = offsets[seqs.len()];
        let vocab = self.word.len() / h;
        // Embeddings: word + position + token type, then LayerNorm.
        let mut hidden = vec![0f32; tokens * h];
        for (s, seq) in seqs.iter().enumerate() {
            for (p, (&id, &tt)) in seq.ids.iter().zip(seq.type_ids).enumerate() {
                let (id, tt) = (id as usize, tt as usize);
                if id >= vocab || tt >= self.type_vocab {
                    candle_core::bail!("token id {id} / type {tt} outside the vocabulary");
                }
                let row = &mut hidden[(offsets[s] + p) * h..][..h];
                let (w, ps, t) = (
                    &self.word[id * h..][..h],
                    &self.position[p * h..][..h],
                    &self.token_type[tt * h..][..h],
                );
                for j in 0..h {
                    row[j] = w[j] + ps[j] + t[j];
                }
            }
        }
        layer_norm_rows(&mut hidden, None, &self.emb_ln_w, &self.emb_ln_b, self.eps);

        let mut workspace = self
            .workspaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_default();
        let Workspace {
            qkv,
            ctx,
            attn,
            inter,
            int8: scratch,
        } = &mut workspace;
        // Every element is written before it is read (each linear layer fills its output, and
        // attention every row of `ctx`), so stale values from an earlier batch never leak.
        qkv.resize(tokens * 3 * h, 0.0);
        ctx.resize(tokens * h, 0.0);
        attn.resize(tokens * h, 0.0);
        inter.resize(tokens * self.intermediate, 0.0);
        let (qkv, ctx, attn, inter) = (
            &mut qkv[..tokens * 3 * h],
            &mut ctx[..tokens * h],
            &mut attn[..tokens * h],
            &mut inter[..tokens * self.intermediate],
        );
        for layer in &self.layers {
            layer.qkv.forward(&hidden, tokens, qkv, scratch);
            self.attention(qkv, &offsets, ctx);
            layer.attn_out.forward(ctx, tokens, attn, scratch);
            layer_norm_rows(attn, Some(&hidden), &layer.ln1_w, &layer.ln1_b, self.eps);
            layer.inter.forward(attn, tokens, inter, scratch);
            activation(inter, self.act);
            layer.out.forward(inter, tokens, &mut hidden, scratch);
            layer_norm_rows(
                &mut hidden,
                Some(&*attn),
                &layer.ln2_w,
                &layer.ln2_b,
                self.eps,
            );
        }
        self.workspaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(workspace);
        Ok((hidden, offsets))
    }

    /// Scaled dot-product attention for every (sequence, head), writing `[tokens, hidden]`.
    fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let (h, d) = (self.hidden, self.head_dim);
        let stride = 3 * h;
        // The unsafe block below relies on these sizes: every sequence's rows lie inside `qkv`
        // (3·hidden per token) and `ctx` (hidden per token).
        let tokens = offsets.last().copied().unwrap_or(0);
        assert!(offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(qkv.len(), tokens * stride, "attention: qkv length");
        assert_eq!(ctx.len(), tokens * h, "attention: ctx length");
        assert_eq!(self.heads * d, h, "attention: heads × head_dim");
        let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
            .flat_map(|s| (0..self.heads).map(move |head| (s, head)))
            .collect();
        let ctx_ptr = SendPtr(ctx.as_mut_ptr());
        tasks
            .par_iter()
            .for_each_init(Vec::new, |scores, &(s, head)| {
                let (start, n) = (offsets[s], offsets[s + 1] - offsets[s]);
                if n == 0 {
                    return;
                }
                scores.resize(n * n, 0.0);
                let q = qkv[start * stride + head * d..].as_ptr();
                let k = qkv[start * stride + h + head * d..].as_ptr();
                let v = qkv[start * stride + 2 * h + head * d..].as_ptr();
                // SAFETY: every pointer stays inside `qkv`/`scores`/`ctx` for the given sizes and
                // strides; each task writes only its own (rows of sequence s) × (columns of head)
                // block of `ctx`, so no two tasks write the same element.
                unsafe {
                    // scores[i][j] = q_i · k_j   (the 1/sqrt(d) scale is in the query weights)
                    gemm(
                        n,
                        n,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        q,
                        1,
                        stride as isize,
                        k,
                        stride as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for row in scores.chunks_exact_mut(n) {
                    softmax_in_place(row);
                }
                let out = ctx_ptr;
                // SAFETY: as above.
                unsafe {
                    gemm(
                        n,
                        d,
                        n,
                        out.0.add(start * h + head * d),
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        v,
                        1,
                        stride as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output blocks to parallel tasks (see `attention`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(m.len(), rows * cols);
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// `out[rows, out_dim] = x[rows, in_dim] · w + b`, `w` row-major `[in_dim, out_dim]`.
///
/// Why `[in, out]` and not the checkpoint's `[out, in]`: `gemm` computes a row-major output as
/// its transpose, so the weights become its left operand, which it copies into a packed buffer
/// on every call unless their columns are contiguous. With `[out, in]` that copy (a strided,
/// scalar loop over the whole weight matrix) cost more than the multiplication itself for
/// the few-token batches a server embeds (one 27-token query: 104/s before, see the README's
/// "Serving under load").
fn linear(x: &[f32], rows: usize, in_dim: usize, w: &[f32], b: &[f32], out: &mut [f32]) {
    let out_dim = b.len();
    assert_eq!(w.len(), out_dim * in_dim);
    assert!(x.len() >= rows * in_dim && out.len() >= rows * out_dim);
    for row in out[..rows * out_dim].chunks_exact_mut(out_dim) {
        row.copy_from_slice(b);
    }
    let work = rows * out_dim * in_dim;
    let parallelism = if work < (1 << 18) {
        Parallelism::None
    } else {
        Parallelism::Rayon(rayon::current_num_threads())
    };
    // SAFETY: the sizes and strides below match the asserted slice lengths.
    unsafe {
        gemm(
            rows,
            out_dim,
            in_dim,
            out.as_mut_ptr(),
            1,
            out_dim as isize,
            true,
            x.as_ptr(),
            1,
            in_dim as isize,
            w.as_ptr(),
            1,
            out_dim as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Rows at a time in the element-wise passes: big enough to amortise task overhead.
const ROW_BLOCK: usize = 32;

/// In place: `x = LayerNorm(x + residual)` per row of width `w.len()`.
fn layer_norm_rows(x: &mut [f32], residual: Option<&[f32]>, w: &[f32], b: &[f32], eps: f32) {
    let width = w.len();
    x.par_chunks_mut(width * ROW_BLOCK)
        .enumerate()
        .for_each(|(blk, rows)| {
            for (r, row) in rows.chunks_exact_mut(width).enumerate() {
                if let Some(res) = residual {
                    let res = &res[(blk * ROW_BLOCK + r) * width..][..width];
                    simd::add_assign(row, res);
                }
                simd::layer_norm(row, w, b, eps);
            }
        });
}

fn activation(x: &mut [f32], act: HiddenAct) {
    x.par_chunks_mut(1 << 14).for_each(|chunk| match act {
        HiddenAct::Gelu => simd::gelu_erf(chunk),
        HiddenAct::GeluApproximate => simd::gelu_tanh(chunk),
        HiddenAct::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

fn softmax_in_place(row: &mut [f32]) {
    simd::softmax(row);
}

/// Element-wise kernels written so LLVM vectorises them, compiled three times (AVX-512,
/// AVX2+FMA, baseline) and picked at run time: the binary needs no `-C target-cpu`.
mod simd {
    macro_rules! dispatch {
        ($(fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block)*) => {$(
            pub fn $name($($arg: $ty),*) $(-> $ret)? {
                #[inline(always)]
                fn imp($($arg: $ty),*) $(-> $ret)? $body
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                    unsafe fn v4($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn v3($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                    if std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx512vl")
                        && std::arch::is_x86_feature_detected!("avx512dq")
                    {
                        // SAFETY: the CPU has the features `v4` is compiled for.
                        return unsafe { v4($($arg),*) };
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the CPU has the features `v3` is compiled for.
                        return unsafe { v3($($arg),*) };
                    }
                }
                imp($($arg),*)
            }
        )*};
    }

    const LANES: usize = 16;

    /// exp(x), relative error < 2e-7 on [-87, 88]: 2^n · p(r) with x = n·ln2 + r, |r| ≤ ln2/2.
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
                                         // `max`/`min` return the other operand when one is NaN (`clamp` would pass NaN through
                                         // to the unchecked conversion below), so `xc` is always a number in [-87, 88].
        #[allow(clippy::manual_clamp)] // clamp would pass NaN through: that is the point
        let xc = x.max(-87.0).min(88.0);
        let n = (xc * LOG2E + ROUND) - ROUND;
        let r = xc - n * LN2_HI - n * LN2_LO;
        // Taylor to degree 7: error below r^8/8! ≈ 5e-9 for |r| ≤ 0.347.
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        // SAFETY: n is an integer in [-126, 127] (xc is in [-87, 88] and never NaN), so the
        // conversion is exact.
        // (`as i32` would saturate instead, and a checked add would panic-branch: either keeps the
        // loop from vectorising, which costs a fifth of the whole forward pass.)
        let n = unsafe { n.to_int_unchecked::<i32>() };
        let scale = f32::from_bits((n.wrapping_add(127) as u32) << 23);
        // NaN in, NaN out (a select, so the loop still vectorises).
        if x.is_nan() {
            x
        } else {
            p * scale
        }
    }

    /// erf(x), absolute error < 2e-7 (Abramowitz & Stegun 7.1.26 with an accurate exp).
    #[inline(always)]
    pub(super) fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let y = 1.0 - poly * exp(-a * a);
        y.copysign(x)
    }

    dispatch! {
        fn gelu_erf(xs: &mut [f32]) {
            for v in xs.iter_mut() {
                let x = *v;
                *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            }
        }

        fn gelu_tanh(xs: &mut [f32]) {
            for v in xs.iter_mut() {
                let x = *v;
                let y = 0.797_884_6 * (x + 0.044_715 * x * x * x);
                // tanh(y) = 1 - 2 / (exp(2y) + 1)
                let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
                *v = 0.5 * x * (1.0 + tanh);
            }
        }

        fn add_assign(xs: &mut [f32], ys: &[f32]) {
            for (x, y) in xs.iter_mut().zip(ys) {
                *x += *y;
            }
        }

        fn softmax(row: &mut [f32]) {
            let mut lanes = [f32::NEG_INFINITY; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    lanes[i] = lanes[i].max(c[i]);
                }
            }
            let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            for l in lanes {
                max = max.max(l);
            }
            for v in row.iter_mut() {
                *v = exp(*v - max);
            }
            let total = sum(row);
            let inv = 1.0 / total;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }

        fn quantize_row(row: &[f32], out: &mut [u8]) -> (f32, u8) {
            let mut lo_lanes = [0f32; LANES];
            let mut hi_lanes = [0f32; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    lo_lanes[i] = lo_lanes[i].min(c[i]);
                    hi_lanes[i] = hi_lanes[i].max(c[i]);
                }
            }
            // The range always holds 0, so the zero point is a code in [0, 255].
            let (mut lo, mut hi) = (0f32, 0f32);
            for v in chunks.remainder() {
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
            for i in 0..LANES {
                lo = lo.min(lo_lanes[i]);
                hi = hi.max(hi_lanes[i]);
            }
            let range = hi - lo;
            if !(range > 0.0 && range.is_finite()) {
                out.fill(0);
                return (1.0, 0);
            }
            let scale = range / 255.0;
            let inv = 1.0 / scale;
            let zero = (-lo * inv + 0.5).min(255.0) as u8;
            let offset = f32::from(zero) + 0.5;
            for (q, v) in out.iter_mut().zip(row) {
                // v·inv + zero lies in [0, 255]; adding 0.5 and truncating (a saturating cast)
                // rounds it half up.
                *q = (v * inv + offset) as u8;
            }
            (scale, zero)
        }

        fn dequantize_row(
            acc: &[i32],
            row: (f32, u8),
            col_sum: &[i32],
            col_scale: &[f32],
            bias: &[f32],
            out: &mut [f32]
        ) {
            let (row_scale, zero) = (row.0, i32::from(row.1));
            let n = out.len();
            let (acc, col_sum, col_scale, bias) = (&acc[..n], &col_sum[..n], &col_scale[..n], &bias[..n]);
            for i in 0..n {
                // Σ (q − zero)·w = Σ q·w − zero·Σ w, exact in i32 (|zero·Σ w| ≤ 255·127·in_dim).
                // Wrapping ops because the checked ones, on in this crate's dev profile, kept
                // this loop scalar: 4.2% of an int8 `bench embed` profile, now vectorised.
                let centred = acc[i].wrapping_sub(zero.wrapping_mul(col_sum[i]));
                out[i] = centred as f32 * (row_scale * col_scale[i]) + bias[i];
            }
        }

        fn layer_norm(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
            let n = row.len() as f32;
            let mean = sum(row) / n;
            let mut lanes = [0f32; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    let d = c[i] - mean;
                    lanes[i] += d * d;
                }
            }
            let mut var = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
            for l in lanes {
                var += l;
            }
            let inv = 1.0 / (var / n + eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }

    /// Sum with 16 independent accumulators, so it vectorises (and is more accurate).
    #[inline(always)]
    fn sum(xs: &[f32]) -> f32 {
        let mut lanes = [0f32; LANES];
        let mut chunks = xs.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                lanes[i] += c[i];
            }
        }
        let mut total: f32 = chunks.remainder().iter().sum();
        for l in lanes {
            total += l;
        }
        total
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_and_erf_match_libm() {
            let mut worst_exp = 0f32;
            let mut worst_erf = 0f32;
            for i in -8000..8000 {
                let x = i as f32 / 100.0;
                let e = exp(x);
                let want = x.clamp(-87.0, 88.0).exp();
                worst_exp = worst_exp.max(((e - want) / want).abs());
                let x = i as f32 / 1000.0;
                worst_erf = worst_erf.max((erf(x) - libm_erf(x)).abs());
            }
            assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
            assert!(exp(f32::NAN).is_nan());
            assert_eq!(exp(f32::INFINITY), 88f32.exp());
            assert_eq!(exp(f32::NEG_INFINITY), (-87f32).exp());
            assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
        }

        fn libm_erf(x: f32) -> f32 {
            // High-precision reference: erf by its Taylor series in f64 (|x| ≤ 8 converges).
            let x = f64::from(x);
            if x.abs() > 5.0 {
                return x.signum() as f32;
            }
            let (mut term, mut total, mut n) = (x, x, 0f64);
            while term.abs() > 1e-17 * total.abs().max(1e-300) {
                n += 1.0;
                term *= -x * x / n;
                total += term / (2.0 * n + 1.0);
            }
            (total * 2.0 / std::f64::consts::PI.sqrt()) as f32
        }

        #[test]
        fn softmax_and_layer_norm_are_exact_enough() {
            let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
            let want: Vec<f64> = {
                let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
                let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            };
            softmax(&mut row);
            for (g, w) in row.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6);
            }
            let mut row: Vec<f32> = (0..40).map(|i| i as f32).collect();
            let (w, b) = (vec![2.0; 40], vec![1.0; 40]);
            layer_norm(&mut row, &w, &b, 1e-12);
            let mean: f32 = row.iter().sum::<f32>() / 40.0;
            assert!((mean - 1.0).abs() < 1e-5);
            let var: f32 = row.iter().map(|v| (v - 1.0) * (v - 1.0)).sum::<f32>() / 40.0;
            assert!((var - 4.0).abs() < 1e-4);
        }
    }
}
