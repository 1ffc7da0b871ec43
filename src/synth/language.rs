//! The synthetic language: attributes (colour, shape, size, position), expression templates, the
//! vocabulary, and what it means for an object to match an expression.
//!
//! An expression always names a colour and a shape ("the red circle"); it may add a size ("a small blue
//! square") and a position ("yellow star on the left"). An object matches when every named attribute
//! holds. Colour, shape and size are exact categories. Position is judged from the object's centre with a
//! dead zone: "on the left" holds when the centre lies in the left third ([`POSITION_IN`]), fails when it
//! lies right of [`POSITION_OUT`] of the width, and is *ambiguous* in between; scenes never hold an
//! ambiguous object for any of their album's expressions.
use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// An object's centre within this fraction of the side from an edge is "on" that side.
pub const POSITION_IN: f32 = 1.0 / 3.0;
/// An object's centre beyond this fraction of the side from an edge is clearly not "on" that side.
pub const POSITION_OUT: f32 = 0.45;

/// Object colours (saturated, so they stand out from the muted backgrounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    White,
}

impl Color {
    pub const ALL: [Color; 7] =
        [Color::Red, Color::Green, Color::Blue, Color::Yellow, Color::Purple, Color::Orange, Color::White];

    /// The word used in expressions (also the JSON spelling).
    pub fn word(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::Purple => "purple",
            Color::Orange => "orange",
            Color::White => "white",
        }
    }

    /// The nominal sRGB colour objects of this colour are painted in (before shading and noise).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [210, 35, 35],
            Color::Green => [40, 160, 60],
            Color::Blue => [40, 80, 210],
            Color::Yellow => [235, 205, 40],
            Color::Purple => [135, 55, 170],
            Color::Orange => [240, 130, 30],
            Color::White => [240, 240, 240],
        }
    }
}

/// Object shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Ring,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 6] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star, Shape::Ring, Shape::Cross];

    /// The word used in expressions (also the JSON spelling).
    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
        }
    }
}

/// Object size class; the two classes are far apart (see `scene::scale_range`), so size is never ambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// Words that express this size in expressions (synonyms, the first is the JSON spelling).
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Size::Small => &["small", "little"],
            Size::Large => &["large", "big"],
        }
    }

    pub fn other(self) -> Size {
        match self {
            Size::Small => Size::Large,
            Size::Large => Size::Small,
        }
    }
}

/// Where in the photo an expression says the object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Left,
    Right,
    Top,
    Bottom,
}

impl Position {
    pub const ALL: [Position; 4] = [Position::Left, Position::Right, Position::Top, Position::Bottom];

    /// The phrase appended to an expression.
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
        }
    }

    /// Distance of a centre from this position's edge, as a fraction of the photo's width (left,
    /// right) or height (top, bottom); 0 = on the edge.
    fn edge_distance(self, center: [f32; 2], width: u32, height: u32) -> f32 {
        let (w, h) = (width as f32, height as f32);
        match self {
            Position::Left => center[0] / w,
            Position::Right => 1.0 - center[0] / w,
            Position::Top => center[1] / h,
            Position::Bottom => 1.0 - center[1] / h,
        }
    }

    /// Whether an object centred at `center` in a `width x height` photo is at this position: yes, no,
    /// or in the dead zone.
    pub fn judge(self, center: [f32; 2], width: u32, height: u32) -> Match {
        let d = self.edge_distance(center, width, height);
        if d <= POSITION_IN {
            Match::Yes
        } else if d >= POSITION_OUT {
            Match::No
        } else {
            Match::Ambiguous
        }
    }
}

/// A (colour, shape) pair: the unit held out between the training and the held-out split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Combo {
    pub color: Color,
    pub shape: Shape,
}

impl Combo {
    pub fn all() -> Vec<Combo> {
        Color::ALL.iter().flat_map(|&color| Shape::ALL.iter().map(move |&shape| Combo { color, shape })).collect()
    }
}

impl std::fmt::Display for Combo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.color.word(), self.shape.word())
    }
}

/// Whether an object matches an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    /// Too close to call (position dead zone): never allowed in a generated scene.
    Ambiguous,
}

/// A referring expression: its text and the attributes it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expression {
    pub text: String,
    pub color: Color,
    pub shape: Shape,
    pub size: Option<Size>,
    pub position: Option<Position>,
}

impl Expression {
    /// An expression for these attributes with a randomly chosen template: an optional determiner
    /// ("the", "a" or none), the size word (with synonyms), colour, shape, and the position phrase.
    pub fn new(rng: &mut Rng, combo: Combo, size: Option<Size>, position: Option<Position>) -> Expression {
        let mut words: Vec<&str> = Vec::new();
        let det = rng.below(10);
        if det < 6 {
            words.push("the");
        } else if det < 8 {
            words.push("a");
        }
        if let Some(size) = size {
            words.push(*rng.pick(size.words()));
        }
        words.push(combo.color.word());
        words.push(combo.shape.word());
        if let Some(position) = position {
            words.push(position.phrase());
        }
        Expression { text: words.join(" "), color: combo.color, shape: combo.shape, size, position }
    }

    pub fn combo(&self) -> Combo {
        Combo { color: self.color, shape: self.shape }
    }
}

/// Every word any expression can contain, sorted (for building a tokenizer vocabulary).
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = vec!["the", "a"];
    words.extend(Color::ALL.iter().map(|c| c.word()));
    words.extend(Shape::ALL.iter().map(|s| s.word()));
    words.extend(Size::ALL.iter().flat_map(|s| s.words().iter().copied()));
    words.extend(Position::ALL.iter().flat_map(|p| p.phrase().split(' ')));
    words.sort_unstable();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::scene::Object;

    fn object(color: Color, shape: Shape, size: Size, center: [f32; 2]) -> Object {
        Object {
            shape,
            color,
            size,
            center,
            radius: 10.0,
            rotation: 0.0,
            squash: 1.0,
            shear: 0.0,
            area_pixels: 0,
            visible_pixels: 0,
        }
    }

    #[test]
    fn templates_name_every_attribute_and_only_vocabulary_words() {
        let vocab = vocabulary();
        let mut rng = Rng::new(5);
        let mut saw_plain = false;
        for i in 0..200 {
            let combo = Combo::all()[i % 42];
            let size = if i % 3 == 0 { Some(Size::Small) } else { None };
            let position = if i % 4 == 0 { Some(Position::Top) } else { None };
            let e = Expression::new(&mut rng, combo, size, position);
            let words: Vec<&str> = e.text.split(' ').collect();
            assert!(words.iter().all(|w| vocab.contains(w)), "{}", e.text);
            assert!(words.contains(&combo.color.word()), "{}", e.text);
            assert!(words.contains(&combo.shape.word()), "{}", e.text);
            assert_eq!(size.is_some(), words.contains(&"small") || words.contains(&"little"), "{}", e.text);
            assert_eq!(position.is_some(), e.text.ends_with("at the top"));
            saw_plain |= words.len() == 2;
        }
        assert!(saw_plain, "some expressions should have no determiner");
    }

    #[test]
    fn vocabulary_is_small_sorted_and_complete() {
        let v = vocabulary();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        for w in ["the", "a", "red", "cross", "little", "big", "on", "at", "left", "bottom"] {
            assert!(v.contains(&w), "missing {w}");
        }
        assert_eq!(v.len(), 2 + 7 + 6 + 4 + 2 + 4); // determiners, colours, shapes, sizes, "on"/"at", sides
    }

    #[test]
    fn matching_checks_each_named_attribute() {
        let mut rng = Rng::new(1);
        let combo = Combo { color: Color::Red, shape: Shape::Circle };
        let plain = Expression::new(&mut rng, combo, None, None);
        let small_left = Expression::new(&mut rng, combo, Some(Size::Small), Some(Position::Left));
        let left_small_red_circle = object(Color::Red, Shape::Circle, Size::Small, [20.0, 64.0]);
        let middle = object(Color::Red, Shape::Circle, Size::Small, [50.0, 64.0]);
        let right = object(Color::Red, Shape::Circle, Size::Small, [100.0, 64.0]);
        let large = object(Color::Red, Shape::Circle, Size::Large, [20.0, 64.0]);
        let blue = object(Color::Blue, Shape::Circle, Size::Small, [20.0, 64.0]);
        let square = object(Color::Red, Shape::Square, Size::Small, [20.0, 64.0]);
        assert_eq!(plain.matches(&left_small_red_circle, 128, 128), Match::Yes);
        assert_eq!(plain.matches(&large, 128, 128), Match::Yes);
        assert_eq!(plain.matches(&blue, 128, 128), Match::No);
        assert_eq!(plain.matches(&square, 128, 128), Match::No);
        assert_eq!(small_left.matches(&left_small_red_circle, 128, 128), Match::Yes);
        assert_eq!(small_left.matches(&middle, 128, 128), Match::Ambiguous);
        assert_eq!(small_left.matches(&right, 128, 128), Match::No);
        assert_eq!(small_left.matches(&large, 128, 128), Match::No);
    }

    #[test]
    fn positions_mirror_each_other() {
        assert_eq!(Position::Right.judge([100.0, 5.0], 128, 128), Match::Yes);
        assert_eq!(Position::Right.judge([20.0, 5.0], 128, 128), Match::No);
        assert_eq!(Position::Top.judge([100.0, 5.0], 128, 128), Match::Yes);
        assert_eq!(Position::Bottom.judge([100.0, 5.0], 128, 128), Match::No);
        assert_eq!(Position::Bottom.judge([5.0, 64.0], 128, 128), Match::No);
        assert_eq!(Position::Bottom.judge([5.0, 77.0], 128, 128), Match::Ambiguous);
    }

    #[test]
    fn positions_are_fractions_of_width_and_height() {
        // A 150 x 100 photo: x = 45 is within a third of the width, y = 40 beyond 0.35 of the height.
        assert_eq!(Position::Left.judge([45.0, 40.0], 150, 100), Match::Yes);
        // In a 100 x 150 photo x = 42 lies at 0.42 of the width: the dead zone; 45 is at 0.45, clearly not.
        assert_eq!(Position::Left.judge([42.0, 40.0], 100, 150), Match::Ambiguous);
        assert_eq!(Position::Left.judge([45.0, 40.0], 100, 150), Match::No);
        assert_eq!(Position::Top.judge([45.0, 40.0], 150, 100), Match::Ambiguous);
        assert_eq!(Position::Top.judge([45.0, 40.0], 100, 150), Match::Yes);
        assert_eq!(Position::Right.judge([140.0, 40.0], 150, 100), Match::Yes);
    }
}
