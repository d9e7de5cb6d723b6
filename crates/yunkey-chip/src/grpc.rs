//! `ChipGrpc`: the generated `ChipService` over any [`ChipBackend`]. Each RPC admits only
//! callers with the node role, validates its fields, runs the backend call on a blocking
//! thread and maps errors with [`crate::status::to_status`]. Signatures of a backend that
//! signs in memory go without the blocking thread when there are at most
//! [`INLINE_SIGNATURES`] of them: the hand-off (a thread woken, then the task woken back)
//! cost more than such a signature.

use crate::binding::PendingActivation;
use crate::{
    BindDevice, CertificateSubject, ChipAdmission, ChipBackend, ChipError, GenerateKey,
    IssueCertificate, KeyPurpose, Rebound, Revoke, SetActivation, SignAuthorized,
};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_net::role::{self, Role};
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::chip_service_server::{ChipService, ChipServiceServer};

/// Longest opaque blob (certificate, envelope, wrapped key, transaction) accepted.
const MAX_BLOB: usize = 16 * 1024;

/// Most requests in one `SignAuthorizedBatch`.
pub const MAX_SIGN_BATCH: usize = 256;

/// Most signatures of one call that a backend signing in memory
/// ([`ChipBackend::signs_in_memory`]) computes on the server's own thread: about 0.5 ms of
/// work on the development machine (each is a check of the device's signature and a
/// signature, about 0.11 ms together), short enough not to hold up the connections that
/// thread also serves. Larger batches spread over blocking threads.
pub const INLINE_SIGNATURES: usize = 4;

/// The operator's admission of this chip, as the chip process was given it: the operator key
/// (SPKI DER) and its signature over the chip's id and transport key. The chip reports it in
/// `GetInfo` so that coordinators can pass it to the chip that exports the domain; the
/// exporting chip checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAdmission {
    /// The operator key, SubjectPublicKeyInfo DER.
    pub operator_key: Vec<u8>,
    /// DER ECDSA signature over [`yunkey_crypto::authz::chip_admission_message`].
    pub signature: Vec<u8>,
}

/// Where the server finds the chip's admission, read on every `GetInfo` (so an operator can
/// drop it in while the chip runs).
pub type AdmissionSource = Arc<dyn Fn() -> Option<OperatorAdmission> + Send + Sync>;

/// The ChipService gRPC server over a backend.
#[derive(Clone)]
pub struct ChipGrpc {
    backend: Arc<dyn ChipBackend>,
    chip: String,
    admission: Option<AdmissionSource>,
    /// Whether callers must present a node certificate (always, unless made by
    /// [`ChipGrpc::in_process`]).
    check_roles: bool,
    /// Blocking threads one `SignAuthorizedBatch` spreads over: the machine's cores.
    parallelism: usize,
    /// Signatures of one call computed without a blocking thread: [`INLINE_SIGNATURES`]
    /// for a backend that signs in memory, else 0.
    inline_signatures: usize,
}

impl std::fmt::Debug for ChipGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChipGrpc")
            .field("chip", &self.chip)
            .finish_non_exhaustive()
    }
}

fn invalid(field: &'static str, reason: &str) -> Status {
    crate::status::to_status(&ChipError::Invalid(InvalidField::new(field, reason)))
}

fn blob(field: &'static str, value: &[u8]) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_BLOB {
        return Err(invalid(field, "is larger than 16384 bytes"));
    }
    Ok(())
}

fn id(field: &'static str, value: &str) -> Result<(), Status> {
    validate::identifier(field, value).map_err(|e| crate::status::to_status(&e.into()))
}

fn purpose(value: i32) -> Result<KeyPurpose, Status> {
    match pb::KeyPurpose::try_from(value) {
        Ok(pb::KeyPurpose::User) => Ok(KeyPurpose::User),
        Ok(pb::KeyPurpose::Ca) => Ok(KeyPurpose::Ca),
        Ok(pb::KeyPurpose::CodeSigning) => Ok(KeyPurpose::CodeSigning),
        Ok(pb::KeyPurpose::Unspecified) => Err(invalid(
            "purpose",
            "must be KEY_PURPOSE_USER, KEY_PURPOSE_CA or KEY_PURPOSE_CODE_SIGNING",
        )),
        Err(_) => Err(invalid("purpose", "is not a known KeyPurpose")),
    }
}

fn owner(purpose: KeyPurpose, user_id: &str) -> Result<(), Status> {
    match purpose {
        KeyPurpose::User => id("user_id", user_id),
        KeyPurpose::Ca | KeyPurpose::CodeSigning if user_id.is_empty() => Ok(()),
        KeyPurpose::Ca | KeyPurpose::CodeSigning => Err(invalid(
            "user_id",
            "must be empty for a CA or code-signing key",
        )),
    }
}

fn purpose_proto(purpose: KeyPurpose) -> i32 {
    match purpose {
        KeyPurpose::User => pb::KeyPurpose::User as i32,
        KeyPurpose::Ca => pb::KeyPurpose::Ca as i32,
        KeyPurpose::CodeSigning => pb::KeyPurpose::CodeSigning as i32,
    }
}

fn cipher_proto(cipher: Option<Cipher>) -> i32 {
    cipher.map_or(pb::DomainCipher::Unspecified, Cipher::to_proto) as i32
}

/// The domain `b` is in now (its id and cipher).
fn domain_response(b: &dyn ChipBackend) -> Result<pb::DomainResponse, ChipError> {
    let info = b.info()?;
    Ok(pb::DomainResponse {
        domain_id: info.domain_id.unwrap_or_default(),
        cipher: cipher_proto(info.domain_cipher),
    })
}

fn binding_response(r: Rebound) -> pb::BindingResponse {
    pb::BindingResponse {
        wrapped_key: r.wrapped_key,
        binding_seq: r.binding_seq,
        device_id: r.device_id.unwrap_or_default(),
    }
}

impl ChipGrpc {
    /// A server over `backend`; its chip id labels the metrics.
    pub fn new(backend: Arc<dyn ChipBackend>) -> Self {
        // Called once at start-up (it may block briefly on the backend).
        let info = backend.info();
        let chip = info
            .as_ref()
            .map(|i| i.chip_id.clone())
            .unwrap_or_else(|_| "unknown".into());
        if let Ok(info) = &info {
            metrics::gauge!("yunkey_chip_keys", "chip" => chip.clone()).set(info.used as f64);
        }
        let inline_signatures = if backend.signs_in_memory() {
            INLINE_SIGNATURES
        } else {
            0
        };
        Self {
            backend,
            chip,
            admission: None,
            check_roles: true,
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            inline_signatures,
        }
    }

    /// A server for in-process calls only (a coordinator's unit tests call it through the
    /// generated client with the server as transport): there is no TLS peer, so no role is
    /// checked. Never serve it on a socket.
    pub fn in_process(backend: Arc<dyn ChipBackend>) -> Self {
        Self {
            check_roles: false,
            ..Self::new(backend)
        }
    }

    /// Admits the caller of `req`: a node certificate, unless this is an in-process server.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.check_roles {
            role::require(req, &[Role::Node])?;
        }
        Ok(())
    }

    /// Reports the admission `source` gives in `GetInfo`.
    pub fn with_admission(mut self, source: AdmissionSource) -> Self {
        self.admission = Some(source);
        self
    }

    /// The tonic service, accepting messages up to [`yunkey_net::MAX_MESSAGE_BYTES`].
    pub fn into_server(self) -> ChipServiceServer<ChipGrpc> {
        ChipServiceServer::new(self)
            .max_decoding_message_size(yunkey_net::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(yunkey_net::MAX_MESSAGE_BYTES)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ChipBackend) -> Result<T, ChipError> + Send + 'static,
    {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(&*backend))
            .await
            .map_err(|_| Status::internal("chip operation aborted"))?
            .map_err(|e| crate::status::to_status(&e))
    }

    fn update_key_gauge(&self) {
        if let Ok(info) = self.backend.info() {
            metrics::gauge!("yunkey_chip_keys", "chip" => self.chip.clone()).set(info.used as f64);
        }
    }

    fn record_signature(&self, result: &Result<crate::Signed, ChipError>, started: Instant) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::counter!("yunkey_chip_signatures_total", "chip" => self.chip.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("yunkey_chip_sign_seconds", "chip" => self.chip.clone())
            .record(started.elapsed().as_secs_f64());
    }

    async fn sign<F>(&self, f: F) -> Result<Response<pb::SignatureResponse>, Status>
    where
        F: FnOnce(&dyn ChipBackend) -> Result<crate::Signed, ChipError> + Send + 'static,
    {
        let start = Instant::now();
        let result = if self.inline_signatures > 0 {
            f(&*self.backend)
        } else {
            let backend = self.backend.clone();
            tokio::task::spawn_blocking(move || f(&*backend))
                .await
                .map_err(|_| Status::internal("chip operation aborted"))?
        };
        self.record_signature(&result, start);
        Ok(Response::new(signature_response(result?)))
    }

    /// Runs the valid requests of a batch here (at most [`Self::inline_signatures`] of them)
    /// or on up to [`Self::parallelism`] blocking threads, each thread a contiguous run of
    /// them; returns their results in order.
    async fn sign_all(
        &self,
        requests: Vec<SignAuthorized>,
    ) -> Result<Vec<Result<crate::Signed, ChipError>>, Status> {
        let start = Instant::now();
        if requests.len() <= self.inline_signatures {
            let results: Vec<_> = requests
                .iter()
                .map(|r| self.backend.sign_authorized(r))
                .collect();
            for result in &results {
                self.record_signature(result, start);
            }
            return Ok(results);
        }
        let per_thread = requests.len().div_ceil(self.parallelism).max(1);
        let mut runs = Vec::new();
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let run: Vec<SignAuthorized> = requests.by_ref().take(per_thread).collect();
            let backend = self.backend.clone();
            runs.push(tokio::task::spawn_blocking(move || {
                run.iter()
                    .map(|r| backend.sign_authorized(r))
                    .collect::<Vec<_>>()
            }));
        }
        let mut results = Vec::new();
        for run in runs {
            let run = run
                .await
                .map_err(|_| Status::internal("chip operation aborted"))?;
            for result in run {
                self.record_signature(&result, start);
                results.push(result);
            }
        }
        Ok(results)
    }
}

fn signature_response(signed: crate::Signed) -> pb::SignatureResponse {
    pb::SignatureResponse {
        signature: signed.signature_der,
        digest: signed.digest.to_vec(),
    }
}

/// Checks the fields of a `SignAuthorized` request: the one check of both the single call and
/// each item of a batch.
fn sign_request(r: pb::SignAuthorizedRequest) -> Result<SignAuthorized, Status> {
    id("key_handle", &r.key_handle)?;
    id("user_id", &r.user_id)?;
    blob("canonical_transaction", &r.canonical_transaction)?;
    let authz = r
        .authorization
        .ok_or_else(|| invalid("authorization", "is required"))?;
    id("authorization.device_id", &authz.device_id)?;
    blob("authorization.signature", &authz.signature)?;
    let authorization_format = yunkey_crypto::authz::AuthorizationFormat::from_wire(authz.format)
        .map_err(|e| crate::status::to_status(&e.into()))?;
    Ok(SignAuthorized {
        key_handle: r.key_handle,
        user_id: r.user_id,
        canonical_transaction: r.canonical_transaction,
        device_id: authz.device_id,
        authorization_signature: authz.signature,
        authorization_format,
        binding_seq: r.binding_seq,
    })
}

/// One item's refusal, as the status the single call would have returned.
fn item_error(status: &Status) -> pb::SignAuthorizedResult {
    pb::SignAuthorizedResult {
        result: Some(pb::sign_authorized_result::Result::Error(
            pb::ChipItemError {
                code: status.code() as i32,
                kind: crate::status::error_kind(status)
                    .unwrap_or_default()
                    .to_owned(),
                message: status.message().to_owned(),
            },
        )),
    }
}

#[tonic::async_trait]
impl ChipService for ChipGrpc {
    async fn get_info(
        &self,
        req: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::ChipInfo>, Status> {
        self.admit(&req)?;
        let info = self.run(|b| b.info()).await?;
        metrics::gauge!("yunkey_chip_keys", "chip" => self.chip.clone()).set(info.used as f64);
        let admission = self.admission.as_ref().and_then(|source| source());
        let (admission_operator_key, admission_signature) = admission
            .map(|a| (a.operator_key, a.signature))
            .unwrap_or_default();
        Ok(Response::new(pb::ChipInfo {
            chip_id: info.chip_id,
            capacity: info.capacity,
            used: info.used,
            zone: info.zone,
            transport_public_key: info.transport_public_key,
            domain_id: info.domain_id.unwrap_or_default(),
            trust_anchor: info.trust_anchor.unwrap_or_default(),
            sm2_trust_anchor: info.sm2_trust_anchor.unwrap_or_default(),
            operator_key: info.operator_key.unwrap_or_default(),
            custody: info.custody,
            admission_operator_key,
            admission_signature,
            domain_cipher: cipher_proto(info.domain_cipher),
        }))
    }

    async fn init_domain(
        &self,
        req: Request<pb::InitDomainRequest>,
    ) -> Result<Response<pb::DomainResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        blob("operator_key", &r.operator_key)?;
        blob("admission_signature", &r.admission_signature)?;
        let cipher = Cipher::from_proto(r.cipher)
            .map_err(|_| invalid("cipher", "is not a known DomainCipher"))?
            .unwrap_or_default();
        let response = self
            .run(move |b| {
                b.init_domain(&r.operator_key, &r.admission_signature, cipher)?;
                domain_response(b)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn export_domain(
        &self,
        req: Request<pb::ExportDomainRequest>,
    ) -> Result<Response<pb::ExportDomainResponse>, Status> {
        self.admit(&req)?;
        let r = req
            .into_inner()
            .recipient
            .ok_or_else(|| invalid("recipient", "is required"))?;
        id("recipient.chip_id", &r.chip_id)?;
        blob("recipient.transport_key", &r.transport_key)?;
        blob("recipient.operator_signature", &r.operator_signature)?;
        let recipient = ChipAdmission {
            chip_id: r.chip_id,
            transport_public_key: r.transport_key,
            operator_signature: r.operator_signature,
        };
        let e = self.run(move |b| b.export_domain(&recipient)).await?;
        Ok(Response::new(pb::ExportDomainResponse {
            envelope: e.envelope,
            domain_id: e.domain_id,
            cipher: e.cipher.to_proto() as i32,
        }))
    }

    async fn import_domain(
        &self,
        req: Request<pb::ImportDomainRequest>,
    ) -> Result<Response<pb::DomainResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        blob("envelope", &r.envelope)?;
        let response = self
            .run(move |b| {
                b.import_domain(&r.envelope)?;
                domain_response(b)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn set_trust_anchor(
        &self,
        req: Request<pb::SetTrustAnchorRequest>,
    ) -> Result<Response<pb::DomainResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        blob("certificate", &r.certificate)?;
        let response = self
            .run(move |b| {
                b.set_trust_anchor(&r.certificate)?;
                domain_response(b)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn generate_key(
        &self,
        req: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        let algorithm =
            yunkey_crypto::sig::Algorithm::from_proto(r.algorithm).ok_or_else(|| {
                invalid(
                    "algorithm",
                    "is not a known Algorithm; send ECDSA_P256 (1) or SM2 (2)",
                )
            })?;
        let p = purpose(r.purpose)?;
        owner(p, &r.user_id)?;
        let activation = match (p, r.activation_code_sha256.len()) {
            (KeyPurpose::User, 32) => Some(PendingActivation {
                code_sha256: r.activation_code_sha256.try_into().expect("32 bytes"),
                expires_at: r.activation_expires_at,
            }),
            (KeyPurpose::User, 0) => None,
            (KeyPurpose::User, _) => {
                return Err(invalid(
                    "activation_code_sha256",
                    "must be a 32-byte SHA-256 (or empty for a key no device can bind)",
                ))
            }
            (KeyPurpose::Ca | KeyPurpose::CodeSigning, 0) => None,
            (KeyPurpose::Ca | KeyPurpose::CodeSigning, _) => {
                return Err(invalid(
                    "activation_code_sha256",
                    "must be empty for a CA or code-signing key",
                ))
            }
        };
        let request = GenerateKey {
            algorithm,
            distid: r.distinguishing_id,
            purpose: p,
            user_id: r.user_id,
            activation,
        };
        let g = self.run(move |b| b.generate_key(&request)).await?;
        self.update_key_gauge();
        Ok(Response::new(pb::GenerateKeyResponse {
            key_handle: g.handle,
            public_key: g.public_key_spki,
            wrapped_key: g.wrapped_key,
            binding_seq: g.binding_seq,
        }))
    }

    async fn sign_authorized(
        &self,
        req: Request<pb::SignAuthorizedRequest>,
    ) -> Result<Response<pb::SignatureResponse>, Status> {
        self.admit(&req)?;
        let request = sign_request(req.into_inner())?;
        self.sign(move |b| b.sign_authorized(&request)).await
    }

    async fn sign_authorized_batch(
        &self,
        req: Request<pb::SignAuthorizedBatchRequest>,
    ) -> Result<Response<pb::SignAuthorizedBatchResponse>, Status> {
        self.admit(&req)?;
        let items = req.into_inner().items;
        if items.is_empty() || items.len() > MAX_SIGN_BATCH {
            return Err(invalid(
                "items",
                &format!(
                    "has {} requests; a batch holds 1 to {MAX_SIGN_BATCH}",
                    items.len()
                ),
            ));
        }
        // Each item is checked on its own; a malformed one is answered as refused, in place.
        let mut valid = Vec::with_capacity(items.len());
        let mut refusals = Vec::with_capacity(items.len());
        for item in items {
            match sign_request(item) {
                Ok(request) => {
                    valid.push(request);
                    refusals.push(None);
                }
                Err(status) => refusals.push(Some(status)),
            }
        }
        let mut signed = self.sign_all(valid).await?.into_iter();
        let results = refusals
            .into_iter()
            .map(|refusal| match refusal {
                Some(status) => Err(status),
                None => signed
                    .next()
                    .expect("one result per valid item")
                    .map_err(|e| crate::status::to_status(&e)),
            })
            .map(|result| match result {
                Ok(s) => pb::SignAuthorizedResult {
                    result: Some(pb::sign_authorized_result::Result::Signed(
                        signature_response(s),
                    )),
                },
                Err(refused) => item_error(&refused),
            })
            .collect();
        Ok(Response::new(pb::SignAuthorizedBatchResponse { results }))
    }

    async fn bind_device(
        &self,
        req: Request<pb::BindDeviceRequest>,
    ) -> Result<Response<pb::BindingResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        id("user_id", &r.user_id)?;
        blob("device_public_key", &r.device_public_key)?;
        blob("proof", &r.proof)?;
        let request = BindDevice {
            key_handle: r.key_handle,
            user_id: r.user_id,
            activation_code: r.activation_code,
            device_public_key: r.device_public_key,
            proof: r.proof,
        };
        let rebound = self.run(move |b| b.bind_device(&request)).await?;
        Ok(Response::new(binding_response(rebound)))
    }

    async fn update_binding(
        &self,
        req: Request<pb::UpdateBindingRequest>,
    ) -> Result<Response<pb::BindingResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        blob("wrapped_key", &r.wrapped_key)?;
        let rebound = self
            .run(move |b| b.update_binding(&r.key_handle, &r.wrapped_key))
            .await?;
        Ok(Response::new(binding_response(rebound)))
    }

    async fn revoke_binding(
        &self,
        req: Request<pb::RevokeBindingRequest>,
    ) -> Result<Response<pb::BindingResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        id("user_id", &r.user_id)?;
        if !r.device_id.is_empty() {
            id("device_id", &r.device_id)?;
        }
        let request = Revoke {
            key_handle: r.key_handle,
            user_id: r.user_id,
            device_id: (!r.device_id.is_empty()).then_some(r.device_id),
        };
        let rebound = self.run(move |b| b.revoke(&request)).await?;
        Ok(Response::new(binding_response(rebound)))
    }

    async fn set_activation(
        &self,
        req: Request<pb::SetActivationRequest>,
    ) -> Result<Response<pb::BindingResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        id("user_id", &r.user_id)?;
        let code_sha256: [u8; 32] = r
            .activation_code_sha256
            .as_slice()
            .try_into()
            .map_err(|_| invalid("activation_code_sha256", "must be 32 bytes (SHA-256)"))?;
        let request = SetActivation {
            key_handle: r.key_handle,
            user_id: r.user_id,
            code_sha256,
            expires_at: r.expires_at,
        };
        let rebound = self.run(move |b| b.set_activation(&request)).await?;
        Ok(Response::new(binding_response(rebound)))
    }

    async fn issue_certificate(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        use pb::issue_certificate_request::Subject;
        self.admit(&req)?;
        let r = req.into_inner();
        id("ca_key_handle", &r.ca_key_handle)?;
        let subject = match r.subject {
            Some(Subject::CaCommonName(common_name)) => CertificateSubject::Ca { common_name },
            Some(Subject::User(u)) => {
                blob("user.wrapped_user_key", &u.wrapped_user_key)?;
                CertificateSubject::User {
                    wrapped_user_key: u.wrapped_user_key,
                    display_name: u.display_name,
                }
            }
            Some(Subject::Device(d)) => {
                blob("device.wrapped_user_key", &d.wrapped_user_key)?;
                id("device.device_id", &d.device_id)?;
                CertificateSubject::Device {
                    wrapped_user_key: d.wrapped_user_key,
                    device_id: d.device_id,
                    validity_secs: (d.validity_seconds != 0).then_some(d.validity_seconds),
                }
            }
            Some(Subject::CodeSigning(c)) => {
                blob(
                    "code_signing.wrapped_code_signing_key",
                    &c.wrapped_code_signing_key,
                )?;
                CertificateSubject::CodeSigning {
                    wrapped_key: c.wrapped_code_signing_key,
                }
            }
            None => {
                return Err(invalid(
                    "subject",
                    "give ca_common_name, user, device or code_signing",
                ))
            }
        };
        let request = IssueCertificate {
            ca_key_handle: r.ca_key_handle,
            subject,
        };
        let certificate = self.run(move |b| b.issue_certificate(&request)).await?;
        Ok(Response::new(pb::IssueCertificateResponse { certificate }))
    }

    async fn wrap_key(
        &self,
        req: Request<pb::KeyHandleRequest>,
    ) -> Result<Response<pb::WrappedKeyResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        let wrapped_key = self.run(move |b| b.wrap_key(&r.key_handle)).await?;
        Ok(Response::new(pb::WrappedKeyResponse { wrapped_key }))
    }

    async fn unwrap_key(
        &self,
        req: Request<pb::UnwrapKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        blob("wrapped_key", &r.wrapped_key)?;
        let p = purpose(r.purpose)?;
        owner(p, &r.user_id)?;
        let g = self
            .run(move |b| b.unwrap_key(&r.wrapped_key, p, &r.user_id))
            .await?;
        self.update_key_gauge();
        Ok(Response::new(pb::GenerateKeyResponse {
            key_handle: g.handle,
            public_key: g.public_key_spki,
            wrapped_key: g.wrapped_key,
            binding_seq: g.binding_seq,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        if r.limit > 1000 {
            return Err(invalid("limit", "must be at most 1000"));
        }
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let keys = self.run(move |b| b.list_keys(&r.after, limit)).await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys
                .into_iter()
                .map(|k| pb::KeyEntry {
                    key_handle: k.handle,
                    purpose: purpose_proto(k.purpose),
                    user_id: k.user_id,
                })
                .collect(),
        }))
    }

    async fn delete_key(
        &self,
        req: Request<pb::KeyHandleRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        let deleted = self.run(move |b| b.delete_key(&r.key_handle)).await?;
        self.update_key_gauge();
        Ok(Response::new(pb::DeleteKeyResponse { deleted }))
    }

    async fn sign_manifest(
        &self,
        req: Request<pb::SignManifestRequest>,
    ) -> Result<Response<pb::SignatureResponse>, Status> {
        self.admit(&req)?;
        let r = req.into_inner();
        id("key_handle", &r.key_handle)?;
        let version = yunkey_crypto::release::Version::parse("version", &r.version)
            .map_err(|e| crate::status::to_status(&e.into()))?;
        let file_sha256: yunkey_crypto::Digest = r
            .file_sha256
            .try_into()
            .map_err(|_| invalid("file_sha256", "must be 32 bytes (a SHA-256)"))?;
        let request = crate::SignManifest {
            key_handle: r.key_handle,
            version,
            file_sha256,
        };
        self.sign(move |b| b.sign_manifest(&request)).await
    }
}
