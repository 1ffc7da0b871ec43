//! Resizing a Swin relative-position bias table to another window size, as timm 1.0 does when it loads a
//! checkpoint whose window differs (`timm.layers.resize_rel_pos_bias_table`, the default path without
//! SciPy): the source table's rows and columns are placed at geometric-progression offsets (denser near
//! the centre, BEiT's scheme) and the target's integer offsets are read off by piecewise-linear
//! interpolation. Not bicubic: timm uses cubic interpolation only when `TIMM_USE_SCIPY_INTERP=1`, and parity
//! with timm's default is what we test.
use candle_core::{bail, Result, Tensor};

/// Source positions of a table side of `src` entries spread to cover `dst` entries (timm's `_calc`).
fn source_positions(src: usize, dst: usize) -> Vec<f32> {
    let gp = |a: f64, r: f64, n: usize| a * (1.0 - r.powi(n as i32)) / (1.0 - r);
    let (mut left, mut right) = (1.01f64, 1.5f64);
    let mut q = 0.0;
    while right - left > 1e-6 {
        q = (left + right) / 2.0;
        if gp(1.0, q, src / 2) > (dst / 2) as f64 {
            right = q;
        } else {
            left = q;
        }
    }
    let mut dis = Vec::with_capacity(src / 2);
    let mut cur = 1.0f64;
    for i in 0..src / 2 {
        dis.push(cur);
        cur += q.powi(i as i32 + 1);
    }
    let mut out: Vec<f32> = dis.iter().rev().map(|d| -*d as f32).collect();
    out.push(0.0);
    out.extend(dis.iter().map(|d| *d as f32));
    out
}

/// Left/right neighbours and distances of `x` on the sorted grid `p` (timm's RegularGridInterpolator).
fn neighbours(p: &[f32], x: f32) -> (usize, usize, f32, f32) {
    // torch.bucketize(x, p): first i with p[i] >= x.
    let mut right = p.iter().position(|&v| v >= x).unwrap_or(p.len());
    if right >= p.len() {
        right = p.len() - 1;
    }
    let left = right.saturating_sub(1);
    let mut dl = (x - p[left]).max(0.0);
    let mut dr = (p[right] - x).max(0.0);
    if dl == 0.0 && dr == 0.0 {
        dl = 1.0;
        dr = 1.0;
    }
    (left, right, dl, dr)
}

/// Resize `table` (`[(2*wh-1)*(2*ww-1), heads]`) from window `from` to window `to`.
pub fn resize_table(table: &Tensor, from: (usize, usize), to: (usize, usize)) -> Result<Tensor> {
    let (rows, heads) = table.dims2()?;
    let src = (2 * from.0 - 1, 2 * from.1 - 1);
    let dst = (2 * to.0 - 1, 2 * to.1 - 1);
    if rows != src.0 * src.1 {
        bail!("relative position table has {rows} rows, expected {} for window {from:?}", src.0 * src.1);
    }
    if src == dst {
        return Ok(table.clone());
    }
    let values: Vec<Vec<f32>> = table.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    let py = source_positions(src.0, dst.0);
    let px = source_positions(src.1, dst.1);
    let target = |n: usize| -> Vec<f32> {
        let t = (n / 2) as f32;
        (0..n).map(|i| -t + i as f32).collect()
    };
    let (ty, tx) = (target(dst.0), target(dst.1));
    let mut out = vec![0f32; dst.0 * dst.1 * heads];
    for (i, &y) in ty.iter().enumerate() {
        let (y0, y1, dy0, dy1) = neighbours(&py, y);
        for (j, &x) in tx.iter().enumerate() {
            let (x0, x1, dx0, dx1) = neighbours(&px, x);
            let denom = (dy0 + dy1) * (dx0 + dx1);
            for h in 0..heads {
                let v = |a: usize, b: usize| values[a * src.1 + b][h];
                // Corner (left, left) is weighted by the distances to the right neighbours, and so on.
                let num = v(y0, x0) * (dy1 * dx1)
                    + v(y0, x1) * (dy1 * dx0)
                    + v(y1, x0) * (dy0 * dx1)
                    + v(y1, x1) * (dy0 * dx0);
                out[(i * dst.1 + j) * heads + h] = num / denom;
            }
        }
    }
    Tensor::from_vec(out, (dst.0 * dst.1, heads), table.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_symmetric_and_cover_the_target() {
        let p = source_positions(13, 15);
        assert_eq!(p.len(), 13);
        assert_eq!(p[6], 0.0);
        for i in 0..6 {
            assert!((p[i] + p[12 - i]).abs() < 1e-6);
        }
        assert!(p[12] >= 7.0 - 1e-3, "outermost source offset {} should reach the target's 7", p[12]);
    }

    #[test]
    fn a_constant_table_stays_constant() -> Result<()> {
        let t = Tensor::full(0.5f32, (13 * 13, 3), &candle_core::Device::Cpu)?;
        let r = resize_table(&t, (7, 7), (8, 8))?;
        assert_eq!(r.dims(), &[15 * 15, 3]);
        let err = (r - 0.5)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-6);
        Ok(())
    }
}
