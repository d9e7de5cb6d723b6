//! `yunkey.v1.FaceService` over a [`Recognizer`].

use crate::{FaceError, Recognizer, MAX_IMAGE_BYTES, MODEL_NAME};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use yunkey_proto::v1::face_service_server::{FaceService, FaceServiceServer};
use yunkey_proto::v1::{EmbedRequest, EmbedResponse};

/// Largest gRPC request the server decodes: an image of [`MAX_IMAGE_BYTES`] with room to
/// spare, so that an image somewhat over the limit gets [`FaceError::TooLarge`]'s message
/// rather than the transport's.
pub const MAX_REQUEST_BYTES: usize = MAX_IMAGE_BYTES + 1024 * 1024;

/// The FaceService: each Embed runs on a blocking thread, at most `workers` at once; the
/// others wait their turn.
#[derive(Debug, Clone)]
pub struct FaceGrpc {
    recognizer: Arc<Recognizer>,
    permits: Arc<Semaphore>,
}

impl FaceGrpc {
    /// A service over `recognizer` running at most `workers` (at least 1) embeddings at once.
    pub fn new(recognizer: Arc<Recognizer>, workers: usize) -> Self {
        Self {
            recognizer,
            permits: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    /// The tonic server, accepting requests up to [`MAX_REQUEST_BYTES`].
    pub fn into_server(self) -> FaceServiceServer<Self> {
        FaceServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl FaceService for FaceGrpc {
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let image = request.into_inner().image;
        // Refuse an oversized image before it waits for a worker.
        if image.len() > MAX_IMAGE_BYTES {
            return Err(status(FaceError::TooLarge {
                bytes: image.len(),
                limit: MAX_IMAGE_BYTES,
            }));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the face service is shutting down"))?;
        let recognizer = self.recognizer.clone();
        let result = tokio::task::spawn_blocking(move || {
            let result = recognizer.embed(&image);
            drop(permit);
            result
        })
        .await
        .map_err(|_| Status::internal("the face recogniser failed on this image"))?;
        let embedding = result.map_err(status)?;
        Ok(Response::new(EmbedResponse {
            embedding: embedding.as_slice().to_vec(),
            model: MODEL_NAME.to_owned(),
        }))
    }
}

/// The one mapping of [`FaceError`] to a gRPC status: the image's faults are the caller's to
/// fix (INVALID_ARGUMENT, with the error's message); a model fault is the server's.
pub fn status(e: FaceError) -> Status {
    if e.is_bad_image() {
        Status::invalid_argument(e.to_string())
    } else {
        Status::internal(format!("the face recogniser is not working: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_images_are_invalid_arguments() {
        let s = status(FaceError::SeveralFaces { count: 3 });
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "3 faces found; the photo must show exactly one"
        );
        let s = status(FaceError::Models {
            path: "m".into(),
            problem: "missing".into(),
        });
        assert_eq!(s.code(), tonic::Code::Internal);
    }
}
