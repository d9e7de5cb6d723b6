//! Face embeddings and how to compare them.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Largest Euclidean [`distance`] at which two embeddings are taken to show the same person.
///
/// This is dlib's documented threshold for `dlib_face_recognition_resnet_model_v1`: the model
/// was trained so that faces of the same person lie closer than 0.6 and, with that threshold,
/// it is 99.38% accurate on the Labeled Faces in the Wild benchmark (Davis King: dlib's
/// `python_examples/face_recognition.py` and `examples/dnn_face_recognition_ex.cpp`, and the
/// model's notes in github.com/davisking/dlib-models). A deployment that wants fewer false
/// matches at the price of more false rejections compares with a lower value (the
/// face_recognition package calls 0.6 typical and lower stricter).
pub const THRESHOLD: f32 = 0.6;

/// A face descriptor: 128 numbers from dlib's ResNet model. Embeddings of different models
/// are not comparable.
///
/// It is biometric data: `Debug` does not print the numbers, and the memory is zeroed on drop
/// (dlib's own working copies are not).
#[derive(Clone, PartialEq, Zeroize, ZeroizeOnDrop)]
pub struct Embedding([f32; Embedding::DIMENSIONS]);

impl Embedding {
    /// How many numbers an embedding has.
    pub const DIMENSIONS: usize = 128;

    /// An embedding from its numbers (a stored template, a gRPC reply); `None` unless there
    /// are exactly [`Embedding::DIMENSIONS`] finite numbers.
    pub fn from_slice(values: &[f32]) -> Option<Self> {
        let array: [f32; Self::DIMENSIONS] = values.try_into().ok()?;
        array.iter().all(|v| v.is_finite()).then_some(Self(array))
    }

    /// The numbers.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embedding({} numbers, not shown)", Self::DIMENSIONS)
    }
}

/// The Euclidean distance between two embeddings: below [`THRESHOLD`], the same person.
pub fn distance(a: &Embedding, b: &Embedding) -> f32 {
    let sum: f64 =
        a.0.iter()
            .zip(b.0.iter())
            .map(|(x, y)| {
                let d = f64::from(*x) - f64::from(*y);
                d * d
            })
            .sum();
    sum.sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_euclidean() {
        let zero = Embedding::from_slice(&[0.0; 128]).unwrap();
        let one = Embedding::from_slice(&[1.0; 128]).unwrap();
        assert_eq!(distance(&zero, &zero), 0.0);
        assert!((distance(&zero, &one) - 128f32.sqrt()).abs() < 1e-6);
        assert_eq!(distance(&zero, &one), distance(&one, &zero));
    }

    #[test]
    fn only_128_finite_numbers_make_an_embedding() {
        assert!(Embedding::from_slice(&[0.5; 127]).is_none());
        assert!(Embedding::from_slice(&[0.5; 129]).is_none());
        let mut values = [0.5; 128];
        values[7] = f32::NAN;
        assert!(Embedding::from_slice(&values).is_none());
        values[7] = 0.25;
        assert_eq!(Embedding::from_slice(&values).unwrap().as_slice(), &values);
    }

    #[test]
    fn debug_hides_the_numbers() {
        let e = Embedding::from_slice(&[0.123_456; 128]).unwrap();
        let shown = format!("{e:?}");
        assert!(!shown.contains("0.12"), "{shown}");
    }
}
