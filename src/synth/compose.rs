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
//! - objects lie entirely inside the photo.
use anyhow::{bail, Result};
use image::RgbImage;

use super::language::{Color, Combo, Expression, Match, Position, Shape, Size, POSITION_IN, POSITION_OUT};
use super::rng::Rng;
use super::scene::{self, Object, Paint, Texture};

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

/// What an album is drawn from.
pub struct AlbumSpec<'a> {
    pub image_size: u32,
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
    pub texture: Texture,
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

/// A photo positive for expression k exactly when `roles[k]`.
fn photo(rng: &mut Rng, spec: &AlbumSpec, expressions: &[Expression], roles: &[bool]) -> Result<Photo> {
    for _ in 0..SCENE_ATTEMPTS {
        let Some(placed) = place(rng, spec, expressions, roles) else {
            continue;
        };
        // A few drawing orders for the same placement before drawing a new one.
        for _ in 0..4 {
            let mut objects = placed.clone();
            rng.shuffle(&mut objects);
            let labels = scene::label_map(&mut objects, spec.image_size);
            let visible_enough = objects
                .iter()
                .all(|o| o.visible_pixels > 0 && o.visible_pixels as f32 >= MIN_VISIBLE * o.area_pixels as f32);
            if !visible_enough {
                continue;
            }
            let targets: Vec<Option<usize>> = expressions
                .iter()
                .map(|e| objects.iter().position(|o| e.matches(o, spec.image_size) == Match::Yes))
                .collect();
            debug_assert!(targets.iter().zip(roles).all(|(t, &r)| t.is_some() == r));
            let background = scene::background(rng, spec.image_size);
            let paints: Vec<Paint> = objects.iter().map(|o| Paint::random(rng, o.color)).collect();
            let image = scene::render(rng, &objects, &paints, &background, spec.image_size);
            return Ok(Photo { image, texture: background.texture, objects, labels, targets });
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
fn place(rng: &mut Rng, spec: &AlbumSpec, expressions: &[Expression], roles: &[bool]) -> Option<Vec<Object>> {
    let side = spec.image_size as f32;
    let full = (0.0, side);
    let mut objects: Vec<Object> = Vec::new();
    for (k, e) in expressions.iter().enumerate() {
        if roles[k] {
            let o = try_place(rng, spec, expressions, &objects, Some(k), |rng| {
                let size = e.size.unwrap_or_else(|| *rng.pick(&Size::ALL));
                let (x, y) = match e.position {
                    Some(p) => region(p, side, true),
                    None => (full, full),
                };
                scene::random_object(rng, e.shape, e.color, size, spec.image_size, x, y)
            })?;
            objects.push(o);
        }
    }
    for (k, e) in expressions.iter().enumerate() {
        let count = if rng.chance(0.4) { 2 } else { 1 };
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
            let placed = try_place(rng, spec, expressions, &objects, None, |rng| distractor(rng, spec, e, kind));
            match placed {
                Some(o) => objects.push(o),
                None if d == 0 => return None,
                None => {}
            }
        }
    }
    let wanted = rng.between(3, spec.objects_max.max(3));
    while objects.len() < wanted {
        let o = try_place(rng, spec, expressions, &objects, None, |rng| {
            let color = *rng.pick(&Color::ALL);
            let shape = *rng.pick(&Shape::ALL);
            let size = *rng.pick(&Size::ALL);
            scene::random_object(rng, shape, color, size, spec.image_size, full, full)
        });
        match o {
            Some(o) => objects.push(o),
            None => break,
        }
    }
    Some(objects)
}

/// The centre region for an object at (`inside` = true) or clearly not at (`false`) a position.
fn region(p: Position, side: f32, inside: bool) -> ((f32, f32), (f32, f32)) {
    let full = (0.0, side);
    let near = if inside { (0.0, POSITION_IN * side) } else { (POSITION_OUT * side, side) };
    let far = (side - near.1, side - near.0);
    match p {
        Position::Left => (near, full),
        Position::Right => (far, full),
        Position::Top => (full, near),
        Position::Bottom => (full, far),
    }
}

fn distractor(rng: &mut Rng, spec: &AlbumSpec, e: &Expression, kind: Distractor) -> Object {
    let side = spec.image_size as f32;
    let full = (0.0, side);
    let any_size = |rng: &mut Rng| *rng.pick(&Size::ALL);
    match kind {
        Distractor::SameColor => {
            let others: Vec<Shape> = Shape::ALL.into_iter().filter(|&s| s != e.shape).collect();
            let shape = *rng.pick(&others);
            let size = any_size(rng);
            scene::random_object(rng, shape, e.color, size, spec.image_size, full, full)
        }
        Distractor::SameShape => {
            let others: Vec<Color> = Color::ALL.into_iter().filter(|&c| c != e.color).collect();
            let color = *rng.pick(&others);
            let size = any_size(rng);
            scene::random_object(rng, e.shape, color, size, spec.image_size, full, full)
        }
        Distractor::OtherSize => {
            let size = e.size.map_or_else(|| any_size(rng), Size::other);
            scene::random_object(rng, e.shape, e.color, size, spec.image_size, full, full)
        }
        Distractor::OtherPlace => {
            let size = e.size.unwrap_or_else(|| any_size(rng));
            let (x, y) = match e.position {
                Some(p) => region(p, side, false),
                None => (full, full),
            };
            scene::random_object(rng, e.shape, e.color, size, spec.image_size, x, y)
        }
    }
}

/// Draws candidates until one fits: its combination is not forbidden, it matches expression `target`
/// (if any) and clearly no other expression, and it keeps clear of objects of its colour.
fn try_place(
    rng: &mut Rng,
    spec: &AlbumSpec,
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
                e.matches(&o, spec.image_size) == want
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
        let heldout = [Combo { color: Color::Green, shape: Shape::Triangle }];
        let targets: Vec<Combo> = Combo::all().into_iter().filter(|c| !heldout.contains(c)).collect();
        let spec = AlbumSpec {
            image_size: 64,
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
                assert!(p.objects.len() >= 3);
                for o in &p.objects {
                    assert!(!heldout.contains(&Combo { color: o.color, shape: o.shape }));
                    assert!(o.visible_pixels as f32 >= MIN_VISIBLE * o.area_pixels as f32);
                }
                for (k, e) in a.expressions.iter().enumerate() {
                    let matching: Vec<usize> =
                        (0..p.objects.len()).filter(|&i| e.matches(&p.objects[i], 64) != Match::No).collect();
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
