//! The reference risk service, `yunkey risk`: the business transaction module's decision
//! whether a transaction may be signed (`yunkey.v1.RiskService`).
//!
//! Every coordinator asks it before any chip signs. It answers ALLOW, STEP_UP (the user must
//! show their face first) or DENY, with a score and every rule that fired:
//!
//! ```text
//! coordinator --AssessRisk--> [request] -> [assess: user lock, store, engine] -> RiskDecision
//!             --AuthenticateUser--> [faces] --Embed--> biometric unit (yunkey-face)
//!                                      \-> sealed template in the store, distance <= threshold
//! ```
//!
//! - [`rules`]: the rules file (TOML, `deploy/risk/rules.example.toml`), checked field by
//!   field; [`reload`] puts a new file in force without a restart and keeps the old rules when
//!   the new file is bad.
//! - [`engine`]: the rules applied to one transaction, a pure function: amount limits per
//!   currency and per day, velocity, new device, unusual hours, impossible travel, payee
//!   block list. Verdict = the strongest action; score = the sum of weights, capped at 100.
//! - [`assess`]: one assessment under the user's lock; an allowed transaction is counted
//!   once (by tx_hash) and flushed before the answer; a step-up is satisfied only by a
//!   matched, unexpired authentication of the same user and transaction.
//! - [`faces`], [`template`], [`embed`]: face templates sealed with AES-256-GCM (AAD = user
//!   id), embeddings from the biometric unit behind the [`embed::Embedder`] seam.
//! - [`store`], [`records`]: the durable state in a `yunkey-store` database, every value
//!   versioned.
//! - [`service`], [`server`]: the gRPC service behind `yunkey_net::AccessLayer` (callers:
//!   role `node`), and the process around it.
//!
//! It depends on `yunkey-proto`, `yunkey-crypto` (the canonical transaction hash),
//! `yunkey-store` and `yunkey-net`, never on the coordinator or the chips: a business may
//! replace the whole crate with its own engine behind the same RiskService contract.

mod amount;
pub mod assess;
pub mod clock;
pub mod embed;
pub mod engine;
mod error;
pub mod faces;
pub mod geo;
mod ids;
mod locks;
pub mod records;
pub mod reload;
pub mod request;
pub mod rules;
mod rules_file;
pub mod server;
pub mod service;
pub mod store;
pub mod template;

pub use amount::Amount;
pub use error::RiskError;
pub use rules::{Rules, RulesError};
pub use server::{serve, ServeConfig};
