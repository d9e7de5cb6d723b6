//! The one error type of the crate.

use std::path::PathBuf;

/// Why an image gave no embedding, or the recogniser could not start.
///
/// Every variant but [`FaceError::Models`] is the caller's to fix; its message says how (the
/// gRPC server sends it as INVALID_ARGUMENT). No message carries pixel data or an embedding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaceError {
    /// The detector found no face.
    #[error("no face found in the image")]
    NoFace,
    /// The detector found more than one face: whose would the embedding be?
    #[error("{count} faces found; the photo must show exactly one")]
    SeveralFaces {
        /// How many faces were found (2 or more).
        count: usize,
    },
    /// Not a JPEG or PNG image, or a damaged one.
    #[error("unreadable image: {0}")]
    Unreadable(String),
    /// The encoded image is over [`crate::MAX_IMAGE_BYTES`].
    #[error("image is {bytes} bytes; the limit is {limit}")]
    TooLarge {
        /// Size of the encoded image.
        bytes: usize,
        /// The limit, [`crate::MAX_IMAGE_BYTES`].
        limit: usize,
    },
    /// The image's dimensions are over [`crate::MAX_PIXELS`] (a decompression bomb, or a
    /// photo far larger than a face needs).
    #[error("image is {width}x{height} pixels; the limit is {limit} pixels")]
    TooManyPixels {
        /// Width in pixels, as the image's header says.
        width: u32,
        /// Height in pixels, as the image's header says.
        height: u32,
        /// The limit, [`crate::MAX_PIXELS`].
        limit: u64,
    },
    /// A model file is missing or unreadable: the recogniser cannot start.
    #[error(
        "face model {}: {problem}; fetch the models with `scripts/face-models.sh DIR`",
        path.display()
    )]
    Models {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl FaceError {
    /// True for the errors the image's sender can fix (everything but [`FaceError::Models`]).
    pub fn is_bad_image(&self) -> bool {
        !matches!(self, FaceError::Models { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_tell_the_caller_what_to_fix() {
        assert_eq!(FaceError::NoFace.to_string(), "no face found in the image");
        assert_eq!(
            FaceError::SeveralFaces { count: 3 }.to_string(),
            "3 faces found; the photo must show exactly one"
        );
        assert_eq!(
            FaceError::TooLarge {
                bytes: 5_000_000,
                limit: 4_194_304
            }
            .to_string(),
            "image is 5000000 bytes; the limit is 4194304"
        );
        assert_eq!(
            FaceError::Unreadable("not a JPEG or PNG image".into()).to_string(),
            "unreadable image: not a JPEG or PNG image"
        );
        let models = FaceError::Models {
            path: "/m/shape_predictor_5_face_landmarks.dat".into(),
            problem: "missing".into(),
        };
        assert!(models.to_string().contains("scripts/face-models.sh"));
        assert!(!models.is_bad_image());
        assert!(FaceError::NoFace.is_bad_image());
    }
}
