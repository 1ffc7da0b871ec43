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

use super::language::{Color, Shape, Size};
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
    /// Pixels whose centre the shape covers, ignoring other objects.
    pub area_pixels: u32,
    /// Pixels where this object is the top-most one: the size of its mask.
    pub visible_pixels: u32,
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
struct Geom {
    shape: Shape,
    cx: f32,
    cy: f32,
    inv_r: f32,
    cos: f32,
    sin: f32,
    bounds: [f32; 4],
}

impl Geom {
    fn new(o: &Object) -> Geom {
        let (sin, cos) = o.rotation.sin_cos();
        Geom {
            shape: o.shape,
            cx: o.center[0],
            cy: o.center[1],
            inv_r: 1.0 / o.radius,
            cos,
            sin,
            bounds: [o.center[0] - o.radius, o.center[0] + o.radius, o.center[1] - o.radius, o.center[1] + o.radius],
        }
    }

    /// The pixel columns and rows whose area may meet the object (a superset).
    fn pixel_span(&self, n: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let span = |lo: f32, hi: f32| {
            let a = (lo - 1.0).floor().max(0.0) as usize;
            let b = ((hi + 1.0).ceil().max(0.0) as usize).min(n);
            a.min(b)..b
        };
        (span(self.bounds[0], self.bounds[1]), span(self.bounds[2], self.bounds[3]))
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        if x < self.bounds[0] || x > self.bounds[1] || y < self.bounds[2] || y > self.bounds[3] {
            return false;
        }
        let dx = (x - self.cx) * self.inv_r;
        let dy = (y - self.cy) * self.inv_r;
        // Rotate the point by -rotation into the shape's frame.
        let qx = dx * self.cos + dy * self.sin;
        let qy = -dx * self.sin + dy * self.cos;
        unit_contains(self.shape, qx, qy)
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

/// A random object: the size class picks the scale range, the rotation is uniform for polygons.
/// `x` and `y` are the ranges the centre is drawn from (they are clamped so the object stays inside).
pub fn random_object(
    rng: &mut Rng,
    shape: Shape,
    color: Color,
    size: Size,
    image_size: u32,
    x: (f32, f32),
    y: (f32, f32),
) -> Object {
    let side = image_size as f32;
    let (lo, hi) = scale_range(size);
    let radius = radius_for_scale(shape, rng.range(lo, hi) * side);
    let clamp = |(a, b): (f32, f32)| {
        let a = a.max(radius);
        let b = b.min(side - radius);
        (a, b.max(a))
    };
    let (x0, x1) = clamp(x);
    let (y0, y1) = clamp(y);
    let rotation = match shape {
        Shape::Circle | Shape::Ring => 0.0,
        _ => rng.range(0.0, TAU),
    };
    Object {
        shape,
        color,
        size,
        center: [rng.range(x0, x1), rng.range(y0, y1)],
        radius,
        rotation,
        area_pixels: 0,
        visible_pixels: 0,
    }
}

/// Labels every pixel with the index of the top-most object covering its centre (objects are in
/// drawing order: later ones lie on top), or [`NONE`]; also fills each object's `area_pixels` and
/// `visible_pixels`. Row-major, `image_size * image_size` labels.
pub fn label_map(objects: &mut [Object], image_size: u32) -> Vec<u8> {
    assert!(objects.len() < NONE as usize, "too many objects for u8 labels");
    let n = image_size as usize;
    let mut labels = vec![NONE; n * n];
    // Painter's order: each object overwrites the pixels it covers, so the last one is on top.
    for (k, o) in objects.iter_mut().enumerate() {
        let g = Geom::new(o);
        let (xs, ys) = g.pixel_span(n);
        let mut area = 0;
        for j in ys {
            for i in xs.clone() {
                if g.contains(i as f32 + 0.5, j as f32 + 0.5) {
                    area += 1;
                    labels[j * n + i] = k as u8;
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
}

/// A background: a gradient between two muted colours with a texture on top.
pub struct Background {
    pub texture: Texture,
    pixels: Vec<[f32; 3]>,
}

/// A muted colour (low saturation, middle brightness), so saturated objects stand out.
fn muted(rng: &mut Rng) -> [f32; 3] {
    hsv(rng.unit(), rng.range(0.03, 0.3), rng.range(0.3, 0.68))
}

/// HSV in [0, 1] to RGB in [0, 255].
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
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
fn value_noise(rng: &mut Rng, image_size: u32, cells: usize) -> Vec<f32> {
    let m = cells + 2;
    let lattice: Vec<f32> = (0..m * m).map(|_| rng.range(-1.0, 1.0)).collect();
    let n = image_size as usize;
    let scale = cells as f32 / image_size as f32;
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let mut out = Vec::with_capacity(n * n);
    for j in 0..n {
        let v = (j as f32 + 0.5) * scale;
        let (vj, fv) = (v.floor() as usize, smooth(v.fract()));
        for i in 0..n {
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

/// A random background for a photo `image_size` pixels on a side.
pub fn background(rng: &mut Rng, image_size: u32) -> Background {
    let n = image_size as usize;
    let side = image_size as f32;
    let c0 = muted(rng);
    let c1 = muted(rng);
    let angle = rng.range(0.0, TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    let texture = *rng.pick(&[Texture::Blotches, Texture::Stripes, Texture::Checker, Texture::Mottle]);
    let mut pixels = Vec::with_capacity(n * n);
    for j in 0..n {
        for i in 0..n {
            // Projection of the pixel on the gradient direction, in [0, 1].
            let u = ((i as f32 + 0.5) / side - 0.5) * ca + ((j as f32 + 0.5) / side - 0.5) * sa;
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
            let coarse = value_noise(rng, image_size, cells);
            let cells = rng.between(8, 14);
            let fine = value_noise(rng, image_size, cells);
            for (k, p) in pixels.iter_mut().enumerate() {
                let w = (0.5 + 0.45 * coarse[k]).clamp(0.0, 1.0);
                let light = 1.0 + 0.06 * fine[k];
                *p = [0, 1, 2].map(|c| (p[c] * (1.0 - w) + c2[c] * w) * light);
            }
        }
        Texture::Stripes => {
            let period = rng.range(0.04, 0.14) * side;
            let amplitude = rng.range(0.05, 0.12);
            for j in 0..n {
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
            for j in 0..n {
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
            let fine = value_noise(rng, image_size, cells);
            for (k, p) in pixels.iter_mut().enumerate() {
                let light = 1.0 + 0.08 * fine[k];
                *p = p.map(|v| v * light);
            }
        }
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
    image_size: u32,
) -> RgbImage {
    assert_eq!(objects.len(), paints.len());
    assert!(objects.len() < NONE as usize, "too many objects for u8 labels");
    const OFFSETS: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    let geoms: Vec<Geom> = objects.iter().map(Geom::new).collect();
    let n = image_size as usize;
    // The top-most object at each sub-sample, painted in order like the label map.
    let mut owner = vec![NONE; n * n * 4];
    for (k, g) in geoms.iter().enumerate() {
        let (xs, ys) = g.pixel_span(n);
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
    let mut image = RgbImage::new(image_size, image_size);
    for j in 0..n {
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
            area_pixels: 0,
            visible_pixels: 0,
        }
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
        let bg = background(&mut rng, 64);
        let objects = vec![Object { center: [32.0, 32.0], ..centred(Shape::Square, 20.0, 0.0) }];
        let paints = vec![Paint::random(&mut rng, Color::Blue)];
        let img = render(&mut rng, &objects, &paints, &bg, 64);
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
