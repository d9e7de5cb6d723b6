//! The recogniser: dlib's HOG face detector, its 5-point landmark model and its ResNet
//! embedding model, as the face_recognition package uses them.

use crate::{decode, Embedding, FaceError};
use dlib_face_recognition::{
    FaceDetector, FaceDetectorTrait, FaceEncoderNetwork, FaceEncoderTrait, ImageMatrix,
    LandmarkPredictor, LandmarkPredictorTrait,
};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// File name of the 5-point landmark model in the models directory.
pub const LANDMARKS_FILE: &str = "shape_predictor_5_face_landmarks.dat";
/// File name of the embedding model in the models directory.
pub const ENCODER_FILE: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// The embedding model's name, as `EmbedResponse.model` reports it.
pub const MODEL_NAME: &str = "dlib_face_recognition_resnet_model_v1";

/// Turns photographs into [`Embedding`]s. Open it once and share it (`Arc<Recognizer>`):
/// [`Recognizer::embed`] takes `&self` and may be called from many threads at once.
///
/// dlib's detector and network must not be used by two threads at once, so each concurrent
/// call borrows its own copy of the models (about 30 MB each) from a pool that grows to the
/// largest number of concurrent calls; bound the concurrency where you call it.
pub struct Recognizer {
    dir: PathBuf,
    /// The models as loaded; copied when the pool is empty.
    prototype: Mutex<Engine>,
    /// Copies not in use.
    idle: Mutex<Vec<Engine>>,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("models", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One copy of the three models.
#[derive(Clone)]
struct Engine {
    detector: FaceDetector,
    landmarks: LandmarkPredictor,
    encoder: FaceEncoderNetwork,
}

impl Recognizer {
    /// Loads the models from `models_dir`, which must hold [`LANDMARKS_FILE`] and
    /// [`ENCODER_FILE`] (`scripts/face-models.sh DIR` puts them there).
    pub fn open(models_dir: &Path) -> Result<Recognizer, FaceError> {
        if !models_dir.is_dir() {
            return Err(FaceError::Models {
                path: models_dir.to_owned(),
                problem: "the models directory does not exist".into(),
            });
        }
        let landmarks_path = model_file(models_dir, LANDMARKS_FILE)?;
        let encoder_path = model_file(models_dir, ENCODER_FILE)?;
        let landmarks =
            LandmarkPredictor::open(&landmarks_path).map_err(|_| not_a_model(&landmarks_path))?;
        let encoder =
            FaceEncoderNetwork::open(&encoder_path).map_err(|_| not_a_model(&encoder_path))?;
        let engine = Engine {
            detector: FaceDetector::new(),
            landmarks,
            encoder,
        };
        Ok(Recognizer {
            dir: models_dir.to_owned(),
            prototype: Mutex::new(engine),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The embedding of the one face in a JPEG or PNG image of at most
    /// [`crate::MAX_IMAGE_BYTES`]. CPU-bound (a fraction of a second): call it off the async
    /// runtime.
    pub fn embed(&self, image_bytes: &[u8]) -> Result<Embedding, FaceError> {
        let image = decode::decode(image_bytes)?;
        let engine = self.checkout();
        let result = engine.embed(&image, &self.dir);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(engine);
        result
    }

    /// A copy of the models for one call: an idle one, or a new copy.
    fn checkout(&self) -> Engine {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        idle.unwrap_or_else(|| {
            self.prototype
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

impl Engine {
    fn embed(&self, image: &RgbImage, dir: &Path) -> Result<Embedding, FaceError> {
        let matrix = ImageMatrix::from_image(image);
        let faces = self.detector.face_locations(&matrix);
        let face = match &faces[..] {
            [] => return Err(FaceError::NoFace),
            [one] => one,
            several => {
                return Err(FaceError::SeveralFaces {
                    count: several.len(),
                })
            }
        };
        let landmarks = self.landmarks.face_landmarks(&matrix, face);
        // No jitter: one pass of the network (jittering averages 100 perturbed crops, 100
        // times the work, for a little accuracy).
        let encodings = self.encoder.get_face_encodings(&matrix, &[landmarks], 0);
        let values: Vec<f32> = encodings
            .first()
            .map(|e| e.as_ref().iter().map(|v| *v as f32).collect())
            .unwrap_or_default();
        Embedding::from_slice(&values).ok_or_else(|| FaceError::Models {
            path: dir.join(ENCODER_FILE),
            problem: format!(
                "the model gave {} numbers, not {} finite ones",
                values.len(),
                Embedding::DIMENSIONS
            ),
        })
    }
}

fn model_file(dir: &Path, name: &str) -> Result<PathBuf, FaceError> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(path),
        Ok(_) => Err(FaceError::Models {
            path,
            problem: "not a model file (empty, or not a regular file)".into(),
        }),
        Err(e) => Err(FaceError::Models {
            path,
            problem: format!("cannot be read ({e})"),
        }),
    }
}

fn not_a_model(path: &Path) -> FaceError {
    FaceError::Models {
        path: path.to_owned(),
        problem: "dlib cannot load it (a damaged or different file)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Recognizer>();
    }

    #[test]
    fn names_the_missing_file_and_the_script() {
        let dir = std::env::temp_dir().join(format!("yunkey-face-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Recognizer::open(&dir).unwrap_err().to_string();
        assert!(err.contains(LANDMARKS_FILE), "{err}");
        assert!(err.contains("scripts/face-models.sh"), "{err}");
        std::fs::write(dir.join(LANDMARKS_FILE), b"not a model").unwrap();
        std::fs::write(dir.join(ENCODER_FILE), b"").unwrap();
        let err = Recognizer::open(&dir).unwrap_err().to_string();
        assert!(err.contains(ENCODER_FILE), "{err}");
        std::fs::write(dir.join(ENCODER_FILE), b"not a model either").unwrap();
        let err = Recognizer::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains(LANDMARKS_FILE) && err.contains("cannot load"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = Recognizer::open(&dir).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
