//! 1x1 convolutions on channels-last pixels with weights packed once: `out = input x weights +
//! bias`, then ReLU6, or added to what `out` holds (a residual), in one pass.
//!
//! A general matrix product packs its right-hand side on every call; for EfficientNet's late
//! layers, whose weights outweigh the few pixels they see, that packing was most of the work,
//! and the bias, the clamp and the residual took passes of their own. Here the weights are
//! packed when the network is frozen, in panels of 16 output channels (one AVX-512 register,
//! two AVX2 ones); a tile of up to [`TILE_ROWS`] pixels x 2 panels (AVX-512) or
//! [`TILE_ROWS_AVX2`] pixels x 1 panel (AVX2) keeps its sums in registers for all the inputs,
//! and the epilogue runs on them before they are stored. With AVX-512, a panel of 8 columns or
//! fewer (24 and 40 outputs end in one) keeps its sums in AVX2 registers, which cost half as
//! much to multiply and add: those layers ran at 82-93 GFLOP/s on one core, the others at
//! 100-113, and now at 97-109.

use std::ops::Range;

/// Output channels per panel: one AVX-512 register of `f32`.
pub(crate) const PANEL: usize = 16;
/// Pixels per register tile: 2 panels x 12 rows of sums, the two panels' weights and a
/// broadcast input fill 27 of the 32 AVX-512 registers.
const TILE_ROWS: usize = 12;
/// Pixels per AVX2 register tile: 6 rows x 2 registers of sums, the panel's two weight
/// registers and a broadcast input fill 15 of the 16 AVX2 registers.
const TILE_ROWS_AVX2: usize = 6;
/// Pixels per cache block: their inputs stay in the L2 cache while every panel passes over them.
const BLOCK_ROWS: usize = 8 * TILE_ROWS;

/// What happens to the sums before they are stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Epilogue<'a> {
    /// `min(max(sum + bias, 0), 6)`.
    Relu6,
    /// `sum + bias`.
    Linear,
    /// `residual + sum + bias`: the block's input (laid out as `out`) plus the projection.
    Residual(&'a [f32]),
}

impl<'a> Epilogue<'a> {
    /// The same epilogue for the rows from `row` on (of `outputs` values each).
    pub fn at_row(self, row: usize, outputs: usize) -> Epilogue<'a> {
        match self {
            Epilogue::Residual(residual) => Epilogue::Residual(&residual[row * outputs..]),
            other => other,
        }
    }

    /// The epilogue on one sum (bias included) that goes to `out[at]`.
    fn on(self, sum: f32, at: usize) -> f32 {
        match self {
            Epilogue::Relu6 => sum.clamp(0.0, 6.0),
            Epilogue::Linear => sum,
            Epilogue::Residual(residual) => residual[at] + sum,
        }
    }
}

/// The instructions the sums are computed with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    /// The widest this CPU has, found once.
    fn detected() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| Isa::available()[0])
    }

    /// Those this CPU has, widest first.
    fn available() -> Vec<Isa> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Isa::Avx2);
            }
        }
        isas.push(Isa::Portable);
        isas
    }
}

/// A 1x1 convolution's weights and bias, packed.
#[derive(Debug)]
pub(crate) struct PackedPointwise {
    pub inputs: usize,
    pub outputs: usize,
    /// `[panel][input][PANEL]`, the last panel padded with zeros, then one panel of zeros.
    panels: Vec<f32>,
    /// Padded like the panels.
    bias: Vec<f32>,
}

impl PackedPointwise {
    /// Packs `weights` (`[inputs, outputs]`, row-major) and `bias` (`[outputs]`).
    pub fn new(weights: &[f32], bias: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(weights.len(), inputs * outputs);
        assert_eq!(bias.len(), outputs);
        // One more, of zeros: the kernel computes panels in pairs, from any panel.
        let count = outputs.div_ceil(PANEL) + 1;
        let mut panels = vec![0.0; count * inputs * PANEL];
        for (p, panel) in panels.chunks_exact_mut(inputs * PANEL).enumerate() {
            let columns = (p * PANEL).min(outputs)..((p + 1) * PANEL).min(outputs);
            for (i, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                row[..columns.len()].copy_from_slice(&weights[i * outputs..][columns.clone()]);
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(count * PANEL, 0.0);
        PackedPointwise {
            inputs,
            outputs,
            panels,
            bias: padded,
        }
    }

    /// How many panels of [`PANEL`] output channels there are.
    pub fn panel_count(&self) -> usize {
        self.outputs.div_ceil(PANEL)
    }

    /// The convolution of `input` (`[pixels, inputs]`) into `out` (`[pixels, outputs]`), for
    /// the output channels of `panels` only.
    pub fn run(&self, input: &[f32], out: &mut [f32], epilogue: Epilogue, panels: Range<usize>) {
        let (k, n) = (self.inputs, self.outputs);
        let pixels = out.len() / n;
        assert_eq!(out.len(), pixels * n, "whole rows of {n} outputs");
        assert!(input.len() >= pixels * k, "{pixels} rows of {k} inputs");
        assert!(panels.end <= self.panel_count());
        if let Epilogue::Residual(residual) = epilogue {
            assert!(residual.len() >= pixels * n, "a residual for every output");
        }
        // SAFETY: `out` is borrowed mutably for the whole call, so it aliases nothing else.
        unsafe { self.run_raw(input, out.as_mut_ptr(), pixels, epilogue, panels) }
    }

    /// As [`run`](Self::run) through a raw `out` of `pixels` rows, so that threads can fill
    /// disjoint panels of the same rows.
    ///
    /// # Safety
    /// `out` points at `pixels * outputs` writable values that no one else reads or writes in
    /// the columns of `panels` during the call; `input` holds `pixels * inputs` values, a
    /// residual `pixels * outputs`.
    pub unsafe fn run_raw(
        &self,
        input: &[f32],
        out: *mut f32,
        pixels: usize,
        epilogue: Epilogue,
        panels: Range<usize>,
    ) {
        debug_assert!(input.len() >= pixels * self.inputs);
        if let Epilogue::Residual(residual) = epilogue {
            debug_assert!(residual.len() >= pixels * self.outputs);
        }
        // SAFETY: `Isa::detected` is what this CPU has; otherwise as the caller promises.
        unsafe { self.run_with(Isa::detected(), input, out, pixels, epilogue, panels) }
    }

    /// As [`run_raw`](Self::run_raw), with the instructions of `isa`.
    ///
    /// # Safety
    /// The CPU has `isa`'s instructions; otherwise as [`run_raw`](Self::run_raw).
    unsafe fn run_with(
        &self,
        isa: Isa,
        input: &[f32],
        out: *mut f32,
        pixels: usize,
        epilogue: Epilogue,
        panels: Range<usize>,
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                for first in (0..pixels).step_by(BLOCK_ROWS) {
                    let rows = first..(first + BLOCK_ROWS).min(pixels);
                    // SAFETY: as this function's caller promises, for these rows.
                    unsafe { self.block_avx512(input, out, rows, epilogue, panels.clone()) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                for first in (0..pixels).step_by(BLOCK_ROWS) {
                    let rows = first..(first + BLOCK_ROWS).min(pixels);
                    // SAFETY: as this function's caller promises, for these rows.
                    unsafe { self.block_avx2(input, out, rows, epilogue, panels.clone()) };
                }
            }
            // SAFETY: as this function's caller promises.
            Isa::Portable => unsafe { self.portable(input, out, pixels, epilogue, panels) },
        }
    }

    /// The rows `rows` for `panels`, one panel (two AVX2 registers) and up to
    /// [`TILE_ROWS_AVX2`] rows at a time, for CPUs with AVX2 and FMA but not AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; otherwise as [`run_raw`](Self::run_raw), for `rows`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(
        &self,
        input: &[f32],
        out: *mut f32,
        rows: Range<usize>,
        epilogue: Epilogue,
        panels: Range<usize>,
    ) {
        let (k, n) = (self.inputs, self.outputs);
        for p in panels {
            let weights = &self.panels[p * k * PANEL..][..k * PANEL];
            let bias = &self.bias[p * PANEL..][..PANEL];
            let mut row = rows.start;
            while row < rows.end {
                let count = (rows.end - row).min(TILE_ROWS_AVX2);
                let x = &input[row * k..][..count * k];
                let sink = Sink {
                    out,
                    outputs: n,
                    row,
                    column: p * PANEL,
                    masks: [panel_mask(n, p), 0],
                    epilogue,
                };
                // SAFETY: AVX2 and FMA are present; each tile reads the `x` rows and the
                // panel taken above and stores `count` rows of the caller's promised columns.
                unsafe {
                    match count {
                        5.. => half_6(x, k, weights, bias, &sink),
                        3..=4 => half_4(x, k, weights, bias, &sink),
                        _ => half_2(x, k, weights, bias, &sink),
                    }
                };
                row += count;
            }
        }
    }

    /// Sums in plain loops, for CPUs without AVX2.
    ///
    /// # Safety
    /// As [`run_raw`](Self::run_raw).
    unsafe fn portable(
        &self,
        input: &[f32],
        out: *mut f32,
        pixels: usize,
        epilogue: Epilogue,
        panels: Range<usize>,
    ) {
        let (k, n) = (self.inputs, self.outputs);
        let mut sums = [0.0f32; PANEL];
        for p in panels {
            let weights = &self.panels[p * k * PANEL..][..k * PANEL];
            let columns = p * PANEL..((p + 1) * PANEL).min(n);
            for r in 0..pixels {
                sums.copy_from_slice(&self.bias[p * PANEL..][..PANEL]);
                for (&x, w) in input[r * k..][..k].iter().zip(weights.chunks_exact(PANEL)) {
                    for (s, w) in sums.iter_mut().zip(w) {
                        *s += x * w;
                    }
                }
                for (j, &s) in columns.clone().zip(&sums) {
                    // SAFETY: row `r` < `pixels`, column `j` < `outputs`, as promised.
                    unsafe { *out.add(r * n + j) = epilogue.on(s, r * n + j) };
                }
            }
        }
    }

    /// The rows `rows` for `panels`, two panels and up to [`TILE_ROWS`] rows at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; otherwise as [`run_raw`](Self::run_raw), for `rows`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512(
        &self,
        input: &[f32],
        out: *mut f32,
        rows: Range<usize>,
        epilogue: Epilogue,
        panels: Range<usize>,
    ) {
        let (k, n) = (self.inputs, self.outputs);
        // Panel `p` has 8 columns or fewer: its sums fit an AVX2 register, which takes half
        // the time of an AVX-512 one to multiply and add.
        let narrow = |p: usize| panel_mask(n, p) >> (PANEL / 2) == 0;
        for pair in (panels.start..panels.end).step_by(2) {
            let weights = &self.panels[pair * k * PANEL..][..2 * k * PANEL];
            let bias = &self.bias[pair * PANEL..][..2 * PANEL];
            let mut row = rows.start;
            while row < rows.end {
                let left = rows.end - row;
                let count = left.min(TILE_ROWS);
                let x = &input[row * k..][..count * k];
                let sink = Sink {
                    out,
                    outputs: n,
                    row,
                    column: pair * PANEL,
                    masks: [panel_mask(n, pair), panel_mask(n, pair + 1)],
                    epilogue,
                };
                // SAFETY: AVX-512F is present; each tile reads the `x` rows and `weights`
                // taken above and stores `count` rows of the caller's promised columns.
                unsafe {
                    match (pair + 1 == panels.end, narrow(pair + 1), count) {
                        // The last panel alone: half the work of a pair, and a quarter when
                        // it has 8 columns or fewer (40 outputs are 16 + 16 + 8).
                        (true, _, _) if narrow(pair) => match count {
                            9.. => lone_half_12(x, k, weights, bias, &sink),
                            5..=8 => lone_half_8(x, k, weights, bias, &sink),
                            _ => lone_half_4(x, k, weights, bias, &sink),
                        },
                        (true, _, 9..) => single_12(x, k, weights, bias, &sink),
                        (true, _, 5..=8) => single_8(x, k, weights, bias, &sink),
                        (true, _, _) => single_4(x, k, weights, bias, &sink),
                        // 24 outputs: a panel and a half.
                        (false, true, 9..) => pair_half_12(x, k, weights, bias, &sink),
                        (false, true, 5..=8) => pair_half_8(x, k, weights, bias, &sink),
                        (false, true, _) => pair_half_4(x, k, weights, bias, &sink),
                        (false, false, 9..) => tile_12(x, k, weights, bias, &sink),
                        (false, false, 5..=8) => tile_8(x, k, weights, bias, &sink),
                        (false, false, _) => tile_4(x, k, weights, bias, &sink),
                    }
                };
                row += count;
            }
        }
    }
}

/// The columns of panel `p` of `outputs` that exist, one bit each; the padding's are not
/// stored.
fn panel_mask(outputs: usize, p: usize) -> u16 {
    match outputs.saturating_sub(p * PANEL) {
        left if left >= PANEL => u16::MAX,
        left => (1u16 << left) - 1,
    }
}

/// Where a tile's sums go: the epilogue is applied to them (their bias already in) in the
/// registers, and they are stored into `out` from row `row` and column `column`, the columns
/// past the outputs masked. Storing from the tile's own registers matters for the early layers'
/// few inputs: handing 24 sums back through memory cost as much as computing them.
#[cfg(target_arch = "x86_64")]
struct Sink<'a> {
    out: *mut f32,
    outputs: usize,
    row: usize,
    column: usize,
    /// The columns of each of the two panels that exist.
    masks: [u16; 2],
    epilogue: Epilogue<'a>,
}

#[cfg(target_arch = "x86_64")]
use super::Vector;

#[cfg(target_arch = "x86_64")]
impl Sink<'_> {
    /// Stores the sums of row `r` of the tile, panel `q` (0 or 1).
    ///
    /// # Safety
    /// The CPU has AVX-512F; the row and the panel's masked columns are the caller's to write.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn put(&self, r: usize, q: usize, sum: std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        let at = (self.row + r) * self.outputs + self.column + q * PANEL;
        let mask = self.masks[q];
        // SAFETY: as the caller promises; a residual is laid out as `out`.
        unsafe {
            let v = match self.epilogue {
                Epilogue::Relu6 => sum.relu6(),
                Epilogue::Linear => sum,
                Epilogue::Residual(residual) => {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, residual.as_ptr().add(at)), sum)
                }
            };
            _mm512_mask_storeu_ps(self.out.add(at), mask, v);
        }
    }

    /// Stores the sums of row `r` of an 8-lane register, half `h` (0 to 3) of the two panels:
    /// the first panel's halves in an AVX2 tile, the second's first half beside an AVX-512
    /// register, or a lone panel of 8 columns or fewer.
    ///
    /// # Safety
    /// The CPU has AVX2; the row and the half's masked columns are the caller's to write.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn put_half(&self, r: usize, h: usize, sum: std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        const HALF: usize = PANEL / 2;
        let at = (self.row + r) * self.outputs + self.column + h * HALF;
        // Masks are prefixes: the lanes of this half that exist.
        let lanes = ((self.masks[h / 2] >> (h % 2 * HALF)) & 0xff).count_ones() as i32;
        if lanes == 0 {
            return;
        }
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(lanes),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        // SAFETY: as the caller promises; a residual is laid out as `out`.
        unsafe {
            let v = match self.epilogue {
                Epilogue::Relu6 => sum.relu6(),
                Epilogue::Linear => sum,
                Epilogue::Residual(residual) => {
                    _mm256_add_ps(_mm256_maskload_ps(residual.as_ptr().add(at), mask), sum)
                }
            };
            if lanes == HALF as i32 {
                _mm256_storeu_ps(self.out.add(at), v);
            } else {
                _mm256_maskstore_ps(self.out.add(at), mask, v);
            }
        }
    }
}

/// Defines `$name(x, k, weights, bias, sink)`: the sums of the first `$rows` rows of `x` (`k`
/// inputs each; rows past those `x` holds repeat its last and are not stored) times `weights`
/// plus `bias`, two registers `a` and `b` a row, put into `sink` as halves or panels `$qa` and
/// `$qb` by `Sink::$put_a` and `Sink::$put_b`. `a` holds `$lanes` columns from `weights`' and
/// `bias`'s start; `b`'s weights start at `$second`, its bias at `$lanes`, and it is multiplied
/// by the broadcast input through `$narrow` (to an AVX2 register beside an AVX-512 one). With
/// AVX-512 the two registers are two panels, or a panel and the first half of the next; with
/// AVX2 the two halves of one panel. Each sum is a named register for the whole loop (arrays
/// indexed in a loop were kept on the stack).
#[cfg(target_arch = "x86_64")]
macro_rules! tile {
    (
        $name:ident, $rows:literal, $feature:literal, $isa:literal, $set1:ident,
        a $load_a:ident $fmadd_a:ident $put_a:ident $qa:literal,
        b $load_b:ident $fmadd_b:ident $put_b:ident $qb:literal $narrow:path,
        second weights $k:ident => $second:expr, lanes $lanes:expr,
        $($r:literal $a:ident $b:ident),*
    ) => {
        #[doc = concat!("# Safety\nThe CPU has ", $isa, "; `x` holds at least one row of `k` \
            values, `weights` and `bias` both registers' values; `sink` as the `put` it is \
            stored by requires for each of `x`'s rows.")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(x: &[f32], $k: usize, weights: &[f32], bias: &[f32], sink: &Sink) {
            use std::arch::x86_64::*;
            assert!(x.len() >= $k && x.len().is_multiple_of($k));
            assert!(weights.len() >= $second + ($k - 1) * PANEL + $lanes && bias.len() >= 2 * $lanes);
            let count = x.len() / $k;
            let w = weights.as_ptr();
            let rows = [$(x[$r.min(count - 1) * $k..].as_ptr()),*];
            // SAFETY: `bias` holds both registers' values, as asserted.
            let (bias0, bias1) = unsafe {
                ($load_a(bias.as_ptr()), $load_b(bias.as_ptr().add($lanes)))
            };
            $(let mut $a = bias0; let mut $b = bias1;)*
            for i in 0..$k {
                // SAFETY: `i < k` stays inside each row and both registers' weights.
                unsafe {
                    let w0 = $load_a(w.add(i * PANEL));
                    let w1 = $load_b(w.add($second + i * PANEL));
                    $(
                        let v = $set1(*rows[$r].add(i));
                        $a = $fmadd_a(v, w0, $a);
                        $b = $fmadd_b($narrow(v), w1, $b);
                    )*
                }
            }
            $(
                if $r < count {
                    // SAFETY: row `$r` is one of `x`'s, as the caller promises for them.
                    unsafe {
                        sink.$put_a($r, $qa, $a);
                        sink.$put_b($r, $qb, $b);
                    }
                }
            )*
        }
    };
}

/// As [`tile!`] for one register a row: an AVX-512 panel stored by [`Sink::put`], or (with
/// AVX2 instructions) a lone panel of 8 columns or fewer stored by [`Sink::put_half`].
#[cfg(target_arch = "x86_64")]
macro_rules! single {
    ($name:ident, $rows:literal, $load:ident, $set1:ident, $fmadd:ident, $put:ident,
        $($r:literal $a:ident),*) => {
        /// # Safety
        /// The CPU has AVX-512F; `x` holds at least one row of `k` values, `weights` a panel;
        /// `sink` as its `put` requires for each of `x`'s rows.
        #[target_feature(enable = "avx512f")]
        unsafe fn $name(x: &[f32], k: usize, weights: &[f32], bias: &[f32], sink: &Sink) {
            use std::arch::x86_64::*;
            assert!(x.len() >= k && x.len().is_multiple_of(k) && weights.len() >= k * PANEL);
            assert!(bias.len() >= PANEL);
            let count = x.len() / k;
            let w = weights.as_ptr();
            let rows = [$(x[$r.min(count - 1) * k..].as_ptr()),*];
            // SAFETY: `bias` holds a panel.
            let bias0 = unsafe { $load(bias.as_ptr()) };
            $(let mut $a = bias0;)*
            for i in 0..k {
                // SAFETY: `i < k` stays inside each row and the panel.
                unsafe {
                    let w0 = $load(w.add(i * PANEL));
                    $($a = $fmadd($set1(*rows[$r].add(i)), w0, $a);)*
                }
            }
            $(
                if $r < count {
                    // SAFETY: row `$r` is one of `x`'s, as the caller promises for them.
                    unsafe { sink.$put($r, 0, $a) };
                }
            )*
        }
    };
}

/// The broadcast input as it is, for a register as wide as the one it was broadcast to.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn same<T>(v: T) -> T {
    v
}

/// [`tile!`] with AVX2: one panel in two 8-lane halves.
#[cfg(target_arch = "x86_64")]
macro_rules! half {
    ($name:ident, $rows:literal, $($rest:tt)*) => {
        tile!($name, $rows, "avx2,fma", "AVX2 and FMA", _mm256_set1_ps,
            a _mm256_loadu_ps _mm256_fmadd_ps put_half 0,
            b _mm256_loadu_ps _mm256_fmadd_ps put_half 1 same,
            second weights k => PANEL / 2, lanes PANEL / 2,
            $($rest)*);
    };
}

/// [`tile!`] with AVX-512: two panels.
#[cfg(target_arch = "x86_64")]
macro_rules! pair {
    ($name:ident, $rows:literal, $($rest:tt)*) => {
        tile!($name, $rows, "avx512f", "AVX-512F", _mm512_set1_ps,
            a _mm512_loadu_ps _mm512_fmadd_ps put 0,
            b _mm512_loadu_ps _mm512_fmadd_ps put 1 same,
            second weights k => k * PANEL, lanes PANEL,
            $($rest)*);
    };
}

/// [`tile!`] with AVX-512 for a panel and a second of 8 columns or fewer, in an AVX2 register.
#[cfg(target_arch = "x86_64")]
macro_rules! pair_half {
    ($name:ident, $rows:literal, $($rest:tt)*) => {
        tile!($name, $rows, "avx512f", "AVX-512F", _mm512_set1_ps,
            a _mm512_loadu_ps _mm512_fmadd_ps put 0,
            b _mm256_loadu_ps _mm256_fmadd_ps put_half 2 _mm512_castps512_ps256,
            second weights k => k * PANEL, lanes PANEL,
            $($rest)*);
    };
}

#[cfg(target_arch = "x86_64")]
half!(half_6, 6, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3, 4 a4 b4, 5 a5 b5);
#[cfg(target_arch = "x86_64")]
half!(half_4, 4, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3);
#[cfg(target_arch = "x86_64")]
half!(half_2, 2, 0 a0 b0, 1 a1 b1);

#[cfg(target_arch = "x86_64")]
single!(single_12, 12, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, put,
    0 a0, 1 a1, 2 a2, 3 a3, 4 a4, 5 a5, 6 a6, 7 a7, 8 a8, 9 a9, 10 a10, 11 a11);
#[cfg(target_arch = "x86_64")]
single!(single_8, 8, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, put,
    0 a0, 1 a1, 2 a2, 3 a3, 4 a4, 5 a5, 6 a6, 7 a7);
#[cfg(target_arch = "x86_64")]
single!(single_4, 4, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, put,
    0 a0, 1 a1, 2 a2, 3 a3);

#[cfg(target_arch = "x86_64")]
single!(lone_half_12, 12, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, put_half,
    0 a0, 1 a1, 2 a2, 3 a3, 4 a4, 5 a5, 6 a6, 7 a7, 8 a8, 9 a9, 10 a10, 11 a11);
#[cfg(target_arch = "x86_64")]
single!(lone_half_8, 8, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, put_half,
    0 a0, 1 a1, 2 a2, 3 a3, 4 a4, 5 a5, 6 a6, 7 a7);
#[cfg(target_arch = "x86_64")]
single!(lone_half_4, 4, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, put_half,
    0 a0, 1 a1, 2 a2, 3 a3);

#[cfg(target_arch = "x86_64")]
pair!(tile_12, 12, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3, 4 a4 b4, 5 a5 b5, 6 a6 b6, 7 a7 b7,
    8 a8 b8, 9 a9 b9, 10 a10 b10, 11 a11 b11);
#[cfg(target_arch = "x86_64")]
pair!(tile_8, 8, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3, 4 a4 b4, 5 a5 b5, 6 a6 b6, 7 a7 b7);
#[cfg(target_arch = "x86_64")]
pair!(tile_4, 4, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3);

#[cfg(target_arch = "x86_64")]
pair_half!(pair_half_12, 12, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3, 4 a4 b4, 5 a5 b5, 6 a6 b6,
    7 a7 b7, 8 a8 b8, 9 a9 b9, 10 a10 b10, 11 a11 b11);
#[cfg(target_arch = "x86_64")]
pair_half!(pair_half_8, 8, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3, 4 a4 b4, 5 a5 b5, 6 a6 b6,
    7 a7 b7);
#[cfg(target_arch = "x86_64")]
pair_half!(pair_half_4, 4, 0 a0 b0, 1 a1 b1, 2 a2 b2, 3 a3 b3);

#[cfg(test)]
mod tests {
    use super::*;

    /// `[rows, outputs]` by the definition, in f64.
    fn by_definition(
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        (rows, k, n): (usize, usize, usize),
        epilogue: Epilogue,
    ) -> Vec<f32> {
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let mut s = bias[j] as f64;
                for i in 0..k {
                    s += input[r * k + i] as f64 * weights[i * n + j] as f64;
                }
                out[r * n + j] = match epilogue {
                    Epilogue::Relu6 => s.clamp(0.0, 6.0),
                    Epilogue::Linear => s,
                    Epilogue::Residual(residual) => residual[r * n + j] as f64 + s,
                } as f32;
            }
        }
        out
    }

    #[test]
    fn packed_pointwise_matches_its_definition_for_every_epilogue_and_ragged_shape() {
        let mut next = super::super::tests::uniform(5);
        // Rows past a cache block and in partial tiles; outputs in whole, odd and partial
        // panels (8, 24, 40 and 33 end in a panel of 8 columns or fewer, which AVX-512 takes
        // in an AVX2 register, alone or beside a whole one); one input.
        for (rows, k, n) in [
            (1, 16, 8),
            (13, 24, 40),
            (97, 40, 24),
            (200, 96, 48),
            (7, 1, 33),
        ] {
            let input: Vec<f32> = (0..rows * k).map(|_| 3.0 * next()).collect();
            let weights: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let residual: Vec<f32> = (0..rows * n).map(|_| next()).collect();
            // What `out` held before: overwritten, never read.
            let before = vec![f32::NAN; rows * n];
            let packed = PackedPointwise::new(&weights, &bias, k, n);
            for epilogue in [
                Epilogue::Relu6,
                Epilogue::Linear,
                Epilogue::Residual(&residual),
            ] {
                let want = by_definition(&input, &weights, &bias, (rows, k, n), epilogue);
                let mut got = before.clone();
                packed.run(&input, &mut got, epilogue, 0..packed.panel_count());
                // Half the panels, then the rest: the panels a thread leaves are untouched.
                let mut halves = before.clone();
                let middle = packed.panel_count() / 2;
                packed.run(&input, &mut halves, epilogue, 0..middle);
                packed.run(&input, &mut halves, epilogue, middle..packed.panel_count());
                let what = format!("{rows} x {k} -> {n}, {epilogue:?}");
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-4, "{what}: value {i} is {a}, not {b}");
                }
                // Every path this CPU can run, not only the widest.
                for isa in Isa::available() {
                    let mut by_isa = before.clone();
                    // SAFETY: the CPU has `isa`; `by_isa` holds `rows * n` values.
                    unsafe {
                        let panels = 0..packed.panel_count();
                        packed.run_with(isa, &input, by_isa.as_mut_ptr(), rows, epilogue, panels)
                    };
                    for (i, (c, b)) in by_isa.iter().zip(&want).enumerate() {
                        assert!(
                            (c - b).abs() <= 1e-4,
                            "{what}: {isa:?} value {i} is {c}, not {b}"
                        );
                    }
                }
                assert_eq!(halves, got, "{what}: by halves");
            }
        }
    }
}
