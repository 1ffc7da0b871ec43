//! From the decoder's coarse grid to a mask at the photo's own resolution, guided by the photo.
//!
//! The decoder answers on a grid of 1/4 of the model's input (32 x 32 for the built-in model), whatever
//! the photo's size; bilinear upsampling of that grid cannot follow an edge that crosses a cell. Even a
//! perfect grid mask brought back bilinearly scores only mIoU 0.83 on the synthetic held-out split
//! (`scripts/mask_grid_ceiling.py`). Joint bilateral upsampling (Kopf et al., SIGGRAPH 2007) weights each
//! grid value by its distance *and* by how close the photo's colour at the output pixel is to the
//! colour of the grid cell, so a mask edge snaps to the photo's colour edge: the same perfect grid mask
//! then scores 0.97. No weights, no training; docs/model.md has the measurements.
//!
//! Pure arithmetic on buffers (the caller decodes the photo): the model stays free of I/O.

/// Spatial standard deviation, in grid cells.
pub const SIGMA_SPATIAL: f32 = 1.0;
/// Colour standard deviation, in 8-bit levels (Euclidean over R, G, B).
pub const SIGMA_RANGE: f32 = 25.0;
/// Grid cells on each side of an output pixel's position that contribute (4 x 4 taps in all).
const TAPS: usize = 4;

/// The average colour of each grid cell's share of the photo, `[gh * gw * 3]`, rounded to 8 bits.
fn cell_colors(rgb: &[u8], width: usize, height: usize, gh: usize, gw: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(gh * gw * 3);
    for gy in 0..gh {
        let (y0, y1) = (gy * height / gh, ((gy + 1) * height / gh).max(gy * height / gh + 1).min(height));
        for gx in 0..gw {
            let (x0, x1) = (gx * width / gw, ((gx + 1) * width / gw).max(gx * width / gw + 1).min(width));
            let mut sum = [0u64; 3];
            for y in y0..y1 {
                for px in rgb[(y * width + x0) * 3..(y * width + x1) * 3].chunks_exact(3) {
                    for c in 0..3 {
                        sum[c] += px[c] as u64;
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)).max(1) as u64;
            out.extend(sum.iter().map(|&s| ((s + n / 2) / n) as u8));
        }
    }
    out
}

/// For each output coordinate along one axis: the first of its [`TAPS`] grid indices (clamped per tap
/// by the caller) and the spatial weights of the taps. Output pixel centres map onto the grid as
/// bilinear upsampling without corner alignment does: `(i + 0.5) * g / n - 0.5`.
fn axis_taps(n: usize, g: usize, sigma: f32) -> Vec<([usize; TAPS], [f32; TAPS])> {
    let scale = g as f32 / n as f32;
    (0..n)
        .map(|i| {
            let pos = (i as f32 + 0.5) * scale - 0.5;
            let first = pos.floor() as isize - (TAPS as isize / 2 - 1);
            let mut idx = [0; TAPS];
            let mut w = [0f32; TAPS];
            for t in 0..TAPS {
                let q = first + t as isize;
                let d = pos - q as f32;
                // Taps beyond the border repeat the edge cell (as the border of bilinear upsampling does).
                idx[t] = q.clamp(0, g as isize - 1) as usize;
                w[t] = (-d * d / (2.0 * sigma * sigma)).exp();
            }
            (idx, w)
        })
        .collect()
}

/// exp(-d^2 / 2 sigma_r^2) for every integer squared colour distance, built once (780 KB).
fn range_weights() -> &'static [f32] {
    static LUT: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let max_d2 = 3 * 255 * 255;
        (0..=max_d2).map(|d2| (-(d2 as f32) / (2.0 * SIGMA_RANGE * SIGMA_RANGE)).exp()).collect()
    })
}

/// What [`joint_bilateral`] and [`guided_mask`] share: the grid, the photo, its cells' colours, the taps.
struct Guide<'a> {
    values: &'a [f32],
    gw: usize,
    rgb: &'a [u8],
    width: usize,
    cells: Vec<u8>,
    rows: Vec<([usize; TAPS], [f32; TAPS])>,
    cols: Vec<([usize; TAPS], [f32; TAPS])>,
}

impl<'a> Guide<'a> {
    fn new(values: &'a [f32], gh: usize, gw: usize, rgb: &'a [u8], width: usize, height: usize) -> Self {
        assert_eq!(values.len(), gh * gw, "grid values");
        assert_eq!(rgb.len(), width * height * 3, "photo bytes");
        Guide {
            values,
            gw,
            rgb,
            width,
            cells: cell_colors(rgb, width, height, gh, gw),
            rows: axis_taps(height, gh, SIGMA_SPATIAL),
            cols: axis_taps(width, gw, SIGMA_SPATIAL),
        }
    }

    /// The weighted average at pixel (`x`, `y`).
    fn pixel(&self, x: usize, y: usize, range: &[f32]) -> f32 {
        let (qy, wy) = &self.rows[y];
        let (qx, wx) = &self.cols[x];
        let p = &self.rgb[(y * self.width + x) * 3..(y * self.width + x) * 3 + 3];
        let (mut num, mut den) = (0f32, 0f32);
        for ty in 0..TAPS {
            for tx in 0..TAPS {
                let cell = qy[ty] * self.gw + qx[tx];
                let c = &self.cells[cell * 3..cell * 3 + 3];
                let d2: i32 = (0..3).map(|k| (p[k] as i32 - c[k] as i32).pow(2)).sum();
                let w = wy[ty] * wx[tx] * range[d2 as usize];
                num += w * self.values[cell];
                den += w;
            }
        }
        if den > 1e-20 {
            return num / den;
        }
        // Every tap far in colour (den underflows): fall back to the spatial weights alone.
        let mut s = (0f32, 0f32);
        for ty in 0..TAPS {
            for tx in 0..TAPS {
                let w = wy[ty] * wx[tx];
                s.0 += w * self.values[qy[ty] * self.gw + qx[tx]];
                s.1 += w;
            }
        }
        s.0 / s.1
    }
}

/// Joint bilateral upsampling of `values` (`gh x gw`, row-major) to `width x height`, guided by the photo
/// `rgb` (interleaved RGB8 at that size). Returns a row-major `width * height` map of weighted averages of
/// `values` (so probabilities stay in [0, 1]). Rows run in parallel.
pub fn joint_bilateral(values: &[f32], gh: usize, gw: usize, rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let guide = Guide::new(values, gh, gw, rgb, width, height);
    let range = range_weights();
    let mut out = vec![0f32; width * height];
    out.par_chunks_mut(width.max(1)).enumerate().for_each(|(y, row)| {
        for (x, o) in row.iter_mut().enumerate() {
            *o = guide.pixel(x, y, range);
        }
    });
    out
}

/// Object probability at the photo's resolution from object-minus-background logits on the grid
/// (`gh x gw`), guided by the photo (`rgb`, `width x height`).
pub fn guided_probability(logits: &[f32], gh: usize, gw: usize, rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
    joint_bilateral(&sigmoid(logits), gh, gw, rgb, width, height)
}

fn sigmoid(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect()
}

/// Probabilities this far from 0.5 decide a pixel whose taps all lie on the same side, whatever the
/// weights (far above the rounding of a 16-term weighted average).
const DECIDED: f32 = 1e-3;

/// Binary mask (1 = object): [`guided_probability`] > 0.5, computed only where it can differ from the
/// grid. A weighted average of values that all lie on one side of 0.5 lies on that side too, so a pixel
/// whose 4 x 4 taps agree is decided without the photo; only the band along the mask's edge pays for
/// the colour weights. On a 12-megapixel photo that is most of the cost of a mask.
pub fn guided_mask(logits: &[f32], gh: usize, gw: usize, rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    use rayon::prelude::*;
    let p = sigmoid(logits);
    // Per cell: bit 1 = surely object, bit 2 = surely background; a block agrees when the AND of its
    // cells' bits is not zero.
    let side: Vec<u8> = p
        .iter()
        .map(|&v| {
            if v > 0.5 + DECIDED {
                1
            } else if v < 0.5 - DECIDED {
                2
            } else {
                0
            }
        })
        .collect();
    let guide = Guide::new(&p, gh, gw, rgb, width, height);
    let range = range_weights();
    let mut out = vec![0u8; width * height];
    out.par_chunks_mut(width.max(1)).enumerate().for_each(|(y, row)| {
        let (qy, _) = &guide.rows[y];
        // The AND over this row's four grid rows, per grid column.
        let column: Vec<u8> = (0..gw).map(|gx| qy.iter().fold(3u8, |a, &gy| a & side[gy * gw + gx])).collect();
        for (x, o) in row.iter_mut().enumerate() {
            let (qx, _) = &guide.cols[x];
            let agreed = qx.iter().fold(3u8, |a, &gx| a & column[gx]);
            *o = match agreed {
                0 => u8::from(guide.pixel(x, y, range) > 0.5),
                bits => u8::from(bits & 1 == 1),
            };
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `n x n` photo: a red disc of radius `r` at the centre on a grey background.
    fn disc(n: usize, r: f32) -> (Vec<u8>, Vec<u8>) {
        let mut rgb = Vec::with_capacity(n * n * 3);
        let mut truth = Vec::with_capacity(n * n);
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f32 + 0.5 - n as f32 / 2.0, y as f32 + 0.5 - n as f32 / 2.0);
                let inside = dx * dx + dy * dy <= r * r;
                rgb.extend_from_slice(if inside { &[210, 35, 35] } else { &[120, 120, 110] });
                truth.push(u8::from(inside));
            }
        }
        (rgb, truth)
    }

    /// The disc reduced to a `g x g` grid of +-4 logits (a cell is object when most of it is).
    fn grid_logits(truth: &[u8], n: usize, g: usize) -> Vec<f32> {
        let f = n / g;
        let mut out = Vec::with_capacity(g * g);
        for gy in 0..g {
            for gx in 0..g {
                let on: usize = (0..f * f).map(|k| truth[(gy * f + k / f) * n + gx * f + k % f] as usize).sum();
                out.push(if 2 * on >= f * f { 4.0 } else { -4.0 });
            }
        }
        out
    }

    fn iou(a: &[u8], b: &[u8]) -> f64 {
        let inter = a.iter().zip(b).filter(|(x, y)| **x == 1 && **y == 1).count();
        let union = a.iter().zip(b).filter(|(x, y)| **x == 1 || **y == 1).count();
        inter as f64 / union as f64
    }

    #[test]
    fn the_photo_edge_beats_bilinear_on_a_coarse_grid() {
        let (n, g) = (128, 16);
        let (rgb, truth) = disc(n, 21.0);
        let logits = grid_logits(&truth, n, g);
        let guided = guided_mask(&logits, g, g, &rgb, n, n);
        // Bilinear, as `grser::mask_at` does it, on the same logits.
        let t = candle_core::Tensor::from_vec(logits.clone(), (g, g), &candle_core::Device::Cpu).unwrap();
        let bilinear = crate::model::grser::mask_at(&t, n, n).unwrap();
        let (ig, ib) = (iou(&guided, &truth), iou(&bilinear, &truth));
        assert!(ig > 0.97 && ig > ib + 0.02, "guided {ig:.3}, bilinear {ib:.3}");
    }

    #[test]
    fn a_flat_photo_leaves_a_smooth_upsampling_and_values_stay_in_range() {
        let (n, g) = (40, 10);
        let rgb = vec![100u8; n * n * 3];
        let values: Vec<f32> = (0..g * g).map(|i| (i % g) as f32 / (g - 1) as f32).collect();
        let up = joint_bilateral(&values, g, g, &rgb, n, n);
        assert!(up.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Left to right the average rises; every row is the same.
        for y in 0..n {
            for x in 1..n {
                assert!(up[y * n + x] >= up[y * n + x - 1] - 1e-6);
            }
            assert!((up[y * n + n / 2] - up[n / 2]).abs() < 1e-5);
        }
    }

    #[test]
    fn photos_smaller_than_the_grid_and_odd_sizes_work() {
        let values = vec![0.2f32; 32 * 32];
        let rgb: Vec<u8> = (0..7 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let up = joint_bilateral(&values, 32, 32, &rgb, 7, 5);
        assert_eq!(up.len(), 35);
        assert!(up.iter().all(|&v| (v - 0.2).abs() < 1e-5), "{up:?}");
    }

    #[test]
    fn masks_decided_by_agreeing_taps_equal_the_full_computation() {
        // The disc's grid (most 4 x 4 blocks agree) with some cells at or next to 0 that the shortcut must
        // leave to the colours, on the disc's photo and on a photo of another, odd size.
        let (n, g) = (104, 13);
        let (rgb, truth) = disc(n, 30.0);
        let mut logits = grid_logits(&truth, n, g);
        for (i, l) in logits.iter_mut().enumerate().filter(|(i, _)| i % 17 == 0) {
            *l = (i % 5) as f32 * 0.002 - 0.004;
        }
        let odd: Vec<u8> = (0..97 * 61 * 3).map(|i| ((i / 3 % 97) * 5 + (i / 291) * 3) as u8).collect();
        for (rgb, w, h) in [(&rgb, n, n), (&odd, 97, 61)] {
            let full: Vec<u8> =
                guided_probability(&logits, g, g, rgb, w, h).into_iter().map(|p| u8::from(p > 0.5)).collect();
            let fast = guided_mask(&logits, g, g, rgb, w, h);
            assert_eq!(fast, full, "{w} x {h}");
            assert!(full.contains(&0) && full.contains(&1));
        }
        // A grid that is object everywhere or nowhere never needs the photo.
        assert!(guided_mask(&[5.0; 4], 2, 2, &rgb, n, n).iter().all(|&m| m == 1));
        assert!(guided_mask(&[-5.0; 4], 2, 2, &rgb, n, n).iter().all(|&m| m == 0));
    }
}
