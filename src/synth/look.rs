//! The varied look: many background families, several ways of drawing each shape, colours jittered
//! within their names, and camera effects (lighting, blur, sensor noise, JPEG artefacts). What the
//! words mean never changes: masks and labels come from the same geometry ([`Object::contains`]) as
//! in the classic look; only the pixels around them differ.
use std::f32::consts::TAU;

use image::{ImageFormat, RgbImage};
use serde::{Deserialize, Serialize};

use super::language::Color;
use super::rng::Rng;
use super::scene::{background, hsv, value_noise, Background, Geom, Object, Texture};

/// How an object's edge is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// Anti-aliased over the pixel (2 x 2 sub-samples).
    Hard,
    /// Blurred: coverage averaged over a box of 1.5 to 3 pixels (3 x 3 sub-samples).
    Soft,
}

/// How an object is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// One colour.
    Flat,
    /// Brightness changing linearly across the object.
    Linear,
    /// Lit like a bulging surface: brighter towards the light, darker at the rim.
    Shaded,
}

/// The stroke drawn inside an object's outline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outline {
    None,
    /// A dark grey stroke.
    Dark,
    /// A light grey stroke.
    Light,
}

/// How one object is drawn (recorded per object in `album.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drawing {
    pub edge: Edge,
    pub fill: Fill,
    pub outline: Outline,
}

/// The camera and lighting of a photo (recorded per photo in `album.json`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effects {
    /// Factor on every channel (global brightness).
    pub brightness: f32,
    /// Contrast around mid grey.
    pub contrast: f32,
    /// Factor per channel (colour cast).
    pub cast: [f32; 3],
    /// Share of a 3 x 3 blur mixed in (0: none).
    pub blur: f32,
    /// Standard deviation of the sensor noise, in 8-bit levels.
    pub noise: f32,
    /// Quality the photo was JPEG-compressed at before being stored (null: never).
    pub jpeg: Option<u8>,
}

/// Hue range (degrees), saturation range and value range of each colour name in the varied look.
/// Neighbouring names keep a gap of hue between them, wider than lighting and casts can shift a hue.
pub fn color_range(color: Color) -> ([f32; 2], [f32; 2], [f32; 2]) {
    match color {
        Color::Red => ([-7.0, 7.0], [0.65, 0.95], [0.6, 0.95]),
        Color::Orange => ([23.0, 33.0], [0.7, 0.95], [0.85, 1.0]),
        Color::Yellow => ([48.0, 58.0], [0.7, 0.95], [0.85, 1.0]),
        Color::Green => ([105.0, 150.0], [0.6, 0.9], [0.45, 0.8]),
        Color::Blue => ([212.0, 235.0], [0.65, 0.9], [0.6, 0.95]),
        Color::Purple => ([272.0, 295.0], [0.55, 0.8], [0.5, 0.8]),
        Color::White => ([0.0, 360.0], [0.0, 0.06], [0.84, 1.0]),
    }
}

/// How an object is painted in the varied look.
pub struct VariedPaint {
    pub drawing: Drawing,
    base: [f32; 3],
    /// Largest relative brightness change of the fill.
    amplitude: f32,
    /// Direction of the light (unit vector).
    light: [f32; 2],
    stroke: [f32; 3],
    /// Stroke width in pixels.
    stroke_width: f32,
    /// Width of the soft edge's box, in pixels.
    soft_width: f32,
}

impl VariedPaint {
    pub fn random(rng: &mut Rng, color: Color, radius: f32) -> VariedPaint {
        let (hue, sat, val) = color_range(color);
        let fill = *rng.pick(&[Fill::Flat, Fill::Linear, Fill::Shaded]);
        let mut amplitude = match fill {
            Fill::Flat => 0.0,
            _ => rng.range(0.08, 0.25),
        };
        // The base value leaves room for the fill's brightness change inside the colour's value range.
        let (lo, hi) = (val[0] / (1.0 - amplitude), val[1] / (1.0 + amplitude));
        let v = if lo <= hi {
            rng.range(lo, hi)
        } else {
            amplitude = 0.0;
            rng.range(val[0], val[1])
        };
        let h = rng.range(hue[0], hue[1]).rem_euclid(360.0) / 360.0;
        let base = hsv(h, rng.range(sat[0], sat[1]), v);
        let angle = rng.range(0.0, TAU);
        let edge = if rng.chance(0.35) { Edge::Soft } else { Edge::Hard };
        let soft_width = rng.range(1.5, 3.0);
        let outline = match rng.below(10) {
            0..=5 => Outline::None,
            6..=8 => Outline::Dark,
            _ => Outline::Light,
        };
        let grey = match outline {
            Outline::Light => rng.range(0.8, 0.95),
            _ => rng.range(0.05, 0.25),
        };
        let stroke = hsv(rng.unit(), rng.range(0.0, 0.1), grey);
        let stroke_width = (radius * rng.range(0.05, 0.1)).clamp(1.0, 3.0);
        VariedPaint {
            drawing: Drawing { edge, fill, outline },
            base,
            amplitude,
            light: [angle.cos(), angle.sin()],
            stroke,
            stroke_width,
            soft_width,
        }
    }

    /// The fill colour at `(dx, dy)`, the offset from the centre in radii.
    fn fill_at(&self, dx: f32, dy: f32) -> [f32; 3] {
        let t = dx * self.light[0] + dy * self.light[1];
        let light = match self.drawing.fill {
            Fill::Flat => 1.0,
            Fill::Linear => 1.0 + self.amplitude * t.clamp(-1.0, 1.0),
            // 0.6 t - 0.4 (d^2 - 0.5) stays within [-0.8, 0.8] inside the bounding circle.
            Fill::Shaded => {
                let d2 = (dx * dx + dy * dy).min(1.0);
                1.0 + self.amplitude * (0.6 * t.clamp(-1.0, 1.0) - 0.4 * (d2 - 0.5)) / 0.8
            }
        };
        self.base.map(|c| c * light)
    }
}

/// A muted colour of the varied look: saturation at most 0.35, value 0.12 to 0.78 (never white).
fn muted(rng: &mut Rng) -> [f32; 3] {
    hsv(rng.unit(), rng.range(0.0, 0.35), rng.range(0.12, 0.78))
}

fn lerp(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [0, 1, 2].map(|c| a[c] * (1.0 - t) + b[c] * t)
}

/// A background of the varied look for a `w x h` photo: any of the families.
pub fn background_varied(rng: &mut Rng, w: u32, h: u32) -> Background {
    let family = rng.below(7);
    if family == 0 {
        return background(rng, w, h);
    }
    let (wu, hu) = (w as usize, h as usize);
    let short = w.min(h) as f32;
    let c0 = muted(rng);
    let c1 = muted(rng);
    let coords = move |k: usize| ((k % wu) as f32 + 0.5, (k / wu) as f32 + 0.5);
    let angle = rng.range(0.0, TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    let (texture, pixels) = match family {
        1 => (Texture::Flat, vec![c0; wu * hu]),
        2 => {
            let c2 = muted(rng);
            let base = rng.between(2, 5);
            let octaves = rng.between(2, 4);
            let mut sum = vec![0.0f32; wu * hu];
            let mut total = 0.0;
            for o in 0..octaves {
                let amp = 0.55f32.powi(o as i32);
                let layer = value_noise(rng, w, h, base << o);
                for (s, l) in sum.iter_mut().zip(layer) {
                    *s += amp * l;
                }
                total += amp;
            }
            let second = value_noise(rng, w, h, base);
            let pixels = sum
                .iter()
                .zip(second)
                .map(|(&s, t)| lerp(lerp(c0, c1, (0.5 + 0.5 * s / total).clamp(0.0, 1.0)), c2, 0.5 * t.max(0.0)))
                .collect();
            (Texture::Noise, pixels)
        }
        3 => {
            let mut pixels = vec![c0; wu * hu];
            for _ in 0..rng.between(4, 10) {
                let c = muted(rng);
                let (bx, by) = (rng.range(0.0, w as f32), rng.range(0.0, h as f32));
                let sigma = rng.range(0.08, 0.3) * short;
                let strength = rng.range(0.5, 1.0);
                let reach = 3.0 * sigma;
                let xs = ((bx - reach).max(0.0) as usize)..((bx + reach).max(0.0) as usize).min(wu);
                let ys = ((by - reach).max(0.0) as usize)..((by + reach).max(0.0) as usize).min(hu);
                for j in ys {
                    for i in xs.clone() {
                        let (dx, dy) = (i as f32 + 0.5 - bx, j as f32 + 0.5 - by);
                        let a = strength * (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
                        let p = &mut pixels[j * wu + i];
                        *p = lerp(*p, c, a);
                    }
                }
            }
            (Texture::Blobs, pixels)
        }
        4 => {
            let period = rng.range(0.05, 0.3) * short;
            let contrast = rng.range(0.15, 1.0);
            let sharp = rng.chance(0.5);
            let pixels = (0..wu * hu)
                .map(|k| {
                    let (x, y) = coords(k);
                    let s = ((x * ca + y * sa) / period * TAU).sin();
                    let t = if sharp { f32::from(u8::from(s > 0.0)) } else { 0.5 + 0.5 * s };
                    lerp(c0, c1, 0.5 + contrast * (t - 0.5))
                })
                .collect();
            (Texture::Bands, pixels)
        }
        5 => {
            let cell = rng.range(0.06, 0.25) * short;
            let contrast = rng.range(0.15, 1.0);
            let pixels = (0..wu * hu)
                .map(|k| {
                    let (x, y) = coords(k);
                    let (u, v) = (x * ca + y * sa, -x * sa + y * ca);
                    let parity = ((u / cell).floor() + (v / cell).floor()).rem_euclid(2.0);
                    lerp(c0, c1, 0.5 + contrast * (if parity < 1.0 { 0.5 } else { -0.5 }))
                })
                .collect();
            (Texture::Tiles, pixels)
        }
        _ => {
            // A gentle gradient, then clutter: small grey-ish things, never in a named colour.
            let mut pixels: Vec<[f32; 3]> = (0..wu * hu)
                .map(|k| {
                    let (x, y) = coords(k);
                    let u = (x / w as f32 - 0.5) * ca + (y / h as f32 - 0.5) * sa;
                    lerp(c0, c1, (u * 0.7 + 0.5).clamp(0.0, 1.0))
                })
                .collect();
            for _ in 0..rng.between(25, 90) {
                let c = hsv(rng.unit(), rng.range(0.0, 0.25), rng.range(0.1, 0.7));
                let alpha = rng.range(0.5, 1.0);
                let (px, py) = (rng.range(0.0, w as f32), rng.range(0.0, h as f32));
                let a = rng.range(0.0, TAU);
                let (cs, sn) = (a.cos(), a.sin());
                let kind = rng.below(3);
                // Half-extents along and across; lines are long and 0.5 to 1 pixel thick.
                let (ha, hb) = match kind {
                    2 => (rng.range(0.05, 0.25) * short, rng.range(0.5, 1.0)),
                    _ => {
                        let ha = rng.range(0.01, 0.05) * short;
                        (ha, ha * rng.range(0.3, 1.0))
                    }
                };
                let reach = ha.max(hb) + 1.0;
                let xs = ((px - reach).max(0.0) as usize)..((px + reach).max(0.0) as usize).min(wu);
                let ys = ((py - reach).max(0.0) as usize)..((py + reach).max(0.0) as usize).min(hu);
                for j in ys {
                    for i in xs.clone() {
                        let (dx, dy) = (i as f32 + 0.5 - px, j as f32 + 0.5 - py);
                        let (u, v) = ((dx * cs + dy * sn) / ha, (-dx * sn + dy * cs) / hb);
                        let inside = match kind {
                            1 => u * u + v * v <= 1.0,
                            _ => u.abs() <= 1.0 && v.abs() <= 1.0,
                        };
                        if inside {
                            let p = &mut pixels[j * wu + i];
                            *p = lerp(*p, c, alpha);
                        }
                    }
                }
            }
            (Texture::Clutter, pixels)
        }
    };
    Background { texture, pixels }
}

/// Sub-sample offsets of a hard edge (2 x 2).
const HARD: [f32; 2] = [0.25, 0.75];
/// Sub-samples per axis of a soft edge.
const SOFT_SAMPLES: usize = 3;

/// Paints the objects (in order, later ones on top) over the background, each with its paint.
pub fn paint_objects(
    objects: &[Object],
    paints: &[VariedPaint],
    background: &Background,
    w: u32,
    h: u32,
) -> Vec<[f32; 3]> {
    assert_eq!(objects.len(), paints.len());
    let (wu, hu) = (w as usize, h as usize);
    let mut pixels = background.pixels.clone();
    for (o, p) in objects.iter().zip(paints) {
        let g = Geom::new(o);
        let soft = p.drawing.edge == Edge::Soft;
        let margin = if soft { p.soft_width / 2.0 } else { 0.0 };
        let (xs, ys) = g.pixel_span(wu, hu, margin);
        let offsets: Vec<f32> = if soft {
            (0..SOFT_SAMPLES).map(|s| 0.5 + p.soft_width * ((s as f32 + 0.5) / SOFT_SAMPLES as f32 - 0.5)).collect()
        } else {
            HARD.to_vec()
        };
        let t = p.stroke_width;
        let d = t * std::f32::consts::FRAC_1_SQRT_2;
        let probes = [(t, 0.0), (-t, 0.0), (0.0, t), (0.0, -t), (d, d), (d, -d), (-d, d), (-d, -d)];
        let samples = (offsets.len() * offsets.len()) as f32;
        for j in ys {
            for i in xs.clone() {
                let mut inside = 0usize;
                let mut sum = [0.0f32; 3];
                // Whether the pixel lies on the stroke: decided once, at its centre.
                let mut stroke = None;
                for &oy in &offsets {
                    for &ox in &offsets {
                        let (x, y) = (i as f32 + ox, j as f32 + oy);
                        if !g.contains(x, y) {
                            continue;
                        }
                        inside += 1;
                        let on_stroke = *stroke.get_or_insert_with(|| {
                            let (x, y) = (i as f32 + 0.5, j as f32 + 0.5);
                            p.drawing.outline != Outline::None
                                && !probes.iter().all(|&(px, py)| g.contains(x + px, y + py))
                        });
                        let c =
                            if on_stroke { p.stroke } else { p.fill_at((x - g.cx) * g.inv_r, (y - g.cy) * g.inv_r) };
                        for k in 0..3 {
                            sum[k] += c[k];
                        }
                    }
                }
                if inside == 0 {
                    continue;
                }
                let alpha = inside as f32 / samples;
                let px = &mut pixels[j * wu + i];
                *px = [0, 1, 2].map(|k| px[k] * (1.0 - alpha) + sum[k] / samples);
            }
        }
    }
    pixels
}

/// Random camera effects.
pub fn random_effects(rng: &mut Rng) -> Effects {
    let brightness = rng.range(0.85, 1.15);
    let contrast = rng.range(0.85, 1.15);
    let cast = [0, 1, 2].map(|_| rng.range(0.96, 1.04));
    let blur = if rng.chance(0.3) { rng.range(0.3, 1.0) } else { 0.0 };
    let noise = if rng.chance(0.15) { 0.0 } else { rng.range(0.5, 6.0) };
    let jpeg = rng.chance(0.6).then(|| rng.between(40, 95) as u8);
    Effects { brightness, contrast, cast, blur, noise, jpeg }
}

/// Applies lighting, blur, noise and JPEG compression; returns the stored 8-bit photo.
pub fn finish(rng: &mut Rng, mut pixels: Vec<[f32; 3]>, effects: &Effects, w: u32, h: u32) -> RgbImage {
    let (wu, hu) = (w as usize, h as usize);
    for p in pixels.iter_mut() {
        *p = [0, 1, 2].map(|c| (p[c] * effects.cast[c] * effects.brightness - 128.0) * effects.contrast + 128.0);
    }
    if effects.blur > 0.0 {
        // Separable [1 2 1] / 4, edges clamped, mixed in by `blur`.
        let mut tmp = pixels.clone();
        for j in 0..hu {
            for i in 0..wu {
                let (a, b) = (i.saturating_sub(1), (i + 1).min(wu - 1));
                tmp[j * wu + i] = [0, 1, 2]
                    .map(|c| 0.25 * pixels[j * wu + a][c] + 0.5 * pixels[j * wu + i][c] + 0.25 * pixels[j * wu + b][c]);
            }
        }
        for j in 0..hu {
            let (a, b) = (j.saturating_sub(1), (j + 1).min(hu - 1));
            for i in 0..wu {
                let blurred =
                    [0, 1, 2].map(|c| 0.25 * tmp[a * wu + i][c] + 0.5 * tmp[j * wu + i][c] + 0.25 * tmp[b * wu + i][c]);
                let p = &mut pixels[j * wu + i];
                *p = [0, 1, 2].map(|c| p[c] * (1.0 - effects.blur) + blurred[c] * effects.blur);
            }
        }
    }
    let mut image = RgbImage::new(w, h);
    // Noise: a luminance part (a sum of three uniforms, roughly normal) and a smaller colour part
    // (uniform), standard deviations 0.8 and 0.6 of `noise`.
    let sigma = effects.noise;
    let chroma_half_width = sigma * 0.6 * 3f32.sqrt();
    for (k, out) in image.pixels_mut().enumerate() {
        let p = pixels[k];
        let luma = if sigma > 0.0 { (rng.unit() + rng.unit() + rng.unit() - 1.5) * 2.0 * sigma * 0.8 } else { 0.0 };
        let px = [0, 1, 2].map(|c| {
            let chroma = if sigma > 0.0 { rng.range(-chroma_half_width, chroma_half_width) } else { 0.0 };
            ((p[c] + luma + chroma).clamp(0.0, 255.0) + 0.5) as u8
        });
        out.0 = px;
    }
    match effects.jpeg {
        None => image,
        Some(q) => jpeg_round_trip(&image, q),
    }
}

/// The photo after JPEG compression at quality `q` and decompression.
fn jpeg_round_trip(image: &RgbImage, q: u8) -> RgbImage {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q)
        .encode_image(image)
        .expect("JPEG encoding in memory cannot fail");
    image::load_from_memory_with_format(&buf, ImageFormat::Jpeg).expect("decoding our own JPEG").to_rgb8()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hue in degrees of an sRGB colour.
    fn hue(c: [f32; 3]) -> f32 {
        let (max, min) = (c[0].max(c[1]).max(c[2]), c[0].min(c[1]).min(c[2]));
        let d = max - min;
        let h = if max == c[0] {
            (c[1] - c[2]) / d
        } else if max == c[1] {
            2.0 + (c[2] - c[0]) / d
        } else {
            4.0 + (c[0] - c[1]) / d
        };
        (h * 60.0).rem_euclid(360.0)
    }

    #[test]
    fn colour_ranges_keep_a_gap_between_neighbouring_names() {
        let ranges: Vec<[f32; 2]> =
            Color::ALL.iter().filter(|&&c| c != Color::White).map(|&c| color_range(c).0).collect();
        for (i, a) in ranges.iter().enumerate() {
            for b in ranges.iter().skip(i + 1) {
                let gap = (b[0] - a[1]).max(a[0] - b[1]);
                assert!(gap >= 14.0, "{a:?} and {b:?} are only {gap} degrees apart");
            }
        }
    }

    #[test]
    fn painted_colours_stay_in_their_hue_range_under_any_lighting() {
        let mut rng = Rng::new(3);
        for color in Color::ALL.into_iter().filter(|&c| c != Color::White) {
            let (range, _, _) = color_range(color);
            for _ in 0..200 {
                let p = VariedPaint::random(&mut rng, color, 20.0);
                let e = random_effects(&mut rng);
                for (dx, dy) in [(0.0, 0.0), (0.7, 0.0), (-0.7, 0.3), (0.0, -0.9)] {
                    let c = p.fill_at(dx, dy);
                    let lit = [0, 1, 2].map(|k| (c[k] * e.cast[k] * e.brightness - 128.0) * e.contrast + 128.0);
                    let h = hue(lit.map(|v| v.clamp(0.0, 255.0)));
                    let h = if h > 180.0 && range[0] < 0.0 { h - 360.0 } else { h };
                    assert!(h >= range[0] - 6.0 && h <= range[1] + 6.0, "{color:?}: hue {h} from {c:?} lit {lit:?}");
                }
            }
        }
    }

    #[test]
    fn every_background_family_is_drawn_and_muted() {
        let mut rng = Rng::new(5);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let bg = background_varied(&mut rng, 40, 30);
            assert_eq!(bg.pixels.len(), 40 * 30);
            seen.insert(bg.texture.family());
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
    }
}
