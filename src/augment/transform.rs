//! One drawn augmentation and its application to an image.
//!
//! The affine part maps *output* pixel indices to *input* coordinates (pull resampling), in
//! (row, column) index space around the centre (rows/2 + 0.5, cols/2 + 0.5), as
//! keras-preprocessing 1.1.2 builds it for `scipy.ndimage.affine_transform`. Edge handling follows
//! SciPy's `map_coordinate` for each fill mode, and neighbours that fall outside the image while
//! interpolating are brought back inside by the fill mode's own rule, as SciPy does.

use serde::{Deserialize, Serialize};

use super::params::FillMode;

/// A row-major `rows x cols x 3` image of values on the 0..255 scale.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a, T> {
    pub pixels: &'a [T],
    pub rows: usize,
    pub cols: usize,
}

/// The parameters of one augmentation, in Keras' names and units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Rotation in degrees.
    pub theta: f64,
    /// Offset along the row axis in pixels (Keras' `tx`, drawn from `height_shift_range`).
    pub tx: f64,
    /// Offset along the column axis in pixels (Keras' `ty`, drawn from `width_shift_range`).
    pub ty: f64,
    /// Shear angle in degrees.
    pub shear: f64,
    /// Zoom along rows and columns; above 1 shrinks the content.
    pub zx: f64,
    pub zy: f64,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    /// Added to every channel, then clipped to the image's own minimum and maximum.
    pub channel_shift: Option<f64>,
    /// Brightness factor, applied as PIL's `ImageEnhance.Brightness` after Keras'
    /// min-max scaling to 8 bits.
    pub brightness: Option<f64>,
    pub fill_mode: FillMode,
    /// The fill value of `FillMode::Constant`.
    pub cval: f32,
}

impl Default for Transform {
    fn default() -> Self {
        Transform {
            theta: 0.0,
            tx: 0.0,
            ty: 0.0,
            shear: 0.0,
            zx: 1.0,
            zy: 1.0,
            flip_horizontal: false,
            flip_vertical: false,
            channel_shift: None,
            brightness: None,
            fill_mode: FillMode::Nearest,
            cval: 0.0,
        }
    }
}

type Mat3 = [[f64; 3]; 3];

/// A 3x3 product accumulated with fused multiply-adds in k order, as NumPy's `dot` (OpenBLAS)
/// does. Rounding matters here: a coordinate that lands a hair below 0 instead of on it turns
/// a border pixel into the fill value, and Keras' outputs must be reproduced.
fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = a[i][2].mul_add(b[2][j], a[i][1].mul_add(b[1][j], a[i][0] * b[0][j]));
        }
    }
    c
}

impl Transform {
    /// The output-to-input matrix around the image centre, or `None` for the identity (which
    /// Keras skips without resampling).
    pub fn affine(&self, rows: usize, cols: usize) -> Option<Mat3> {
        let mut m: Option<Mat3> = None;
        let mut then = |factor: Mat3| {
            m = Some(match m {
                None => factor,
                Some(prev) => matmul(&prev, &factor),
            })
        };
        if self.theta != 0.0 {
            let (s, c) = self.theta.to_radians().sin_cos();
            then([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]);
        }
        if self.tx != 0.0 || self.ty != 0.0 {
            then([[1.0, 0.0, self.tx], [0.0, 1.0, self.ty], [0.0, 0.0, 1.0]]);
        }
        if self.shear != 0.0 {
            let (s, c) = self.shear.to_radians().sin_cos();
            then([[1.0, -s, 0.0], [0.0, c, 0.0], [0.0, 0.0, 1.0]]);
        }
        if self.zx != 1.0 || self.zy != 1.0 {
            then([[self.zx, 0.0, 0.0], [0.0, self.zy, 0.0], [0.0, 0.0, 1.0]]);
        }
        let m = m?;
        let (or, oc) = (rows as f64 / 2.0 + 0.5, cols as f64 / 2.0 + 0.5);
        let to_centre = [[1.0, 0.0, or], [0.0, 1.0, oc], [0.0, 0.0, 1.0]];
        let from_centre = [[1.0, 0.0, -or], [0.0, 1.0, -oc], [0.0, 0.0, 1.0]];
        Some(matmul(&matmul(&to_centre, &m), &from_centre))
    }

    /// Applies the transform to `input`, writing `rows * cols * 3` values (0..255 scale,
    /// row-major, channels last) to `out`.
    pub fn apply<T: Copy + Into<f32>>(&self, input: Image<'_, T>, out: &mut [f32]) {
        let (rows, cols) = (input.rows, input.cols);
        assert_eq!(
            input.pixels.len(),
            rows * cols * 3,
            "the image holds rows * cols * 3 values"
        );
        assert_eq!(
            out.len(),
            rows * cols * 3,
            "the output holds rows * cols * 3 values"
        );
        if out.is_empty() {
            return;
        }
        match self.affine(rows, cols) {
            None => {
                for (o, &i) in out.iter_mut().zip(input.pixels) {
                    *o = i.into();
                }
            }
            Some(m) => resample(input, &m, self.fill_mode, self.cval, out),
        }
        if let Some(shift) = self.channel_shift {
            let (lo, hi) = min_max(out);
            for v in out.iter_mut() {
                *v = (*v + shift as f32).clamp(lo, hi);
            }
        }
        if self.flip_horizontal {
            for row in out.chunks_exact_mut(cols * 3) {
                for c in 0..cols / 2 {
                    for ch in 0..3 {
                        row.swap(c * 3 + ch, (cols - 1 - c) * 3 + ch);
                    }
                }
            }
        }
        if self.flip_vertical {
            for r in 0..rows / 2 {
                let (top, bottom) = out.split_at_mut((rows - 1 - r) * cols * 3);
                top[r * cols * 3..(r + 1) * cols * 3].swap_with_slice(&mut bottom[..cols * 3]);
            }
        }
        if let Some(factor) = self.brightness {
            brighten(out, factor);
        }
    }
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Keras' brightness shift: `array_to_img` stretches the image to 0..255 and rounds it to 8 bits,
/// PIL blends it with black by `factor` (clipping at 255), and the result is read back as floats.
fn brighten(values: &mut [f32], factor: f64) {
    let (lo, hi) = min_max(values);
    let range = if hi > lo { hi - lo } else { 1.0 };
    for v in values.iter_mut() {
        let byte = ((*v - lo) / range * 255.0).clamp(0.0, 255.0) as u8 as f64;
        *v = (byte * factor).round().clamp(0.0, 255.0) as f32;
    }
}

/// Where SciPy reads an input coordinate `x` on an axis of `len` samples, for the fill mode;
/// `None` means the constant fill value.
fn map_coordinate(x: f64, len: usize, mode: FillMode) -> Option<f64> {
    let n = len as f64;
    if x < 0.0 {
        Some(match mode {
            FillMode::Constant => return None,
            _ if len <= 1 => 0.0,
            FillMode::Nearest => 0.0,
            FillMode::Reflect => {
                let sz2 = 2.0 * n;
                let mut x = x;
                if x < -sz2 {
                    x += sz2 * (-x / sz2).trunc();
                }
                if x < -n { x + sz2 } else { -x - 1.0 }
            }
            FillMode::Wrap => {
                let sz = n - 1.0;
                x + sz * ((-x / sz).trunc() + 1.0)
            }
        })
    } else if x > n - 1.0 {
        Some(match mode {
            FillMode::Constant => return None,
            _ if len <= 1 => 0.0,
            FillMode::Nearest => n - 1.0,
            FillMode::Reflect => {
                let sz2 = 2.0 * n;
                let x = x - sz2 * (x / sz2).trunc();
                if x >= n { sz2 - x - 1.0 } else { x }
            }
            FillMode::Wrap => {
                let sz = n - 1.0;
                x - sz * (x / sz).trunc()
            }
        })
    } else {
        Some(x)
    }
}

/// A neighbour index outside `0..len` brought back inside: reflected (half-sample symmetric)
/// in reflect mode, as SciPy does. In the other modes the mapped coordinate lies within
/// `0..=len-1`, so a tap can only fall outside with weight zero, and clamping is exact.
fn tap_index(index: i64, len: usize, mode: FillMode) -> usize {
    let n = len as i64;
    if (0..n).contains(&index) {
        return index as usize;
    }
    if mode == FillMode::Reflect && n > 1 {
        let period = 2 * n;
        let i = index.rem_euclid(period);
        return (if i >= n { period - i - 1 } else { i }) as usize;
    }
    index.clamp(0, n - 1) as usize
}

/// The two taps and weights of linear interpolation at a mapped coordinate.
fn taps(x: f64, len: usize, mode: FillMode) -> ([usize; 2], [f32; 2]) {
    let start = x.floor();
    let t = x - start;
    let s = start as i64;
    (
        [tap_index(s, len, mode), tap_index(s + 1, len, mode)],
        [(1.0 - t) as f32, t as f32],
    )
}

fn resample<T: Copy + Into<f32>>(
    input: Image<'_, T>,
    m: &Mat3,
    fill: FillMode,
    cval: f32,
    out: &mut [f32],
) {
    let (rows, cols) = (input.rows, input.cols);
    let px = input.pixels;
    for r in 0..rows {
        for c in 0..cols {
            let (rf, cf) = (r as f64, c as f64);
            let in_r = m[0][0] * rf + m[0][1] * cf + m[0][2];
            let in_c = m[1][0] * rf + m[1][1] * cf + m[1][2];
            let o = (r * cols + c) * 3;
            let (Some(mr), Some(mc)) = (
                map_coordinate(in_r, rows, fill),
                map_coordinate(in_c, cols, fill),
            ) else {
                out[o..o + 3].fill(cval);
                continue;
            };
            let ([r0, r1], [wr0, wr1]) = taps(mr, rows, fill);
            let ([c0, c1], [wc0, wc1]) = taps(mc, cols, fill);
            for ch in 0..3 {
                let at = |rr: usize, cc: usize| -> f32 { px[(rr * cols + cc) * 3 + ch].into() };
                out[o + ch] = wr0 * (wc0 * at(r0, c0) + wc1 * at(r0, c1))
                    + wr1 * (wc0 * at(r1, c0) + wc1 * at(r1, c1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scipy_edge_rules() {
        // reflect (half-sample symmetric) as SciPy computes it
        assert_eq!(map_coordinate(-0.25, 5, FillMode::Reflect), Some(-0.75));
        assert_eq!(map_coordinate(5.5, 5, FillMode::Reflect), Some(3.5));
        // wrap with period len - 1
        assert_eq!(map_coordinate(-1.0, 5, FillMode::Wrap), Some(3.0));
        assert_eq!(map_coordinate(5.0, 5, FillMode::Wrap), Some(1.0));
        assert_eq!(map_coordinate(4.5, 5, FillMode::Nearest), Some(4.0));
        assert_eq!(map_coordinate(-0.1, 5, FillMode::Constant), None);
        assert_eq!(tap_index(-1, 5, FillMode::Reflect), 0);
        assert_eq!(tap_index(5, 5, FillMode::Reflect), 4);
        assert_eq!(tap_index(5, 5, FillMode::Wrap), 4);
    }
}
