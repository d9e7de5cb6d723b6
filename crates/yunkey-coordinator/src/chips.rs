//! The coordinator's view of the chips: one pooled channel per chip, health from heartbeats,
//! and routing that prefers healthy holders.
//!
//! Health: a chip that answers its heartbeat is *up*; one that missed the last heartbeat is
//! *suspect* and routed around at once; one that has not answered for
//! [`ChipsConfig::down_after`] is *down*. Health is local to each coordinator (it is an
//! observation, not replicated state).

use crate::chip_batch::{SignBatching, SignQueues};
use crate::chip_client::{ChipClient, ChipFailure, ChipResult, GrpcChip};
use crate::error::{CoordError, Result};
use crate::state::{ChipRecord, HolderRecord, StateView};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use yunkey_net::ChannelPool;
use yunkey_proto::v1::{ChipInfo, ChipState};

/// Heartbeat and health thresholds.
#[derive(Debug, Clone)]
pub struct ChipsConfig {
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Heartbeat timeout; a miss makes the chip suspect.
    pub heartbeat_timeout: Duration,
    /// Silence after which a chip is down.
    pub down_after: Duration,
    /// Timeout of a chip operation on the sign path.
    pub call_timeout: Duration,
    /// How signatures bound for one chip are batched ([`crate::chip_batch`]).
    pub sign_batching: SignBatching,
}

impl Default for ChipsConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_millis(500),
            down_after: Duration::from_secs(10),
            call_timeout: Duration::from_secs(2),
            sign_batching: SignBatching::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Health {
    last_ok: Option<Instant>,
    last_ok_unix_ms: i64,
    missed: bool,
    used: u64,
}

/// Chip connections and health.
#[derive(Debug, Clone)]
pub struct Chips {
    pool: ChannelPool,
    config: ChipsConfig,
    health: Arc<RwLock<HashMap<String, Health>>>,
    endpoints: Arc<RwLock<HashMap<String, String>>>,
    /// Clients that replace the network for some endpoints (unit tests: in-process chips).
    local: Arc<RwLock<HashMap<String, Arc<dyn ChipClient>>>>,
    round_robin: Arc<AtomicUsize>,
    sign_queues: SignQueues,
}

impl Chips {
    /// A directory whose channels use `pool` (node identity).
    pub fn new(pool: ChannelPool, config: ChipsConfig) -> Self {
        Self {
            pool,
            sign_queues: SignQueues::new(config.sign_batching),
            config,
            health: Arc::default(),
            endpoints: Arc::default(),
            local: Arc::default(),
            round_robin: Arc::default(),
        }
    }

    /// Thresholds in use.
    pub fn config(&self) -> &ChipsConfig {
        &self.config
    }

    /// The client for the chip at `endpoint` (named `name` in errors: its id, or the
    /// endpoint before admission), with the sign-path timeout.
    pub fn at(&self, name: &str, endpoint: &str) -> Result<Arc<dyn ChipClient>> {
        if let Some(local) = self.local.read().expect("poisoned").get(endpoint) {
            return Ok(local.clone());
        }
        let channel = self.pool.get(endpoint).map_err(|e| {
            CoordError::Chip(ChipFailure::Unreachable {
                chip_id: name.to_owned(),
                detail: format!("endpoint {endpoint}: {e}"),
            })
        })?;
        Ok(Arc::new(GrpcChip::new(
            name,
            channel,
            self.config.call_timeout,
        )))
    }

    /// The client for a registered chip, by id.
    pub fn chip(&self, chip_id: &str) -> Result<Arc<dyn ChipClient>> {
        let endpoint = self.endpoint_of(chip_id).ok_or_else(|| {
            CoordError::Chip(ChipFailure::Unreachable {
                chip_id: chip_id.to_owned(),
                detail: "no known endpoint (not in the registry yet)".into(),
            })
        })?;
        self.at(chip_id, &endpoint)
    }

    /// Has `chip` sign `request` (`SignAuthorized`), batched with the other signatures bound
    /// for the same chip.
    pub async fn sign_authorized(
        &self,
        chip: Arc<dyn ChipClient>,
        request: yunkey_proto::v1::SignAuthorizedRequest,
    ) -> ChipResult<yunkey_proto::v1::SignatureResponse> {
        self.sign_queues.sign(chip, request).await
    }

    /// Serves `endpoint` with `client` instead of the network (unit tests: an in-process chip,
    /// `yunkey_chip::ChipGrpc::in_process`).
    pub fn insert_local(&self, endpoint: &str, client: Arc<dyn ChipClient>) {
        self.local
            .write()
            .expect("poisoned")
            .insert(endpoint.to_owned(), client);
    }

    /// Remembers where a registered chip listens (the heartbeat loop keeps this current).
    pub fn learn(&self, chip: &ChipRecord) {
        self.endpoints
            .write()
            .expect("poisoned")
            .insert(chip.chip_id.clone(), chip.endpoint.clone());
    }

    /// Where a registered chip listens.
    pub fn endpoint_of(&self, chip_id: &str) -> Option<String> {
        self.endpoints
            .read()
            .expect("poisoned")
            .get(chip_id)
            .cloned()
    }

    /// Health of a chip as this node sees it.
    pub fn state(&self, chip_id: &str) -> ChipState {
        let health = self.health.read().expect("poisoned");
        match health.get(chip_id) {
            None => ChipState::Suspect,
            Some(h) => match h.last_ok {
                None => ChipState::Down,
                Some(t) if t.elapsed() >= self.config.down_after => ChipState::Down,
                Some(_) if h.missed => ChipState::Suspect,
                Some(_) => ChipState::Up,
            },
        }
    }

    /// Whether requests and new keys may go to this chip.
    pub fn routable(&self, chip_id: &str) -> bool {
        self.state(chip_id) == ChipState::Up
    }

    /// Keys the chip reported holding at its last heartbeat, and when that was (Unix ms).
    pub fn last_report(&self, chip_id: &str) -> (u64, i64) {
        let health = self.health.read().expect("poisoned");
        health
            .get(chip_id)
            .map(|h| (h.used, h.last_ok_unix_ms))
            .unwrap_or((0, 0))
    }

    /// Holders in the order to try: routable ones first, rotated so load spreads.
    pub fn order_holders<'a>(&self, holders: &'a [HolderRecord]) -> Vec<&'a HolderRecord> {
        let n = holders.len().max(1);
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed) % n;
        let mut ordered: Vec<&HolderRecord> = holders
            .iter()
            .cycle()
            .skip(start)
            .take(holders.len())
            .collect();
        ordered.sort_by_key(|h| !self.routable(&h.chip_id));
        ordered
    }

    /// Records the outcome of one heartbeat.
    fn record(&self, chip_id: &str, info: Option<&ChipInfo>) {
        let mut health = self.health.write().expect("poisoned");
        let h = health.entry(chip_id.to_owned()).or_insert(Health {
            last_ok: None,
            last_ok_unix_ms: 0,
            missed: true,
            used: 0,
        });
        match info {
            Some(info) => {
                h.last_ok = Some(Instant::now());
                h.last_ok_unix_ms = crate::clock::now_ms();
                h.missed = false;
                h.used = info.used;
            }
            None => h.missed = true,
        }
    }

    /// Marks a chip suspect at once (a sign call to it just failed as unavailable).
    pub fn mark_missed(&self, chip_id: &str) {
        self.record(chip_id, None);
    }

    /// Heartbeats every registered chip, forever. Run it as a background task.
    pub async fn heartbeat_loop(self, view: StateView) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let chips = match view.chips() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the chip registry");
                    continue;
                }
            };
            for chip in &chips {
                self.learn(chip);
            }
            let beats = chips.into_iter().map(|chip| {
                let this = self.clone();
                async move {
                    let info = match this.at(&chip.chip_id, &chip.endpoint) {
                        Ok(client) => client.get_info(this.config.heartbeat_timeout).await.ok(),
                        Err(_) => None,
                    };
                    let before = this.state(&chip.chip_id);
                    this.record(&chip.chip_id, info.as_ref());
                    let after = this.state(&chip.chip_id);
                    if before != after {
                        tracing::info!(chip = %chip.chip_id, from = ?before, to = ?after, "chip health changed");
                        metrics::gauge!("yunkey_chip_up", "chip" => chip.chip_id.clone())
                            .set(if after == ChipState::Up { 1.0 } else { 0.0 });
                    }
                }
            });
            futures::future::join_all(beats).await;
        }
    }

    /// Waits until `chip_id` has answered a heartbeat, up to `timeout`.
    pub async fn wait_up(&self, chip_id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.routable(chip_id) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Chips {
    /// Calls the holders of a key in routing order until one answers: the one way every
    /// coordinator-to-holder call picks its chip. A holder whose failure another holder may
    /// not share ([`ChipFailure::try_another_holder`]: unreachable, timed out, key missing,
    /// failed inside) is skipped, and an unreachable one is marked suspect at once; a refusal
    /// of the request itself is final, since every holder would give it. `what` names the key
    /// in the error when no holder answers.
    pub async fn first_answer<T, F, Fut>(
        &self,
        holders: &[HolderRecord],
        what: &str,
        mut call: F,
    ) -> Result<(HolderRecord, T)>
    where
        F: FnMut(Arc<dyn ChipClient>, HolderRecord) -> Fut,
        Fut: std::future::Future<Output = ChipResult<T>>,
    {
        let mut last = CoordError::Unavailable(format!("no chip holding {what} is reachable"));
        for holder in self.order_holders(holders) {
            let Ok(client) = self.chip(&holder.chip_id) else {
                continue;
            };
            match call(client, holder.clone()).await {
                Ok(value) => return Ok((holder.clone(), value)),
                Err(failure) if failure.try_another_holder() => {
                    if failure.chip_unhealthy() {
                        // Route around it at once; the heartbeat decides when it is back.
                        self.mark_missed(&holder.chip_id);
                    } else {
                        tracing::warn!(chip = %holder.chip_id, error = %failure, "holder failed; trying the next one");
                    }
                    last = CoordError::Chip(failure);
                }
                Err(failure) => return Err(CoordError::Chip(failure)),
            }
        }
        Err(last)
    }
}
