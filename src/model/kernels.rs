//! CPU kernels shared by the fused layers of the networks: matrix products through the `gemm`
//! crate (the recipe's layers), a blocked transpose, and for EfficientNet's frozen path
//! channels-last 1x1 convolutions on packed weights ([`pointwise`]), depthwise convolution and
//! the pooling sums. Loops are written plainly and compiled per instruction set with
//! [`wide!`], so they vectorise with the widest registers the CPU has.

pub(crate) use gemm::Parallelism;
use gemm::gemm;

mod pointwise;
pub(crate) use pointwise::{Epilogue, PANEL, PackedPointwise};

/// Defines a function whose body is compiled three times, for the baseline, for AVX2 with FMA
/// and for AVX-512, and picks the widest the CPU has at run time: plain loops over `f32` then
/// use 256- or 512-bit vectors instead of the baseline's 128. The arithmetic is the same in
/// each (no operation is fused or reordered), so the results are too.
macro_rules! wide {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (and so AVX2 and FMA), checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has both features, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use wide;

/// `dst[j][i] = src[i][j]` for `src` of `rows x cols`: 8x8 blocks in AVX registers where the CPU
/// has AVX, single values for the rest.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    let (mut rows_done, mut cols_done) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        (rows_done, cols_done) = (rows / 8 * 8, cols / 8 * 8);
        for i in (0..rows_done).step_by(8) {
            for j in (0..cols_done).step_by(8) {
                // SAFETY: AVX is present; the block's last source value is at
                // (i + 7) * cols + j + 7 < rows * cols and its last destination value at
                // (j + 7) * rows + i + 7 < rows * cols, both within the asserted lengths.
                unsafe {
                    transpose_8x8(
                        src[i * cols + j..].as_ptr(),
                        cols,
                        dst[j * rows + i..].as_mut_ptr(),
                        rows,
                    )
                };
            }
        }
    }
    let mut single = |i: usize, j: usize| dst[j * rows + i] = src[i * cols + j];
    for i in 0..rows_done {
        (cols_done..cols).for_each(|j| single(i, j));
    }
    for i in rows_done..rows {
        (0..cols).for_each(|j| single(i, j));
    }
}

/// One 8x8 block: eight rows of `src` (row stride `src_stride`) become eight columns of `dst`.
///
/// # Safety
/// The CPU has AVX, and the 8x8 blocks at both pointers lie inside their allocations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller keeps all eight rows of the block inside `src`.
    let r: [__m256; 8] =
        std::array::from_fn(|k| unsafe { _mm256_loadu_ps(src.add(k * src_stride)) });
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let q = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    let out = [
        _mm256_permute2f128_ps::<0x20>(q[0], q[4]),
        _mm256_permute2f128_ps::<0x20>(q[1], q[5]),
        _mm256_permute2f128_ps::<0x20>(q[2], q[6]),
        _mm256_permute2f128_ps::<0x20>(q[3], q[7]),
        _mm256_permute2f128_ps::<0x31>(q[0], q[4]),
        _mm256_permute2f128_ps::<0x31>(q[1], q[5]),
        _mm256_permute2f128_ps::<0x31>(q[2], q[6]),
        _mm256_permute2f128_ps::<0x31>(q[3], q[7]),
    ];
    for (k, row) in out.into_iter().enumerate() {
        // SAFETY: the caller keeps all eight rows of the block inside `dst`.
        unsafe { _mm256_storeu_ps(dst.add(k * dst_stride), row) };
    }
}

/// `dst (m x n) += lhs (m x k) * rhs (k x n)`, or `=` when `!accumulate`, with explicit
/// strides `(row, column)` for each operand.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    parallelism: Parallelism,
) {
    let last =
        |(rs, cs): (usize, usize), rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(dst_strides, m, n) < dst.len());
    assert!(last(lhs_strides, m, k) < lhs.len());
    assert!(last(rhs_strides, k, n) < rhs.len());
    // SAFETY: the asserts above keep every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.1 as isize,
            lhs_strides.0 as isize,
            rhs.as_ptr(),
            rhs_strides.1 as isize,
            rhs_strides.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A depthwise convolution over a channels-last image with TensorFlow's 'same' padding: the
/// zeros around the image are never stored, the taps that would read them are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl DepthwiseShape {
    /// Rows and columns of the output.
    pub fn output(&self) -> (usize, usize) {
        (
            self.height.div_ceil(self.stride),
            self.width.div_ceil(self.stride),
        )
    }

    /// The zero rows above and columns left of the image that 'same' padding implies (any
    /// further ones go below and right).
    pub fn padding(&self) -> (usize, usize) {
        let before = |size: usize| {
            let out = size.div_ceil(self.stride);
            ((out - 1) * self.stride + self.kernel).saturating_sub(size) / 2
        };
        (before(self.height), before(self.width))
    }

    /// The kernel taps along one axis that land inside an image of `size` for the output
    /// position `out`, given `before` padding.
    pub(crate) fn taps(
        &self,
        out: usize,
        before: usize,
        size: usize,
    ) -> (usize, std::ops::Range<usize>) {
        let start = (out * self.stride) as isize - before as isize;
        let first = (-start).max(0) as usize;
        let last = (size as isize - start).min(self.kernel as isize) as usize;
        ((start + first as isize) as usize, first..last)
    }
}

/// Channels handled together in the depthwise loop: one AVX-512 register.
const LANES: usize = 16;
/// Channels the SIMD depthwise path takes through a whole image before the next ones.
#[cfg(target_arch = "x86_64")]
const CHUNK: usize = 64;
/// Output pixels of a row computed together away from the edges: each weight vector loaded
/// serves all of them, and their sums stay in registers.
const PIXELS: usize = 4;

/// `LANES` values of `values` from `at`.
#[inline(always)]
fn lanes(values: &[f32], at: usize) -> &[f32; LANES] {
    values[at..at + LANES].try_into().expect("LANES values")
}

/// `min(max(depthwise(input) + bias, 0), 6)` for the output rows starting at `first_row` that
/// fill `out` (`columns * channels` values a row). `input` holds the image's rows from
/// `input_row` on (`[rows, width, channels]`; at least those the output rows read),
/// `weights` are `[kernel * kernel, channels]` (tap-major), `bias` `[channels]`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_relu6(
    shape: DepthwiseShape,
    input: &[f32],
    input_row: usize,
    weights: &[f32],
    bias: &[f32],
    first_row: usize,
    out: &mut [f32],
) {
    let (_, columns) = shape.output();
    let c = shape.channels;
    assert!(out.len().is_multiple_of(columns * c), "whole output rows");
    assert!(weights.len() >= shape.kernel * shape.kernel * c && bias.len() >= c);
    let rows = out.len() / (columns * c);
    if rows > 0 {
        let (last, ky) = shape.taps(first_row + rows - 1, shape.padding().0, shape.height);
        assert!(
            input.len() >= (last + ky.len() - input_row) * shape.width * c,
            "the input rows the output rows read"
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m256, __m512};
        // SAFETY (both): the CPU has the features just checked, the channels are whole
        // registers, and the lengths are as asserted above.
        if c.is_multiple_of(<__m512 as Vector>::LANES)
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            let args = (shape, input, input_row, weights, bias, first_row);
            unsafe { depthwise_avx512(args, out) };
            return;
        }
        if c.is_multiple_of(<__m256 as Vector>::LANES)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            let args = (shape, input, input_row, weights, bias, first_row);
            unsafe { depthwise_avx2(args, out) };
            return;
        }
    }
    let (inner_start, inner_end) = shape.interior();
    let (top, _) = shape.padding();
    for (r, out_row) in out.chunks_exact_mut(columns * c).enumerate() {
        let (y, ky) = shape.taps(first_row + r, top, shape.height);
        let y = y - input_row;
        depthwise_row(
            shape,
            input,
            weights,
            bias,
            (y, ky),
            (inner_start, inner_start, inner_end),
            out_row,
        );
    }
}

impl DepthwiseShape {
    /// The output columns whose taps all land inside the image (`ox * s >= left` and
    /// `ox * s - left + k <= w`), as a range `start..end`.
    fn interior(&self) -> (usize, usize) {
        let (_, columns) = self.output();
        let (_, left) = self.padding();
        let (w, k, s) = (self.width, self.kernel, self.stride);
        let start = left.div_ceil(s).min(columns);
        let end = if w + left >= k {
            ((w + left - k) / s + 1).min(columns)
        } else {
            0
        };
        (start, end.max(start))
    }
}

/// What [`depthwise_relu6`] is given besides its output.
#[cfg(target_arch = "x86_64")]
type DepthwiseArgs<'a> = (
    DepthwiseShape,
    &'a [f32],
    usize,
    &'a [f32],
    &'a [f32],
    usize,
);

/// [`depthwise_simd`] in AVX-512 registers.
///
/// # Safety
/// The CPU has AVX-512F; as [`depthwise_simd`] requires for 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise_avx512(args: DepthwiseArgs, out: &mut [f32]) {
    // SAFETY: as the caller promises.
    unsafe { depthwise_simd::<std::arch::x86_64::__m512>(args, out) }
}

/// [`depthwise_simd`] in AVX2 registers, for CPUs without AVX-512: the plain loops below ran
/// at half its speed there.
///
/// # Safety
/// The CPU has AVX2 and FMA; as [`depthwise_simd`] requires for 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_avx2(args: DepthwiseArgs, out: &mut [f32]) {
    // SAFETY: as the caller promises.
    unsafe { depthwise_simd::<std::arch::x86_64::__m256>(args, out) }
}

/// [`depthwise_relu6`] with the sums in registers of `V`: a chunk of channels at a time over
/// all the rows, so that its weights stay in the L1 cache; the interior of each row in groups
/// of pixels, the edges one pixel at a time.
///
/// # Safety
/// The CPU has `V`'s instructions; the channels are a multiple of `V::LANES`; the lengths are
/// as [`depthwise_relu6`] asserts.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn depthwise_simd<V: Vector>(
    (shape, input, input_row, weights, bias, first_row): DepthwiseArgs,
    out: &mut [f32],
) {
    let DepthwiseShape {
        width: w,
        channels: c,
        kernel: k,
        stride: s,
        ..
    } = shape;
    let (_, columns) = shape.output();
    let (top, left) = shape.padding();
    let (inner_start, inner_end) = shape.interior();
    for from in (0..c).step_by(CHUNK) {
        let chunk = from..(from + CHUNK).min(c);
        for (r, out_row) in out.chunks_exact_mut(columns * c).enumerate() {
            let (y, ky) = shape.taps(first_row + r, top, shape.height);
            let rows = RowTaps {
                input,
                weights,
                bias,
                width: w,
                channels: c,
                y: y - input_row,
                ky,
            };
            let x = inner_start * s - left;
            let span = inner_end - inner_start;
            let out = &mut out_row[inner_start * c..];
            // SAFETY: the interior's taps lie inside the image, its outputs inside `out_row`,
            // and the channels are whole registers, as the caller promises.
            let done = unsafe {
                match (k, s) {
                    (3, 1) => rows.interior_span::<V, 3, 1>(x, span, chunk.clone(), out),
                    (5, 1) => rows.interior_span::<V, 5, 1>(x, span, chunk.clone(), out),
                    (3, 2) => rows.interior_span::<V, 3, 2>(x, span, chunk.clone(), out),
                    (5, 2) => rows.interior_span::<V, 5, 2>(x, span, chunk.clone(), out),
                    _ => 0,
                }
            };
            for ox in (0..inner_start).chain(inner_start + done..columns) {
                let (x, kx) = shape.taps(ox, left, w);
                // SAFETY: as above; `taps` keeps the pixel's taps inside the image.
                unsafe { rows.pixel::<V>(x, kx, k, chunk.clone(), &mut out_row[ox * c..][..c]) };
            }
        }
    }
}

/// A SIMD register of `f32` lanes, for kernels written once for AVX-512 and AVX2. Its
/// functions are inlined into callers compiled with the register's instructions.
#[cfg(target_arch = "x86_64")]
trait Vector: Copy {
    const LANES: usize;
    /// # Safety
    /// The CPU has the instructions; `LANES` values from `from` are readable.
    unsafe fn load(from: *const f32) -> Self;
    /// # Safety
    /// The CPU has the instructions; `LANES` values from `to` are writable.
    unsafe fn store(self, to: *mut f32);
    /// `self * b + c`, fused.
    ///
    /// # Safety
    /// The CPU has the instructions.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `min(max(self, 0), 6)`.
    ///
    /// # Safety
    /// The CPU has the instructions.
    unsafe fn relu6(self) -> Self;
}

#[cfg(target_arch = "x86_64")]
impl Vector for std::arch::x86_64::__m512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(from) }
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(to, self) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(self, b, c) }
    }
    #[inline(always)]
    unsafe fn relu6(self) -> Self {
        use std::arch::x86_64::*;
        // SAFETY: as the caller promises.
        unsafe {
            _mm512_min_ps(
                _mm512_max_ps(self, _mm512_setzero_ps()),
                _mm512_set1_ps(6.0),
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Vector for std::arch::x86_64::__m256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(from) }
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(to, self) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(self, b, c) }
    }
    #[inline(always)]
    unsafe fn relu6(self) -> Self {
        use std::arch::x86_64::*;
        // SAFETY: as the caller promises.
        unsafe {
            _mm256_min_ps(
                _mm256_max_ps(self, _mm256_setzero_ps()),
                _mm256_set1_ps(6.0),
            )
        }
    }
}

/// What the SIMD interior of one output row reads.
#[cfg(target_arch = "x86_64")]
struct RowTaps<'a> {
    input: &'a [f32],
    weights: &'a [f32],
    bias: &'a [f32],
    width: usize,
    channels: usize,
    /// The first input row the taps read, and which kernel rows they are.
    y: usize,
    ky: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
impl RowTaps<'_> {
    /// Output pixels in groups of `P` from input column `x` on, a `K`x`K` kernel of stride
    /// `S`, as many whole groups as fit in `span` pixels; returns the pixels done. Each group's
    /// sums stay in `P` registers per `V::LANES` channels, each weight register serves the
    /// group, and the products are fused multiply-adds.
    ///
    /// # Safety
    /// The CPU has `V`'s instructions; the taps of the `span` pixels lie inside the image (rows
    /// `y..` for `ky`, columns `x..x + (span - 1) * S + K`); `channels` is a multiple of
    /// `V::LANES`; `out` holds at least `span * channels` values.
    #[inline(always)]
    unsafe fn interior<V: Vector, const K: usize, const S: usize, const P: usize>(
        &self,
        x: usize,
        span: usize,
        chunk: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> usize {
        let c = self.channels;
        let groups = span / P;
        assert!(out.len() >= groups * P * c && c.is_multiple_of(V::LANES) && chunk.end <= c);
        assert!(self.input.len() >= ((self.y + self.ky.len()) * self.width) * c);
        assert!(groups == 0 || x + (groups * P - 1) * S + K <= self.width);
        assert!(self.weights.len() >= K * K * c && self.bias.len() >= c);
        let (input, weights, out_ptr) =
            (self.input.as_ptr(), self.weights.as_ptr(), out.as_mut_ptr());
        for at in chunk.step_by(V::LANES) {
            // SAFETY (all loads and stores below): the asserts bound every offset: rows
            // `y + dy < y + ky.len()`, columns `< x + groups * P * S + K`, channels `< c`.
            let bias = unsafe { V::load(self.bias.as_ptr().add(at)) };
            for g in 0..groups {
                let mut sums = [bias; P];
                let column = x + g * P * S;
                for (dy, ty) in self.ky.clone().enumerate() {
                    let row = unsafe { input.add(((self.y + dy) * self.width + column) * c + at) };
                    let taps = unsafe { weights.add(ty * K * c + at) };
                    for tx in 0..K {
                        let t = unsafe { V::load(taps.add(tx * c)) };
                        for (p, sum) in sums.iter_mut().enumerate() {
                            let v = unsafe { V::load(row.add((p * S + tx) * c)) };
                            *sum = unsafe { v.mul_add(t, *sum) };
                        }
                    }
                }
                for (p, sum) in sums.into_iter().enumerate() {
                    unsafe { sum.relu6().store(out_ptr.add((g * P + p) * c + at)) };
                }
            }
        }
        groups * P
    }

    /// All `span` interior pixels from input column `x` on: groups of 8 pixels (stride 1) or
    /// 4, then smaller groups for the rest. Returns `span`.
    ///
    /// # Safety
    /// As [`interior`](Self::interior)'s.
    #[inline(always)]
    unsafe fn interior_span<V: Vector, const K: usize, const S: usize>(
        &self,
        x: usize,
        span: usize,
        chunk: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> usize {
        let c = self.channels;
        let mut done = 0;
        // The pixels from `done` on, in groups of `$p`.
        macro_rules! groups_of {
            ($p:literal) => {
                // SAFETY: the pixels from `done` on are the rest of the same interior.
                done += unsafe {
                    self.interior::<V, K, S, $p>(
                        x + done * S,
                        span - done,
                        chunk.clone(),
                        &mut out[done * c..],
                    )
                }
            };
        }
        if S == 1 {
            groups_of!(8);
        }
        groups_of!(4);
        groups_of!(2);
        groups_of!(1);
        debug_assert_eq!(done, span);
        done
    }

    /// One output pixel whose taps are the kernel columns `kx` starting at input column `x`
    /// (fewer than the kernel's at the edges), sums in registers, `V::LANES` channels at a
    /// time.
    ///
    /// # Safety
    /// The CPU has `V`'s instructions; rows `y..` for `ky` and columns `x..x + kx.len()` lie
    /// inside the image; `kx` lies inside a kernel of side `k`; `channels` is a multiple of
    /// `V::LANES`.
    #[inline(always)]
    unsafe fn pixel<V: Vector>(
        &self,
        x: usize,
        kx: std::ops::Range<usize>,
        k: usize,
        chunk: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let c = self.channels;
        assert!(out.len() >= c && c.is_multiple_of(V::LANES) && kx.end <= k);
        assert!(self.input.len() >= ((self.y + self.ky.len()) * self.width) * c);
        assert!(x + kx.len() <= self.width && self.ky.end <= k);
        assert!(self.weights.len() >= k * k * c && self.bias.len() >= c);
        assert!(chunk.end <= c);
        let mut at = chunk.start;
        while at + 4 * V::LANES <= chunk.end {
            // SAFETY: as this function's; four blocks of channels from `at` lie below `c`.
            unsafe { self.pixel_blocks::<V, 4>(x, kx.clone(), k, at, out) };
            at += 4 * V::LANES;
        }
        while at < chunk.end {
            // SAFETY: as above, one block.
            unsafe { self.pixel_blocks::<V, 1>(x, kx.clone(), k, at, out) };
            at += V::LANES;
        }
    }

    /// [`pixel`](Self::pixel) for `B` blocks of `V::LANES` channels from `at`: `B` independent
    /// sums, so the multiply-adds overlap instead of waiting for each other.
    ///
    /// # Safety
    /// As [`pixel`](Self::pixel)'s, with `at + V::LANES * B <= channels`.
    #[inline(always)]
    unsafe fn pixel_blocks<V: Vector, const B: usize>(
        &self,
        x: usize,
        kx: std::ops::Range<usize>,
        k: usize,
        at: usize,
        out: &mut [f32],
    ) {
        let c = self.channels;
        let (input, weights) = (self.input.as_ptr(), self.weights.as_ptr());
        // SAFETY (all loads and stores below): bounded as `pixel` asserts, channels below
        // `at + V::LANES * B <= c`.
        let mut sums: [V; B] =
            std::array::from_fn(|b| unsafe { V::load(self.bias.as_ptr().add(at + b * V::LANES)) });
        for (dy, ty) in self.ky.clone().enumerate() {
            let row = unsafe { input.add(((self.y + dy) * self.width + x) * c + at) };
            let taps = unsafe { weights.add(ty * k * c + at) };
            for (dx, tx) in kx.clone().enumerate() {
                for (b, sum) in sums.iter_mut().enumerate() {
                    let v = unsafe { V::load(row.add(dx * c + b * V::LANES)) };
                    let t = unsafe { V::load(taps.add(tx * c + b * V::LANES)) };
                    *sum = unsafe { v.mul_add(t, *sum) };
                }
            }
        }
        for (b, sum) in sums.into_iter().enumerate() {
            unsafe { sum.relu6().store(out.as_mut_ptr().add(at + b * V::LANES)) };
        }
    }
}

wide! {
/// One output row of [`depthwise_relu6`], from interior column `from` on (the columns before
/// it done): the interior `from..inner_end` in groups of [`PIXELS`], then the columns left
/// over and the edges one by one.
fn depthwise_row(
    shape: DepthwiseShape,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    rows: (usize, std::ops::Range<usize>),
    columns: (usize, usize, usize),
    out_row: &mut [f32],
) {
    let ((y, ky), (from, inner_start, inner_end)) = (rows, columns);
    let DepthwiseShape { width: w, channels: c, kernel: k, stride: s, .. } = shape;
    let (_, columns) = shape.output();
    let (_, left) = shape.padding();
    let blocks = c / LANES;
    let mut ox = from;
    while ox + PIXELS <= inner_end {
        let x = ox * s - left;
        for b in 0..blocks {
            let at = b * LANES;
            let mut sums = [*lanes(bias, at); PIXELS];
            for (dy, ty) in ky.clone().enumerate() {
                let row = &input[((y + dy) * w + x) * c + at..][..((PIXELS - 1) * s + k - 1) * c + LANES];
                let taps = &weights[ty * k * c + at..][..(k - 1) * c + LANES];
                for tx in 0..k {
                    let t = lanes(taps, tx * c);
                    for (p, sum) in sums.iter_mut().enumerate() {
                        let v = lanes(row, (p * s + tx) * c);
                        for i in 0..LANES {
                            sum[i] += v[i] * t[i];
                        }
                    }
                }
            }
            for (p, sum) in sums.iter().enumerate() {
                let pixel = &mut out_row[(ox + p) * c + at..][..LANES];
                for i in 0..LANES {
                    pixel[i] = sum[i].clamp(0.0, 6.0);
                }
            }
        }
        if blocks * LANES < c {
            for p in 0..PIXELS {
                pixel_relu6(shape, input, weights, bias, (y, ky.clone()), ox + p, blocks * LANES, &mut out_row[(ox + p) * c..][..c]);
            }
        }
        ox += PIXELS;
    }
    for ox in (0..inner_start).chain(ox..columns) {
        pixel_relu6(shape, input, weights, bias, (y, ky.clone()), ox, 0, &mut out_row[ox * c..][..c]);
    }
}
}

/// One output pixel of [`depthwise_relu6`] from channel `from` on, for any column (the edges
/// skip the taps outside the image). The sums build up in `pixel` itself, a tap at a time over
/// all its channels: one plain vector loop per tap, whatever the channel count.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pixel_relu6(
    shape: DepthwiseShape,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    (y, ky): (usize, std::ops::Range<usize>),
    ox: usize,
    from: usize,
    pixel: &mut [f32],
) {
    let DepthwiseShape {
        width: w,
        channels: c,
        kernel: k,
        ..
    } = shape;
    let (_, left) = shape.padding();
    let (x, kx) = shape.taps(ox, left, w);
    let pixel = &mut pixel[from..c];
    pixel.copy_from_slice(&bias[from..c]);
    for (dy, ty) in ky.enumerate() {
        for (dx, tx) in kx.clone().enumerate() {
            let v = &input[((y + dy) * w + x + dx) * c + from..][..c - from];
            let t = &weights[(ty * k + tx) * c + from..][..c - from];
            for ((sum, v), t) in pixel.iter_mut().zip(v).zip(t) {
                *sum += v * t;
            }
        }
    }
    pixel.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0));
}

wide! {
/// Adds each row of `rows` (`sums.len()` values each) to `sums`, or with `floor` the cube of
/// each value raised to at least `floor`: the sums behind average and generalised-mean pooling.
pub fn sum_rows(rows: &[f32], sums: &mut [f32], floor: Option<f32>) {
    for row in rows.chunks_exact(sums.len()) {
        match floor {
            Some(floor) => {
                for (s, v) in sums.iter_mut().zip(row) {
                    let v = v.max(floor);
                    *s += v * v * v;
                }
            }
            None => {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::{DepthwiseShape, depthwise_relu6, sum_rows, transpose};

    #[test]
    fn transpose_moves_every_value_for_whole_and_partial_blocks() {
        for (rows, cols) in [(16, 24), (13, 21), (3, 5625), (1369, 32)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![-1.0; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * rows + i],
                        src[i * cols + j],
                        "{rows}x{cols} at ({i}, {j})"
                    );
                }
            }
        }
    }

    /// Seeded values in -1..1, one per call, from a linear congruential generator.
    pub(super) fn uniform(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Depthwise convolution by its definition: every tap, the padding as zeros.
    fn depthwise_by_definition(
        shape: DepthwiseShape,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let DepthwiseShape {
            height: h,
            width: w,
            channels: c,
            kernel: k,
            stride: s,
        } = shape;
        let (oh, ow) = shape.output();
        let (top, left) = shape.padding();
        let mut out = vec![0.0; oh * ow * c];
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut sum = bias[ch];
                    for ky in 0..k {
                        for kx in 0..k {
                            let (y, x) = (
                                (oy * s + ky) as isize - top as isize,
                                (ox * s + kx) as isize - left as isize,
                            );
                            if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                                sum += input[(y as usize * w + x as usize) * c + ch]
                                    * weights[(ky * k + kx) * c + ch];
                            }
                        }
                    }
                    out[(oy * ow + ox) * c + ch] = sum.clamp(0.0, 6.0);
                }
            }
        }
        out
    }

    #[test]
    fn depthwise_matches_its_definition_for_every_kernel_stride_and_channel_count() {
        // 16, 32 and 48 channels take the AVX-512 kernels where the CPU has them, 24 the AVX2
        // ones where it has AVX2 but not AVX-512 (and below, wherever it has AVX2), 20 the
        // portable loops everywhere; the sizes give interiors of every width and edges on all
        // sides.
        let mut next = uniform(1);
        for (channels, kernel, stride, height, width) in [
            (16, 3, 1, 7, 7),
            (48, 5, 1, 14, 13),
            (24, 5, 1, 9, 11),
            (16, 3, 2, 12, 17),
            (48, 5, 2, 15, 10),
            (24, 3, 2, 8, 9),
            (32, 5, 1, 3, 4),
            (20, 3, 1, 7, 9),
            (20, 5, 2, 9, 8),
        ] {
            let shape = DepthwiseShape {
                height,
                width,
                channels,
                kernel,
                stride,
            };
            let input: Vec<f32> = (0..height * width * channels)
                .map(|_| 3.0 * next())
                .collect();
            let weights: Vec<f32> = (0..kernel * kernel * channels).map(|_| next()).collect();
            let bias: Vec<f32> = (0..channels).map(|_| next()).collect();
            let want = depthwise_by_definition(shape, &input, &weights, &bias);
            let (oh, ow) = shape.output();
            // All rows at once, and the lower rows alone from a later input row, as a strip.
            let mut got = vec![f32::NAN; oh * ow * channels];
            depthwise_relu6(shape, &input, 0, &weights, &bias, 0, &mut got);
            let first = oh / 2;
            let from = (first * stride).saturating_sub(shape.padding().0);
            let mut lower = vec![f32::NAN; (oh - first) * ow * channels];
            depthwise_relu6(
                shape,
                &input[from * width * channels..],
                from,
                &weights,
                &bias,
                first,
                &mut lower,
            );
            let what = format!(
                "{channels} channels, {kernel}x{kernel}, stride {stride}, {height}x{width}"
            );
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5, "{what}: value {i} is {a}, not {b}");
            }
            assert_eq!(
                &lower[..],
                &got[first * ow * channels..],
                "{what}: the strip"
            );
            // The AVX2 kernels also on CPUs that would take the AVX-512 ones.
            #[cfg(target_arch = "x86_64")]
            if channels % 8 == 0
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut avx2 = vec![f32::NAN; oh * ow * channels];
                let args = (shape, &input[..], 0, &weights[..], &bias[..], 0);
                // SAFETY: the CPU has AVX2 and FMA, the channels are whole 8-lane registers,
                // and the buffers are the whole image's.
                unsafe { super::depthwise_avx2(args, &mut avx2) };
                for (i, (a, b)) in avx2.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "{what}: AVX2 value {i} is {a}, not {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn pooling_sums_are_plain_or_of_floored_cubes() {
        let rows = [1.0, -2.0, 3.0, 0.5];
        let mut sums = [0.0; 2];
        sum_rows(&rows, &mut sums, None);
        assert_eq!(sums, [4.0, -1.5]);
        let mut cubes = [0.0; 2];
        sum_rows(&rows, &mut cubes, Some(1e-6));
        assert!(
            (cubes[0] - 28.0).abs() < 1e-6 && (cubes[1] - (1e-18 + 0.125)).abs() < 1e-6,
            "{cubes:?}"
        );
    }
}
