//! Face enrolment and authentication: the biometric unit makes embeddings ([`Embedder`]);
//! templates are sealed under the template key ([`TemplateKey`]) and kept in the store; a
//! probe matches when its Euclidean distance to the template is at or below the rules'
//! `[face] threshold`. Results are kept until they expire, for the re-assessment after a
//! step-up ([`crate::assess`]).
//!
//! Images and embeddings are never logged and never kept in the clear.

use crate::clock::Clock;
use crate::embed::Embedder;
use crate::error::RiskError;
use crate::ids;
use crate::records::{AuthRecord, FaceRecord};
use crate::reload::RulesHandle;
use crate::store::RiskStore;
use crate::template::{distance, Template, TemplateKey};
use std::sync::Arc;

/// Counter of authentications, by outcome.
const AUTHENTICATIONS_METRIC: &str = "yunkey_risk_face_authentications_total";

/// An AuthenticateUser answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthOutcome {
    /// `auth-<32 hex>`.
    pub id: String,
    /// Whether the probe matched.
    pub matched: bool,
    /// Distance from the template.
    pub score: f64,
    /// The threshold in force.
    pub threshold: f64,
    /// The transaction it is for.
    pub tx_hash: [u8; 32],
}

/// Face templates and authentications.
pub struct Faces {
    store: RiskStore,
    key: Arc<TemplateKey>,
    embedder: Option<Arc<dyn Embedder>>,
    rules: RulesHandle,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Faces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faces")
            .field("has_embedder", &self.embedder.is_some())
            .finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RiskError> + Send + 'static,
) -> Result<T, RiskError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RiskError::Internal(format!("storage task failed: {e}")))?
}

impl Faces {
    /// Faces kept in `store` under `key`; `embedder` is the biometric unit (`None`: enrolment
    /// and authentication are refused).
    pub fn new(
        store: RiskStore,
        key: TemplateKey,
        embedder: Option<Arc<dyn Embedder>>,
        rules: RulesHandle,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            key: Arc::new(key),
            embedder,
            rules,
            clock,
        }
    }

    fn embedder(&self) -> Result<&dyn Embedder, RiskError> {
        self.embedder.as_deref().ok_or(RiskError::NoBiometricUnit)
    }

    /// Stores (or replaces) `user`'s template made from `image`; when.
    pub async fn enroll(&self, user: &str, image: &[u8]) -> Result<i64, RiskError> {
        let embedding = self.embedder()?.embed(image).await?;
        let template = Template {
            model: embedding.model.clone(),
            values: embedding.values.clone(),
        };
        let sealed = self.key.seal(user, &template);
        drop(template);
        let enrolled_at = self.clock.now();
        let store = self.store.clone();
        let u = user.to_owned();
        blocking(move || {
            store.put_face(
                &u,
                &FaceRecord {
                    enrolled_at,
                    sealed,
                },
            )?;
            // Durability point: the template is on disk before the enrolment is confirmed.
            store.flush()?;
            Ok(())
        })
        .await?;
        tracing::info!(target: "yunkey::audit", user, model = %embedding.model, "face enrolled");
        Ok(enrolled_at)
    }

    /// Deletes `user`'s template; whether there was one.
    pub async fn delete(&self, user: &str) -> Result<bool, RiskError> {
        let store = self.store.clone();
        let u = user.to_owned();
        let deleted = blocking(move || {
            let deleted = store.delete_face(&u)?;
            // Durability point: a deletion that was confirmed stays deleted.
            store.flush()?;
            Ok(deleted)
        })
        .await?;
        tracing::info!(target: "yunkey::audit", user, deleted, "face template deleted");
        Ok(deleted)
    }

    /// Compares `image` with `user`'s template, for the transaction `tx_hash`, and keeps the
    /// result until it expires.
    pub async fn authenticate(
        &self,
        user: &str,
        tx_hash: [u8; 32],
        image: &[u8],
    ) -> Result<AuthOutcome, RiskError> {
        let embedder = self.embedder()?;
        let store = self.store.clone();
        let u = user.to_owned();
        // The template is looked for first, so that an image is not sent for nothing.
        let record = blocking(move || Ok(store.face(&u)?))
            .await?
            .ok_or_else(|| RiskError::NoTemplate {
                user: user.to_owned(),
            })?;
        let probe = embedder.embed(image).await?;
        let template =
            self.key
                .open(user, &record.sealed)
                .map_err(|error| RiskError::Template {
                    user: user.to_owned(),
                    error,
                })?;
        if template.model != probe.model || template.values.len() != probe.values.len() {
            return Err(RiskError::ModelMismatch {
                user: user.to_owned(),
                enrolled: format!("{} ({} numbers)", template.model, template.values.len()),
                probe: format!("{} ({} numbers)", probe.model, probe.values.len()),
            });
        }
        let score = distance(&template.values, &probe.values);
        drop(template);
        let rules = self.rules.get();
        let threshold = rules.face_threshold;
        let matched = score <= threshold;
        let now = self.clock.now();
        let id = ids::new_id(ids::AUTH_PREFIX);
        let rec = AuthRecord {
            user_id: user.to_owned(),
            tx_hash,
            matched,
            expires_at: now + rules.decision_validity_secs,
        };
        let store = self.store.clone();
        let key = id.clone();
        blocking(move || {
            store.put_auth(&key, &rec)?;
            // Durability point: a result the coordinator may present again is on disk first.
            store.flush()?;
            Ok(())
        })
        .await?;
        metrics::counter!(AUTHENTICATIONS_METRIC, "matched" => if matched { "true" } else { "false" })
            .increment(1);
        tracing::info!(
            target: "yunkey::audit",
            user,
            authentication = %id,
            tx_hash = %hex::encode(tx_hash),
            matched,
            score,
            threshold,
            "face authentication"
        );
        Ok(AuthOutcome {
            id,
            matched,
            score,
            threshold,
            tx_hash,
        })
    }
}
