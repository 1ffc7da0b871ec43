//! Drawing a photo: a textured background, shaded objects painted bottom to top, and the exact label
//! map masks are cut from.
//!
//! Geometry is continuous. A pixel `(i, j)` covers `[i, i+1) x [j, j+1)`; its centre is `(i+0.5, j+0.5)`.
//! The label of a pixel is the top-most object whose shape contains the pixel centre, so a mask is exact
//! and binary and holds only the *visible* part of an object. Colours are anti-aliased with four
//! sub-samples per pixel, so edge pixels blend with what lies next to them.
use std::f32::consts::{FRAC_1_SQRT_2, PI, TAU};
use std::sync::OnceLock;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::language::{Color, Expression, Match, Shape, Size};
use super::rng::Rng;

/// Label of a pixel no object covers.
pub const NONE: u8 = u8::MAX;

/// Inner radius of a ring, relative to its outer radius.
const RING_INNER: f32 = 0.55;
/// Inner radius of a star, relative to its outer radius.
const STAR_INNER: f32 = 0.5;
/// Half-width of a cross's arm, relative to its half-length.
const CROSS_ARM: f32 = 0.3;
/// Largest relative brightness change across an object (shading).
const SHADING: f32 = 0.08;
/// Largest change of an object's base colour per channel, in 8-bit levels.
const COLOR_JITTER: f32 = 8.0;

/// One object of a scene, as recorded in `album.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    /// Centre in pixels, `[x, y]`, origin top-left, y down.
    pub center: [f32; 2],
    /// Radius of the bounding circle in pixels (circle and ring: the outer radius; polygons: the
    /// circumradius; cross: centre to an arm's corner).
    pub radius: f32,
    /// Rotation in radians (clockwise on screen), 0 for circles and rings.
    pub rotation: f32,
    /// Height of the shape in its own frame relative to its width (1: as designed, down to 0.75:
    /// squashed along its own vertical axis before the rotation). Absent in `album.json` when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub squash: f32,
    /// Shear of the shape in its own frame before the rotation: its own x gains `shear` times its own
    /// y. Absent in `album.json` when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shear: f32,
    /// Pixels whose centre the shape covers, ignoring other objects.
    pub area_pixels: u32,
    /// Pixels where this object is the top-most one: the size of its mask.
    pub visible_pixels: u32,
}

fn one() -> f32 {
    1.0
}

fn is_one(v: &f32) -> bool {
    *v == 1.0
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// The largest stretch (largest singular value) of the shape matrix `[[1, shear], [0, squash]]`.
fn stretch(squash: f32, shear: f32) -> f32 {
    let t = 1.0 + shear * shear + squash * squash;
    ((t + (t * t - 4.0 * squash * squash).max(0.0).sqrt()) / 2.0).sqrt()
}

/// The range of the area-equivalent radius (the radius of a circle of the same area), as a fraction of
/// the photo side. The classes are far apart: a large object has at least 2.3 times the area of a small one.
pub fn scale_range(size: Size) -> (f32, f32) {
    match size {
        Size::Small => (0.065, 0.085),
        Size::Large => (0.13, 0.16),
    }
}

/// Area of the shape at radius 1.
fn unit_area(shape: Shape) -> f32 {
    match shape {
        Shape::Circle => PI,
        Shape::Ring => PI * (1.0 - RING_INNER * RING_INNER),
        Shape::Square => 2.0,
        Shape::Triangle => 3.0 * 3f32.sqrt() / 4.0,
        Shape::Star => 5.0 * STAR_INNER * (PI / 5.0).sin(),
        Shape::Cross => {
            let (l, a) = cross_dims();
            8.0 * l * a - 4.0 * a * a
        }
    }
}

/// Half-length and half-width of a cross's arms at radius 1.
fn cross_dims() -> (f32, f32) {
    let l = 1.0 / (1.0 + CROSS_ARM * CROSS_ARM).sqrt();
    (l, CROSS_ARM * l)
}

/// Bounding radius of a shape whose area equals that of a circle of radius `scale`.
pub fn radius_for_scale(shape: Shape, scale: f32) -> f32 {
    scale * (PI / unit_area(shape)).sqrt()
}

fn star_vertices() -> &'static [[f32; 2]; 10] {
    static STAR: OnceLock<[[f32; 2]; 10]> = OnceLock::new();
    STAR.get_or_init(|| {
        let mut v = [[0.0; 2]; 10];
        for (k, p) in v.iter_mut().enumerate() {
            let r = if k % 2 == 0 { 1.0 } else { STAR_INNER };
            let a = -PI / 2.0 + k as f32 * PI / 5.0;
            *p = [r * a.cos(), r * a.sin()];
        }
        v
    })
}

fn in_polygon(v: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let ([xi, yi], [xj, yj]) = (v[i], v[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether the shape at radius 1, centred at the origin and not rotated, contains `(x, y)`.
/// Polygons point up (a vertex at `(0, -1)`).
fn unit_contains(shape: Shape, x: f32, y: f32) -> bool {
    match shape {
        Shape::Circle => x * x + y * y <= 1.0,
        Shape::Ring => {
            let d = x * x + y * y;
            (RING_INNER * RING_INNER..=1.0).contains(&d)
        }
        Shape::Square => x.abs() <= FRAC_1_SQRT_2 && y.abs() <= FRAC_1_SQRT_2,
        Shape::Triangle => {
            // Edge normals point away from the three vertices; the inradius is 1/2.
            let s = 3f32.sqrt() / 2.0;
            y <= 0.5 && -s * x - 0.5 * y <= 0.5 && s * x - 0.5 * y <= 0.5
        }
        Shape::Star => in_polygon(star_vertices(), x, y),
        Shape::Cross => {
            let (l, a) = cross_dims();
            let (x, y) = (x.abs(), y.abs());
            (x <= l && y <= a) || (x <= a && y <= l)
        }
    }
}

/// An object prepared for many point tests.
pub(crate) struct Geom {
    shape: Shape,
    pub(crate) cx: f32,
    pub(crate) cy: f32,
    pub(crate) inv_r: f32,
    cos: f32,
    sin: f32,
    /// The inverse of the normalised shape matrix, when squash or shear is set: the point in the
    /// rotated frame `(qx, qy)` maps to the unit shape's `(k * qx - shear * uy, uy)` with
    /// `uy = k * qy / squash`, `k` the stretch.
    skew: Option<[f32; 3]>,
    pub(crate) bounds: [f32; 4],
}

impl Geom {
    pub(crate) fn new(o: &Object) -> Geom {
        let (sin, cos) = o.rotation.sin_cos();
        let skew = (o.squash != 1.0 || o.shear != 0.0).then(|| [stretch(o.squash, o.shear), o.squash, o.shear]);
        Geom {
            shape: o.shape,
            cx: o.center[0],
            cy: o.center[1],
            inv_r: 1.0 / o.radius,
            cos,
            sin,
            skew,
            bounds: [o.center[0] - o.radius, o.center[0] + o.radius, o.center[1] - o.radius, o.center[1] + o.radius],
        }
    }

    /// The pixel columns and rows whose area may meet the object, widened by `margin` pixels
    /// (a superset), in a `w x h` photo.
    pub(crate) fn pixel_span(
        &self,
        w: usize,
        h: usize,
        margin: f32,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let span = |lo: f32, hi: f32, n: usize| {
            let a = (lo - 1.0 - margin).floor().max(0.0) as usize;
            let b = ((hi + 1.0 + margin).ceil().max(0.0) as usize).min(n);
            a.min(b)..b
        };
        (span(self.bounds[0], self.bounds[1], w), span(self.bounds[2], self.bounds[3], h))
    }

    pub(crate) fn contains(&self, x: f32, y: f32) -> bool {
        if x < self.bounds[0] || x > self.bounds[1] || y < self.bounds[2] || y > self.bounds[3] {
            return false;
        }
        let dx = (x - self.cx) * self.inv_r;
        let dy = (y - self.cy) * self.inv_r;
        // Rotate the point by -rotation into the shape's frame.
        let qx = dx * self.cos + dy * self.sin;
        let qy = -dx * self.sin + dy * self.cos;
        match self.skew {
            None => unit_contains(self.shape, qx, qy),
            Some([k, squash, shear]) => {
                let uy = k * qy / squash;
                unit_contains(self.shape, k * qx - shear * uy, uy)
            }
        }
    }
}

impl Object {
    /// Whether the object's shape contains the point `(x, y)` (pixels), ignoring other objects.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        Geom::new(self).contains(x, y)
    }

    /// Whether the bounding circles of two objects overlap (with a `gap` of pixels to spare).
    pub fn near(&self, other: &Object, gap: f32) -> bool {
        let dx = self.center[0] - other.center[0];
        let dy = self.center[1] - other.center[1];
        let reach = self.radius + other.radius + gap;
        dx * dx + dy * dy < reach * reach
    }
}

/// The photo an object is drawn for, and how varied the drawing is.
#[derive(Clone, Copy, Debug)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    /// The varied look (squash, shear, any rotation, wider size ranges) rather than the classic one.
    pub varied: bool,
    /// A photo with few objects: large objects are drawn larger (varied look only).
    pub sparse: bool,
}

impl Canvas {
    /// A square classic canvas.
    pub fn square(side: u32) -> Canvas {
        Canvas { width: side, height: side, varied: false, sparse: false }
    }

    /// The shorter side in pixels: object sizes are fractions of it.
    pub fn short_side(&self) -> f32 {
        self.width.min(self.height) as f32
    }

    /// The range of the area-equivalent radius of a size class, as a fraction of the shorter side.
    pub fn scale_range(&self, size: Size) -> (f32, f32) {
        match (self.varied, self.sparse, size) {
            (false, _, _) => scale_range(size),
            (true, _, Size::Small) => VARIED_SMALL,
            (true, false, Size::Large) => VARIED_LARGE,
            (true, true, Size::Large) => VARIED_LARGE_SPARSE,
        }
    }
}

/// Area-equivalent radius of small objects in the varied look (fraction of the shorter side).
pub const VARIED_SMALL: (f32, f32) = (0.06, 0.09);
/// Area-equivalent radius of large objects in the varied look (at least 2.3 times a small one's area).
pub const VARIED_LARGE: (f32, f32) = (0.14, 0.18);
/// Area-equivalent radius of large objects in a sparse photo of the varied look.
pub const VARIED_LARGE_SPARSE: (f32, f32) = (0.15, 0.21);
/// Smallest squash of the varied look.
pub const SQUASH_MIN: f32 = 0.75;
/// Largest shear (either way) of the varied look.
pub const SHEAR_MAX: f32 = 0.2;

/// A random object: the size class picks the scale range, the rotation is uniform for polygons (and
/// for every shape in the varied look, which also squashes and shears some).
/// `x` and `y` are the ranges the centre is drawn from (they are clamped so the object stays inside).
pub fn random_object(
    rng: &mut Rng,
    shape: Shape,
    color: Color,
    size: Size,
    canvas: &Canvas,
    x: (f32, f32),
    y: (f32, f32),
) -> Object {
    let (lo, hi) = canvas.scale_range(size);
    let scale = rng.range(lo, hi) * canvas.short_side();
    let (squash, shear) = if canvas.varied {
        let squash = if rng.chance(0.5) { rng.range(SQUASH_MIN, 1.0) } else { 1.0 };
        let shear = if rng.chance(0.35) { rng.range(-SHEAR_MAX, SHEAR_MAX) } else { 0.0 };
        (squash, shear)
    } else {
        (1.0, 0.0)
    };
    // The normalised shape matrix keeps the bounding circle at `radius` and the area at pi * scale^2.
    let radius = radius_for_scale(shape, scale) * stretch(squash, shear) / squash.sqrt();
    let clamp = |(a, b): (f32, f32), side: f32| {
        let a = a.max(radius);
        let b = b.min(side - radius);
        (a, b.max(a))
    };
    let (x0, x1) = clamp(x, canvas.width as f32);
    let (y0, y1) = clamp(y, canvas.height as f32);
    let round = matches!(shape, Shape::Circle | Shape::Ring);
    let rotation = if round && (squash, shear) == (1.0, 0.0) { 0.0 } else { rng.range(0.0, TAU) };
    Object {
        shape,
        color,
        size,
        center: [rng.range(x0, x1), rng.range(y0, y1)],
        radius,
        rotation,
        squash,
        shear,
        area_pixels: 0,
        visible_pixels: 0,
    }
}

/// Labels every pixel with the index of the top-most object covering its centre (objects are in
/// drawing order: later ones lie on top), or [`NONE`]; also fills each object's `area_pixels` and
/// `visible_pixels`. Row-major, `image_size * image_size` labels (a square photo).
pub fn label_map(objects: &mut [Object], image_size: u32) -> Vec<u8> {
    label_map_wh(objects, image_size, image_size)
}

/// [`label_map`] of a `width x height` photo: row-major, `width * height` labels.
pub fn label_map_wh(objects: &mut [Object], width: u32, height: u32) -> Vec<u8> {
    assert!(objects.len() < NONE as usize, "too many objects for u8 labels");
    let (w, h) = (width as usize, height as usize);
    let mut labels = vec![NONE; w * h];
    // Painter's order: each object overwrites the pixels it covers, so the last one is on top.
    for (k, o) in objects.iter_mut().enumerate() {
        let g = Geom::new(o);
        let (xs, ys) = g.pixel_span(w, h, 0.0);
        let mut area = 0;
        for j in ys {
            for i in xs.clone() {
                if g.contains(i as f32 + 0.5, j as f32 + 0.5) {
                    area += 1;
                    labels[j * w + i] = k as u8;
                }
            }
        }
        o.area_pixels = area;
    }
    let mut visible = vec![0u32; objects.len()];
    for &l in &labels {
        if l != NONE {
            visible[l as usize] += 1;
        }
    }
    for (o, v) in objects.iter_mut().zip(visible) {
        o.visible_pixels = v;
    }
    labels
}

/// The label map of a `w x h` photo stretched to `n x n`: cell `(i, j)` holds the top-most object
/// containing the photo point `((i + 0.5) * w / n, (j + 0.5) * h / n)`, or [`NONE`].
pub fn label_map_stretched(objects: &[Object], w: u32, h: u32, n: u32) -> Vec<u8> {
    assert!(objects.len() < NONE as usize, "too many objects for u8 labels");
    let nu = n as usize;
    let (sx, sy) = (w as f32 / n as f32, h as f32 / n as f32);
    let mut labels = vec![NONE; nu * nu];
    for (k, o) in objects.iter().enumerate() {
        let g = Geom::new(o);
        for j in 0..nu {
            let y = (j as f32 + 0.5) * sy;
            if y < g.bounds[2] || y > g.bounds[3] {
                continue;
            }
            for i in 0..nu {
                if g.contains((i as f32 + 0.5) * sx, y) {
                    labels[j * nu + i] = k as u8;
                }
            }
        }
    }
    labels
}

/// How an object is painted: its base colour (the nominal colour, jittered) and a linear shading.
#[derive(Clone, Debug)]
pub struct Paint {
    base: [f32; 3],
    gradient: [f32; 2],
}

impl Paint {
    pub fn random(rng: &mut Rng, color: Color) -> Paint {
        let rgb = color.rgb();
        let base = [0, 1, 2].map(|c| (f32::from(rgb[c]) + rng.range(-COLOR_JITTER, COLOR_JITTER)).clamp(0.0, 255.0));
        let angle = rng.range(0.0, TAU);
        let strength = rng.range(0.0, SHADING);
        Paint { base, gradient: [strength * angle.cos(), strength * angle.sin()] }
    }
}

/// The kind of texture laid over a background's gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Texture {
    /// Smooth blotches blending in a third colour (two octaves of value noise).
    Blotches,
    /// Soft stripes at a random angle and period.
    Stripes,
    /// A low-contrast checker board at a random angle.
    Checker,
    /// Fine mottling only.
    Mottle,
    /// One flat muted colour (varied look).
    Flat,
    /// Fractal value noise between two or three muted colours (varied look).
    Noise,
    /// Large blurred blobs of muted colours (varied look).
    Blobs,
    /// Stripes between two muted colours, of any contrast, hard or soft (varied look).
    Bands,
    /// A checker board of two muted colours, of any contrast (varied look).
    Tiles,
    /// Many small grey-ish rectangles, ellipses and thin lines over a muted ground (varied look).
    Clutter,
}

impl Texture {
    /// Every kind, classic ones first.
    pub const ALL: [Texture; 10] = [
        Texture::Blotches,
        Texture::Stripes,
        Texture::Checker,
        Texture::Mottle,
        Texture::Flat,
        Texture::Noise,
        Texture::Blobs,
        Texture::Bands,
        Texture::Tiles,
        Texture::Clutter,
    ];

    /// The background family: `gradient` (the four classic textures over a gradient) or the kind itself.
    pub fn family(self) -> &'static str {
        match self {
            Texture::Blotches | Texture::Stripes | Texture::Checker | Texture::Mottle => "gradient",
            Texture::Flat => "flat",
            Texture::Noise => "noise",
            Texture::Blobs => "blobs",
            Texture::Bands => "bands",
            Texture::Tiles => "tiles",
            Texture::Clutter => "clutter",
        }
    }
}

/// A background: a gradient between two muted colours with a texture on top.
pub struct Background {
    pub texture: Texture,
    pub(crate) pixels: Vec<[f32; 3]>,
}

/// A muted colour (low saturation, middle brightness), so saturated objects stand out.
fn muted(rng: &mut Rng) -> [f32; 3] {
    hsv(rng.unit(), rng.range(0.03, 0.3), rng.range(0.3, 0.68))
}

/// HSV in [0, 1] to RGB in [0, 255].
pub(crate) fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.fract() * 6.0).min(5.999);
    let k = h6.floor();
    let f = h6 - k;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match k as u32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// Value noise in [-1, 1] over the photo with `cells` lattice cells per side (smoothstep interpolation).
/// On a `w x h` photo the cells are square and `cells` of them span the longer side.
pub(crate) fn value_noise(rng: &mut Rng, w: u32, h: u32, cells: usize) -> Vec<f32> {
    let m = cells + 2;
    let lattice: Vec<f32> = (0..m * m).map(|_| rng.range(-1.0, 1.0)).collect();
    let scale = cells as f32 / w.max(h) as f32;
    let (w, h) = (w as usize, h as usize);
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let mut out = Vec::with_capacity(w * h);
    for j in 0..h {
        let v = (j as f32 + 0.5) * scale;
        let (vj, fv) = (v.floor() as usize, smooth(v.fract()));
        for i in 0..w {
            let u = (i as f32 + 0.5) * scale;
            let (ui, fu) = (u.floor() as usize, smooth(u.fract()));
            let at = |a: usize, b: usize| lattice[b * m + a];
            let top = at(ui, vj) * (1.0 - fu) + at(ui + 1, vj) * fu;
            let bottom = at(ui, vj + 1) * (1.0 - fu) + at(ui + 1, vj + 1) * fu;
            out.push(top * (1.0 - fv) + bottom * fv);
        }
    }
    out
}

/// A random background (the classic gradient with a texture) for a `w x h` photo.
pub fn background(rng: &mut Rng, w: u32, h: u32) -> Background {
    let (n, rows) = (w as usize, h as usize);
    let (side, height) = (w as f32, h as f32);
    let c0 = muted(rng);
    let c1 = muted(rng);
    let angle = rng.range(0.0, TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    let texture = *rng.pick(&[Texture::Blotches, Texture::Stripes, Texture::Checker, Texture::Mottle]);
    let mut pixels = Vec::with_capacity(n * rows);
    for j in 0..rows {
        for i in 0..n {
            // Projection of the pixel on the gradient direction, in [0, 1].
            let u = ((i as f32 + 0.5) / side - 0.5) * ca + ((j as f32 + 0.5) / height - 0.5) * sa;
            let t = (u * FRAC_1_SQRT_2 + 0.5).clamp(0.0, 1.0);
            pixels.push([0, 1, 2].map(|c| c0[c] * (1.0 - t) + c1[c] * t));
        }
    }
    let texture_angle = rng.range(0.0, TAU);
    let (ct, st) = (texture_angle.cos(), texture_angle.sin());
    let rotated = |i: usize, j: usize| {
        let (x, y) = (i as f32 + 0.5, j as f32 + 0.5);
        (x * ct + y * st, -x * st + y * ct)
    };
    match texture {
        Texture::Blotches => {
            let c2 = muted(rng);
            let cells = rng.between(2, 5);
            let coarse = value_noise(rng, w, h, cells);
            let cells = rng.between(8, 14);
            let fine = value_noise(rng, w, h, cells);
            for (k, p) in pixels.iter_mut().enumerate() {
                let mix = (0.5 + 0.45 * coarse[k]).clamp(0.0, 1.0);
                let light = 1.0 + 0.06 * fine[k];
                *p = [0, 1, 2].map(|c| (p[c] * (1.0 - mix) + c2[c] * mix) * light);
            }
        }
        Texture::Stripes => {
            let period = rng.range(0.04, 0.14) * side;
            let amplitude = rng.range(0.05, 0.12);
            for j in 0..rows {
                for i in 0..n {
                    let (x, _) = rotated(i, j);
                    let light = 1.0 + amplitude * (x / period * TAU).sin();
                    let p = &mut pixels[j * n + i];
                    *p = p.map(|v| v * light);
                }
            }
        }
        Texture::Checker => {
            let cell = rng.range(0.05, 0.16) * side;
            let amplitude = rng.range(0.04, 0.09);
            for j in 0..rows {
                for i in 0..n {
                    let (x, y) = rotated(i, j);
                    let parity = ((x / cell).floor() + (y / cell).floor()).rem_euclid(2.0);
                    let light = 1.0 + if parity < 1.0 { amplitude } else { -amplitude };
                    let p = &mut pixels[j * n + i];
                    *p = p.map(|v| v * light);
                }
            }
        }
        Texture::Mottle => {
            let cells = rng.between(10, 20);
            let fine = value_noise(rng, w, h, cells);
            for (k, p) in pixels.iter_mut().enumerate() {
                let light = 1.0 + 0.08 * fine[k];
                *p = p.map(|v| v * light);
            }
        }
        other => unreachable!("{other:?} is no classic texture"),
    }
    Background { texture, pixels }
}

/// Paints the photo: background, then each object (in order, later ones on top) with its paint,
/// anti-aliased by 2 x 2 sub-samples, then a little sensor grain.
pub fn render(
    rng: &mut Rng,
    objects: &[Object],
    paints: &[Paint],
    background: &Background,
    w: u32,
    h: u32,
) -> RgbImage {
    assert_eq!(objects.len(), paints.len());
    assert!(objects.len() < NONE as usize, "too many objects for u8 labels");
    const OFFSETS: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    let geoms: Vec<Geom> = objects.iter().map(Geom::new).collect();
    let (n, rows) = (w as usize, h as usize);
    // The top-most object at each sub-sample, painted in order like the label map.
    let mut owner = vec![NONE; n * rows * 4];
    for (k, g) in geoms.iter().enumerate() {
        let (xs, ys) = g.pixel_span(n, rows, 0.0);
        for j in ys {
            for i in xs.clone() {
                for (s, (ox, oy)) in OFFSETS.iter().enumerate() {
                    if g.contains(i as f32 + ox, j as f32 + oy) {
                        owner[(j * n + i) * 4 + s] = k as u8;
                    }
                }
            }
        }
    }
    let mut image = RgbImage::new(w, h);
    for j in 0..rows {
        for i in 0..n {
            let bg = background.pixels[j * n + i];
            let mut sum = [0.0f32; 3];
            for (s, (ox, oy)) in OFFSETS.iter().enumerate() {
                let color = match owner[(j * n + i) * 4 + s] {
                    NONE => bg,
                    k => {
                        let (g, p) = (&geoms[k as usize], &paints[k as usize]);
                        let (x, y) = (i as f32 + ox, j as f32 + oy);
                        let light = 1.0 + p.gradient[0] * (x - g.cx) * g.inv_r + p.gradient[1] * (y - g.cy) * g.inv_r;
                        p.base.map(|v| v * light)
                    }
                };
                for c in 0..3 {
                    sum[c] += color[c];
                }
            }
            // Grain: a sum of three uniforms, roughly normal, standard deviation about 2 levels.
            let grain = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 4.0;
            // Round half up (values are clamped to be non-negative first).
            let px = sum.map(|v| ((v / 4.0 + grain).clamp(0.0, 255.0) + 0.5) as u8);
            image.put_pixel(i as u32, j as u32, image::Rgb(px));
        }
    }
    image
}

/// Whether an object of a scene is what an expression names (here rather than in `language.rs`, which
/// knows words, not scenes).
impl Expression {
    /// Whether `object` (in a photo `width x height` pixels) is what this expression names.
    pub fn matches(&self, object: &Object, width: u32, height: u32) -> Match {
        if object.color != self.color || object.shape != self.shape {
            return Match::No;
        }
        if let Some(size) = self.size {
            if object.size != size {
                return Match::No;
            }
        }
        match self.position {
            Some(position) => position.judge(object.center, width, height),
            None => Match::Yes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centred(shape: Shape, radius: f32, rotation: f32) -> Object {
        Object {
            shape,
            color: Color::Red,
            size: Size::Large,
            center: [100.0, 100.0],
            radius,
            rotation,
            squash: 1.0,
            shear: 0.0,
            area_pixels: 0,
            visible_pixels: 0,
        }
    }

    #[test]
    fn squashed_and_sheared_shapes_keep_their_area_and_bounding_circle() {
        let mut rng = Rng::new(4);
        let canvas = Canvas { width: 300, height: 240, varied: true, sparse: false };
        let mut squashed = 0;
        for k in 0..60 {
            let shape = Shape::ALL[k % 6];
            let size = Size::ALL[k % 2];
            let o = random_object(&mut rng, shape, Color::Red, size, &canvas, (0.0, 300.0), (0.0, 240.0));
            squashed += usize::from(o.squash < 1.0 || o.shear != 0.0);
            let mut objects = vec![o.clone()];
            let labels = label_map_wh(&mut objects, 300, 240);
            let (lo, hi) = canvas.scale_range(size);
            let r = (objects[0].area_pixels as f32 / PI).sqrt() / 240.0;
            assert!(r > lo * 0.97 && r < hi * 1.03, "{shape:?} {size:?}: area-equivalent radius {r}");
            for (i, &l) in labels.iter().enumerate() {
                if l == 0 {
                    let (x, y) = ((i % 300) as f32 + 0.5, (i / 300) as f32 + 0.5);
                    let d = ((x - o.center[0]).powi(2) + (y - o.center[1]).powi(2)).sqrt();
                    assert!(d <= o.radius, "{o:?}: pixel at {d} beyond the bounding circle");
                }
            }
        }
        assert!(squashed > 20, "only {squashed} of 60 objects squashed or sheared");
    }

    #[test]
    fn stretched_label_map_follows_the_photo_frame() {
        // A 200 x 100 photo seen as 50 x 50: the centre (50, 50) lies in cell (12.5, 25).
        let objects = vec![Object { center: [50.0, 50.0], ..centred(Shape::Circle, 20.0, 0.0) }];
        let labels = label_map_stretched(&objects, 200, 100, 50);
        // Stretched: 20 px of radius is 5 cells across and 10 cells down.
        assert_eq!(labels[25 * 50 + 12], 0);
        assert_eq!(labels[25 * 50 + 18], NONE, "6 cells right is beyond a 5-cell half width");
        assert_eq!(labels[34 * 50 + 12], 0, "9 cells down is within a 10-cell half height");
    }

    #[test]
    fn shape_areas_match_their_formulas() {
        // Counted on a 200 px canvas, an object of scale 40 px must cover about pi * 40^2 pixels.
        for shape in Shape::ALL {
            let mut objects = vec![centred(shape, radius_for_scale(shape, 40.0), 0.3)];
            label_map(&mut objects, 200);
            let expected = PI * 40.0 * 40.0;
            let got = objects[0].area_pixels as f32;
            assert!((got - expected).abs() / expected < 0.02, "{shape:?}: {got} pixels, expected {expected}");
        }
    }

    #[test]
    fn shapes_have_their_holes_and_corners() {
        let ring = centred(Shape::Ring, 40.0, 0.0);
        assert!(!ring.contains(100.0, 100.0), "a ring's centre is a hole");
        assert!(ring.contains(100.0 + 30.0, 100.0));
        let circle = centred(Shape::Circle, 40.0, 0.0);
        assert!(circle.contains(100.0, 100.0));
        let star = centred(Shape::Star, 40.0, 0.0);
        assert!(star.contains(100.0, 100.0 - 38.0), "upper point");
        assert!(!star.contains(100.0, 100.0 + 38.0), "between the two lower points");
        let triangle = centred(Shape::Triangle, 40.0, 0.0);
        assert!(triangle.contains(100.0, 100.0 - 38.0), "apex up");
        assert!(!triangle.contains(100.0 - 30.0, 100.0 - 20.0));
        let square = centred(Shape::Square, 40.0, 0.0);
        assert!(square.contains(127.0, 127.0), "corner");
        let diamond = centred(Shape::Square, 40.0, PI / 4.0);
        assert!(!diamond.contains(127.0, 127.0), "rotated square loses the corner");
        assert!(diamond.contains(100.0, 138.0));
        let cross = centred(Shape::Cross, 40.0, 0.0);
        assert!(cross.contains(100.0, 137.0) && !cross.contains(125.0, 125.0));
    }

    #[test]
    fn top_most_object_owns_the_overlap() {
        let mut objects = vec![
            centred(Shape::Circle, 30.0, 0.0),
            Object { center: [130.0, 100.0], ..centred(Shape::Square, 30.0, 0.0) },
        ];
        let labels = label_map(&mut objects, 200);
        assert_eq!(labels[100 * 200 + 120], 1, "overlap belongs to the later object");
        assert_eq!(labels[100 * 200 + 80], 0);
        assert_eq!(labels[0], NONE);
        assert!(objects[0].visible_pixels < objects[0].area_pixels);
        assert_eq!(objects[1].visible_pixels, objects[1].area_pixels);
        let counted = labels.iter().filter(|&&l| l == 0).count() as u32;
        assert_eq!(counted, objects[0].visible_pixels);
    }

    #[test]
    fn size_classes_never_overlap() {
        let (_, small_max) = scale_range(Size::Small);
        let (large_min, _) = scale_range(Size::Large);
        assert!(large_min * large_min >= 2.3 * small_max * small_max);
    }

    #[test]
    fn rendered_object_keeps_its_colour_and_background_stays_muted() {
        let mut rng = Rng::new(9);
        let bg = background(&mut rng, 64, 64);
        let objects = vec![Object { center: [32.0, 32.0], ..centred(Shape::Square, 20.0, 0.0) }];
        let paints = vec![Paint::random(&mut rng, Color::Blue)];
        let img = render(&mut rng, &objects, &paints, &bg, 64, 64);
        let p = img.get_pixel(32, 32).0;
        let want = Color::Blue.rgb();
        for c in 0..3 {
            assert!((i32::from(p[c]) - i32::from(want[c])).abs() < 30, "{p:?} vs {want:?}");
        }
        let corner = img.get_pixel(0, 0).0;
        let (max, min) = (*corner.iter().max().unwrap(), *corner.iter().min().unwrap());
        assert!(max - min < 90, "background should be muted: {corner:?}");
    }
}
