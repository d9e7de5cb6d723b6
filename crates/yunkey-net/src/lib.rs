//! yunkey's transport layer: everything about who talks to whom, over what.
//!
//! - [`tls`]: loading TLS identities and building tonic server and client TLS configs
//!   (rustls with the ring provider, installed once by [`install_crypto_provider`]).
//! - [`pki`]: the development PKI that `yunkey dev` generates: a TLS CA, a node identity, a
//!   business-client identity and an operator identity, with the peer's role carried in the
//!   certificate.
//! - [`role`]: reading the caller's role from its verified client certificate: `node`
//!   (coordinators and chips), `client` (business backends) or `operator` (membership, chip
//!   admission).
//! - [`access`]: the one table of every RPC and the roles it accepts, and the tower layer that
//!   enforces it in front of every yunkey server (default deny).
//! - [`pool`]: one multiplexed gRPC channel per endpoint, reused by every call.
//! - [`reason`]: typed reasons of refusals, carried in a status's metadata.
//! - [`server_tls`]: the coordinators' TLS 1.3 listener, trusting the cluster CA for roles and
//!   the user CA (set at run time) for device certificates.
//! - [`device_tls`]: a device's side of that channel: its certificate, with the handshake
//!   signed by the key in its keystore.
//! - [`sm2_tls`]: SM2 device certificates and `sm2sig_sm3` handshake signatures, which
//!   rustls and webpki do not know.
//! - [`whole_frames`]: the connection wrapper that lets h2 send a small message with its
//!   headers and trailers in one write.
//!
//! It sits under every server and client of yunkey. It may depend on tonic, rustls and X.509
//! crates, and on `yunkey-crypto` (pure computation) for SM2: no other yunkey crate, no
//! business logic.

pub mod access;
pub mod device_tls;
mod error;
pub mod pki;
pub mod pool;
pub mod reason;
pub mod role;
pub mod server_tls;
pub mod sm2_tls;
pub mod tls;
pub mod whole_frames;

pub use access::AccessLayer;
pub use error::NetError;
pub use pool::ChannelPool;
pub use role::Role;
pub use tls::TlsFiles;

/// Installs rustls' ring crypto provider as the process default. Call once at start-up;
/// later calls do nothing. (Without exactly one provider the first TLS config panics.)
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Metadata key in which a coordinator that is not the leader names the leader's
/// `https://host:port`, when only the leader serves a request (membership changes). Clients
/// send the same request there (`yunkey_client::Connection::call` does).
pub const LEADER_HINT_METADATA: &str = "x-yunkey-leader";

/// Largest gRPC message a yunkey server accepts or a client sends, in bytes. Every yunkey
/// request is small; a larger one is refused before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Largest face photo any yunkey process accepts (coordinators, the risk service, the
/// biometric unit), in bytes: 4 MiB.
pub const MAX_FACE_IMAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest message of the RPCs that may carry a photo (`SignRequest` with face evidence,
/// `EnrollFace`, `RiskService`, `FaceService`): a photo of [`MAX_FACE_IMAGE_BYTES`] and the
/// rest of the request.
pub const MAX_IMAGE_MESSAGE_BYTES: usize = MAX_FACE_IMAGE_BYTES + 64 * 1024;

/// Accepted connections of `listener` with `TCP_NODELAY` set, for
/// `Server::serve_with_incoming`. (tonic sets it only on sockets it binds itself; without it
/// small gRPC replies wait on delayed ACKs, some 40 ms each.)
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    })
}
