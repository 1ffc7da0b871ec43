//! Composing an album: its expressions, which photos hold each referent, and scenes that satisfy them.
//!
//! Rules every generated photo keeps (tests check them on the written files):
//! - for each of the album's expressions, a positive photo holds exactly one matching object (the
//!   target) and a negative photo none; no object is ambiguous for any expression (position dead zone);
//! - every photo holds at least one *hard distractor* per expression: an object with the same colour
//!   and another shape, the same shape and another colour, or (when the expression names them) the
//!   same colour and shape at the other size or clearly at another position;
//! - objects of the same colour never overlap (their bounding circles keep apart), so a colour blob is
//!   never two objects;
//! - every object keeps at least [`MIN_VISIBLE`] of its area visible, however it is occluded;
//! - objects lie entirely inside the photo;
//! - every photo holds at least 3 objects, except the varied look's sparse photos, which hold only the
//!   targets and one hard distractor per expression (1 to 6 objects, larger ones).
use anyhow::{bail, Result};
use image::RgbImage;

use super::language::{Color, Combo, Expression, Match, Position, Shape, Size, POSITION_IN, POSITION_OUT};
use super::look::{self, Drawing, Effects, VariedPaint};
use super::rng::Rng;
use super::scene::{self, Canvas, Object, Paint, Texture};
use super::Look;

/// The smallest visible fraction of any object's area.
pub const MIN_VISIBLE: f32 = 0.5;
/// Probability that an expression names a size.
const P_SIZE: f32 = 0.3;
/// Probability that an expression names a position.
const P_POSITION: f32 = 0.3;
/// Attempts at one scene before giving up (a scene is rejected when occlusion hides too much).
const SCENE_ATTEMPTS: usize = 300;
/// Draws of one object before giving up on it.
const OBJECT_ATTEMPTS: usize = 40;
/// Share of the varied look's photos that are sparse (few, larger objects).
const P_SPARSE: f32 = 0.25;
/// Share of square photos when photos may be non-square.
const P_SQUARE: f32 = 0.2;
/// Widest width / height ratio of a non-square photo (and its inverse the narrowest).
pub const ASPECT_MAX: f32 = 4.0 / 3.0;

/// What an album is drawn from.
pub struct AlbumSpec<'a> {
    /// The side of square photos; non-square photos have about as many pixels.
    pub image_size: u32,
    /// Whether every photo is square.
    pub square: bool,
    pub look: Look,
    pub photos_min: usize,
    pub photos_max: usize,
    pub expressions_max: usize,
    pub objects_max: usize,
    /// Combinations expressions may name.
    pub target_combos: &'a [Combo],
    /// Combinations no object may have at all (the held-out ones, in the training splits).
    pub forbidden: &'a [Combo],
}

/// One generated photo.
pub struct Photo {
    pub image: RgbImage,
    pub width: u32,
    pub height: u32,
    pub texture: Texture,
    /// How each object is drawn (varied look; empty in the classic look).
    pub drawings: Vec<Drawing>,
    /// The camera effects (varied look).
    pub effects: Option<Effects>,
    /// Objects in drawing order (later on top), with their pixel counts filled in.
    pub objects: Vec<Object>,
    /// Per pixel, the index of the visible object, or [`scene::NONE`].
    pub labels: Vec<u8>,
    /// Per expression, the index of its target in `objects` (None: a negative photo).
    pub targets: Vec<Option<usize>>,
}

/// One generated album.
pub struct Album {
    pub expressions: Vec<Expression>,
    pub photos: Vec<Photo>,
}

/// Generates an album from its own random stream.
pub fn album(rng: &mut Rng, spec: &AlbumSpec) -> Result<Album> {
    assert!(spec.photos_min >= 2 && spec.photos_min <= spec.photos_max);
    let n_photos = rng.between(spec.photos_min, spec.photos_max);
    let n_expr = rng.between(1, spec.expressions_max.min(spec.target_combos.len()));
    let mut combos = spec.target_combos.to_vec();
    rng.shuffle(&mut combos);
    let expressions: Vec<Expression> = combos[..n_expr]
        .iter()
        .map(|&combo| {
            let size = rng.chance(P_SIZE).then(|| *rng.pick(&Size::ALL));
            let position = rng.chance(P_POSITION).then(|| *rng.pick(&Position::ALL));
            Expression::new(rng, combo, size, position)
        })
        .collect();
    // roles[k][i]: photo i is positive for expression k. Between 35 % and 65 % positives, at least
    // one positive and one negative.
    let roles: Vec<Vec<bool>> = expressions
        .iter()
        .map(|_| {
            let share = rng.range(0.35, 0.65);
            let n_pos = ((n_photos as f32 * share).round() as usize).clamp(1, n_photos - 1);
            let mut r: Vec<bool> = (0..n_photos).map(|i| i < n_pos).collect();
            rng.shuffle(&mut r);
            r
        })
        .collect();
    let photos = (0..n_photos)
        .map(|i| {
            let photo_roles: Vec<bool> = roles.iter().map(|r| r[i]).collect();
            photo(rng, spec, &expressions, &photo_roles)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Album { expressions, photos })
}

/// The size of a photo: square, or (about as many pixels) with a width / height ratio between
/// 1 / [`ASPECT_MAX`] and [`ASPECT_MAX`].
fn photo_size(rng: &mut Rng, spec: &AlbumSpec) -> (u32, u32) {
    let n = spec.image_size;
    if spec.square || rng.chance(P_SQUARE) {
        return (n, n);
    }
    let ratio = rng.range(-ASPECT_MAX.ln(), ASPECT_MAX.ln()).exp().sqrt();
    let side = n as f32;
    ((side * ratio).round() as u32, (side / ratio).round() as u32)
}

/// A photo positive for expression k exactly when `roles[k]`.
fn photo(rng: &mut Rng, spec: &AlbumSpec, expressions: &[Expression], roles: &[bool]) -> Result<Photo> {
    let (width, height) = photo_size(rng, spec);
    let varied = spec.look == Look::Varied;
    let sparse = varied && rng.chance(P_SPARSE);
    let canvas = Canvas { width, height, varied, sparse };
    for _ in 0..SCENE_ATTEMPTS {
        let Some(placed) = place(rng, spec, &canvas, expressions, roles) else {
            continue;
        };
        // A few drawing orders for the same placement before drawing a new one.
        for _ in 0..4 {
            let mut objects = placed.clone();
            rng.shuffle(&mut objects);
            let labels = scene::label_map_wh(&mut objects, width, height);
            let visible_enough = objects
                .iter()
                .all(|o| o.visible_pixels > 0 && o.visible_pixels as f32 >= MIN_VISIBLE * o.area_pixels as f32);
            if !visible_enough {
                continue;
            }
            let targets: Vec<Option<usize>> = expressions
                .iter()
                .map(|e| objects.iter().position(|o| e.matches(o, width, height) == Match::Yes))
                .collect();
            debug_assert!(targets.iter().zip(roles).all(|(t, &r)| t.is_some() == r));
            if varied {
                let background = look::background_varied(rng, width, height);
                let paints: Vec<VariedPaint> =
                    objects.iter().map(|o| VariedPaint::random(rng, o.color, o.radius)).collect();
                let pixels = look::paint_objects(&objects, &paints, &background, width, height);
                let effects = look::random_effects(rng);
                let image = look::finish(rng, pixels, &effects, width, height);
                let drawings = paints.iter().map(|p| p.drawing).collect();
                let texture = background.texture;
                return Ok(Photo {
                    image,
                    width,
                    height,
                    texture,
                    drawings,
                    effects: Some(effects),
                    objects,
                    labels,
                    targets,
                });
            }
            let background = scene::background(rng, width, height);
            let paints: Vec<Paint> = objects.iter().map(|o| Paint::random(rng, o.color)).collect();
            let image = scene::render(rng, &objects, &paints, &background, width, height);
            let texture = background.texture;
            return Ok(Photo {
                image,
                width,
                height,
                texture,
                drawings: Vec::new(),
                effects: None,
                objects,
                labels,
                targets,
            });
        }
    }
    bail!(
        "could not compose a scene for {:?} in {SCENE_ATTEMPTS} attempts (image too small or too many objects?)",
        expressions.iter().map(|e| e.text.as_str()).collect::<Vec<_>>()
    )
}

/// The kinds of hard distractor for an expression.
#[derive(Clone, Copy)]
enum Distractor {
    SameColor,
    SameShape,
    OtherSize,
    OtherPlace,
}

/// Places targets, hard distractors and fillers; None when some required object found no valid spot.
fn place(
    rng: &mut Rng,
    spec: &AlbumSpec,
    canvas: &Canvas,
    expressions: &[Expression],
    roles: &[bool],
) -> Option<Vec<Object>> {
    let (fx, fy) = ((0.0, canvas.width as f32), (0.0, canvas.height as f32));
    let mut objects: Vec<Object> = Vec::new();
    for (k, e) in expressions.iter().enumerate() {
        if roles[k] {
            let o = try_place(rng, spec, canvas, expressions, &objects, Some(k), |rng| {
                let size = e.size.unwrap_or_else(|| *rng.pick(&Size::ALL));
                let (x, y) = match e.position {
                    Some(p) => region(p, canvas, true),
                    None => (fx, fy),
                };
                scene::random_object(rng, e.shape, e.color, size, canvas, x, y)
            })?;
            objects.push(o);
        }
    }
    for (k, e) in expressions.iter().enumerate() {
        let count = if rng.chance(0.4) && !canvas.sparse { 2 } else { 1 };
        for d in 0..count {
            // The first distractor of each expression is required (at most 2 objects per expression),
            // a second one only while the photo has room.
            if d > 0 && objects.len() >= spec.objects_max {
                break;
            }
            let mut kinds = vec![Distractor::SameColor, Distractor::SameShape];
            let mut twins = Vec::new();
            if e.size.is_some() {
                twins.push(Distractor::OtherSize);
            }
            if e.position.is_some() {
                twins.push(Distractor::OtherPlace);
            }
            // Twins (same colour and shape, other size or place) are the hardest; negatives get more.
            let p_twin = if roles[k] { 0.3 } else { 0.6 };
            let kind = if !twins.is_empty() && rng.chance(p_twin) {
                *rng.pick(&twins)
            } else {
                kinds.extend(twins);
                *rng.pick(&kinds)
            };
            let placed =
                try_place(rng, spec, canvas, expressions, &objects, None, |rng| distractor(rng, canvas, e, kind));
            match placed {
                Some(o) => objects.push(o),
                None if d == 0 => return None,
                None => {}
            }
        }
    }
    let wanted = if canvas.sparse { 0 } else { rng.between(3, spec.objects_max.max(3)) };
    while objects.len() < wanted {
        let o = try_place(rng, spec, canvas, expressions, &objects, None, |rng| {
            let color = *rng.pick(&Color::ALL);
            let shape = *rng.pick(&Shape::ALL);
            let size = *rng.pick(&Size::ALL);
            scene::random_object(rng, shape, color, size, canvas, fx, fy)
        });
        match o {
            Some(o) => objects.push(o),
            None => break,
        }
    }
    Some(objects)
}

/// The centre region for an object at (`inside` = true) or clearly not at (`false`) a position.
/// Left and right are fractions of the width, top and bottom of the height.
fn region(p: Position, canvas: &Canvas, inside: bool) -> ((f32, f32), (f32, f32)) {
    let (w, h) = (canvas.width as f32, canvas.height as f32);
    let near = |side: f32| if inside { (0.0, POSITION_IN * side) } else { (POSITION_OUT * side, side) };
    let far = |side: f32| {
        let n = near(side);
        (side - n.1, side - n.0)
    };
    match p {
        Position::Left => (near(w), (0.0, h)),
        Position::Right => (far(w), (0.0, h)),
        Position::Top => ((0.0, w), near(h)),
        Position::Bottom => ((0.0, w), far(h)),
    }
}

fn distractor(rng: &mut Rng, canvas: &Canvas, e: &Expression, kind: Distractor) -> Object {
    let full = (0.0, canvas.width as f32);
    let (fx, fy) = (full, (0.0, canvas.height as f32));
    let any_size = |rng: &mut Rng| *rng.pick(&Size::ALL);
    match kind {
        Distractor::SameColor => {
            let others: Vec<Shape> = Shape::ALL.into_iter().filter(|&s| s != e.shape).collect();
            let shape = *rng.pick(&others);
            let size = any_size(rng);
            scene::random_object(rng, shape, e.color, size, canvas, fx, fy)
        }
        Distractor::SameShape => {
            let others: Vec<Color> = Color::ALL.into_iter().filter(|&c| c != e.color).collect();
            let color = *rng.pick(&others);
            let size = any_size(rng);
            scene::random_object(rng, e.shape, color, size, canvas, fx, fy)
        }
        Distractor::OtherSize => {
            let size = e.size.map_or_else(|| any_size(rng), Size::other);
            scene::random_object(rng, e.shape, e.color, size, canvas, fx, fy)
        }
        Distractor::OtherPlace => {
            let size = e.size.unwrap_or_else(|| any_size(rng));
            let (x, y) = match e.position {
                Some(p) => region(p, canvas, false),
                None => (fx, fy),
            };
            scene::random_object(rng, e.shape, e.color, size, canvas, x, y)
        }
    }
}

/// Draws candidates until one fits: its combination is not forbidden, it matches expression `target`
/// (if any) and clearly no other expression, and it keeps clear of objects of its colour.
fn try_place(
    rng: &mut Rng,
    spec: &AlbumSpec,
    canvas: &Canvas,
    expressions: &[Expression],
    objects: &[Object],
    target: Option<usize>,
    mut draw: impl FnMut(&mut Rng) -> Object,
) -> Option<Object> {
    (0..OBJECT_ATTEMPTS).find_map(|_| {
        let o = draw(rng);
        let combo = Combo { color: o.color, shape: o.shape };
        let fits = !spec.forbidden.contains(&combo)
            && expressions.iter().enumerate().all(|(k, e)| {
                let want = if target == Some(k) { Match::Yes } else { Match::No };
                e.matches(&o, canvas.width, canvas.height) == want
            })
            && objects.iter().all(|other| other.color != o.color || !o.near(other, 1.0));
        fits.then_some(o)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn albums_keep_their_rules() {
        for (look, square) in [(Look::Classic, true), (Look::Varied, false)] {
            albums_keep_their_rules_in(look, square);
        }
    }

    fn albums_keep_their_rules_in(look: Look, square: bool) {
        let heldout = [Combo { color: Color::Green, shape: Shape::Triangle }];
        let targets: Vec<Combo> = Combo::all().into_iter().filter(|c| !heldout.contains(c)).collect();
        let spec = AlbumSpec {
            image_size: 64,
            square,
            look,
            photos_min: 4,
            photos_max: 6,
            expressions_max: 3,
            objects_max: 7,
            target_combos: &targets,
            forbidden: &heldout,
        };
        let mut rng = Rng::new(11);
        for _ in 0..6 {
            let a = album(&mut rng, &spec).unwrap();
            for (k, e) in a.expressions.iter().enumerate() {
                let pos = a.photos.iter().filter(|p| p.targets[k].is_some()).count();
                assert!(pos >= 1 && pos < a.photos.len(), "{}: {pos} positives", e.text);
            }
            for p in &a.photos {
                let sparse = p.objects.len() <= 2 * a.expressions.len();
                assert!(p.objects.len() >= 3 || (look == Look::Varied && sparse), "{} objects", p.objects.len());
                assert_eq!((p.image.width(), p.image.height()), (p.width, p.height));
                assert_eq!(p.labels.len(), (p.width * p.height) as usize);
                for o in &p.objects {
                    assert!(!heldout.contains(&Combo { color: o.color, shape: o.shape }));
                    assert!(o.visible_pixels as f32 >= MIN_VISIBLE * o.area_pixels as f32);
                }
                for (k, e) in a.expressions.iter().enumerate() {
                    let matching: Vec<usize> = (0..p.objects.len())
                        .filter(|&i| e.matches(&p.objects[i], p.width, p.height) != Match::No)
                        .collect();
                    assert_eq!(matching, p.targets[k].into_iter().collect::<Vec<_>>());
                    let hard = p.objects.iter().filter(|o| {
                        (o.color == e.color) != (o.shape == e.shape) || (o.color == e.color && o.shape == e.shape)
                    });
                    assert!(hard.count() > usize::from(p.targets[k].is_some()), "{}", e.text);
                }
            }
        }
    }
}
