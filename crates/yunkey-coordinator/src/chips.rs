//! The coordinator's view of the chips: one pooled channel per chip, health from heartbeats,
//! and routing that prefers healthy holders.
//!
//! Health: a chip that answers its heartbeat is *up*; one that missed the last heartbeat is
//! *suspect* and routed around at once; one that has not answered for
//! [`ChipsConfig::down_after`] is *down*. Health is local to each coordinator (it is an
//! observation, not replicated state).

use crate::error::{CoordError, Result};
use crate::state::{ChipRecord, HolderRecord, StateView};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use yunkey_net::ChannelPool;
use yunkey_proto::v1::chip_service_client::ChipServiceClient;
use yunkey_proto::v1::{ChipInfo, ChipState, GetInfoRequest};

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
}

impl Default for ChipsConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_millis(500),
            down_after: Duration::from_secs(10),
            call_timeout: Duration::from_secs(2),
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
    round_robin: Arc<AtomicUsize>,
}

impl Chips {
    /// A directory whose channels use `pool` (node identity).
    pub fn new(pool: ChannelPool, config: ChipsConfig) -> Self {
        Self {
            pool,
            config,
            health: Arc::default(),
            endpoints: Arc::default(),
            round_robin: Arc::default(),
        }
    }

    /// Thresholds in use.
    pub fn config(&self) -> &ChipsConfig {
        &self.config
    }

    /// A client for the chip at `endpoint`.
    pub fn client(&self, endpoint: &str) -> Result<ChipServiceClient<Channel>> {
        let channel = self
            .pool
            .get(endpoint)
            .map_err(|e| CoordError::Unavailable(format!("chip endpoint {endpoint}: {e}")))?;
        Ok(ChipServiceClient::new(channel)
            .max_decoding_message_size(yunkey_net::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(yunkey_net::MAX_MESSAGE_BYTES))
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

    /// A client for a registered chip.
    pub fn client_for(&self, chip: &ChipRecord) -> Result<ChipServiceClient<Channel>> {
        self.client(&chip.endpoint)
    }

    /// A request with the sign-path timeout.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.config.call_timeout);
        req
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
                    let info = match this.client_for(&chip) {
                        Ok(mut client) => {
                            let mut req = tonic::Request::new(GetInfoRequest {});
                            req.set_timeout(this.config.heartbeat_timeout);
                            client.get_info(req).await.ok().map(|r| r.into_inner())
                        }
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
    /// Calls the holders of a key in routing order until one answers, the one way every
    /// coordinator-to-holder call picks its chip. A holder that is unreachable is marked
    /// suspect and the next is tried; one that lost the key or failed inside (NOT_FOUND,
    /// INTERNAL, RESOURCE_EXHAUSTED) is skipped; any other refusal is about the request
    /// itself and is final, since every holder would give it. `what` names the key in the
    /// error when no holder answers.
    pub async fn first_answer<T, F, Fut>(
        &self,
        holders: &[HolderRecord],
        what: &str,
        mut call: F,
    ) -> Result<(HolderRecord, T)>
    where
        F: FnMut(ChipServiceClient<Channel>, HolderRecord) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut last = CoordError::Unavailable(format!("no chip holding {what} is reachable"));
        for holder in self.order_holders(holders) {
            let Some(endpoint) = self.endpoint_of(&holder.chip_id) else {
                continue;
            };
            let client = self.client(&endpoint)?;
            match call(client, holder.clone()).await {
                Ok(value) => return Ok((holder.clone(), value)),
                Err(status) => {
                    use tonic::Code;
                    match status.code() {
                        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => {
                            // Route around it at once; the heartbeat decides when it is back.
                            self.mark_missed(&holder.chip_id);
                        }
                        // A chip that hangs (paused, overloaded, cut off without a reset)
                        // ends in the channel's own timeout: route around it too.
                        Code::Cancelled if timed_out(&status) => {
                            self.mark_missed(&holder.chip_id);
                        }
                        Code::NotFound | Code::Internal | Code::ResourceExhausted => {
                            tracing::warn!(chip = %holder.chip_id, code = ?status.code(), "holder failed; trying the next one");
                        }
                        _ => return Err(chip_err(&holder.chip_id)(status)),
                    }
                    last = chip_err(&holder.chip_id)(status);
                }
            }
        }
        Err(last)
    }
}

/// Whether a chip call ended without an answer in time: DEADLINE_EXCEEDED from the server, or
/// the client channel's own timeout, which tonic reports as CANCELLED "Timeout expired".
pub fn timed_out(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::DeadlineExceeded => true,
        tonic::Code::Cancelled => status.message().contains("Timeout expired"),
        _ => false,
    }
}

/// Whether a chip refused because its binding of the key is older than the request's: send it
/// the committed wrapped key with `UpdateBinding`, then retry.
pub fn binding_behind(status: &tonic::Status) -> bool {
    yunkey_proto::chip_error::kind(status) == Some(yunkey_proto::chip_error::BINDING_BEHIND)
}

/// Maps a chip call's status into a coordinator error naming the chip.
pub fn chip_err(chip_id: &str) -> impl FnOnce(tonic::Status) -> CoordError + '_ {
    move |status| CoordError::Chip {
        chip_id: chip_id.to_owned(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::timed_out;
    use tonic::Status;

    #[test]
    fn a_hung_chip_counts_as_unreachable_not_as_a_refusal() {
        assert!(timed_out(&Status::cancelled("Timeout expired")));
        assert!(timed_out(&Status::deadline_exceeded("deadline")));
        assert!(!timed_out(&Status::cancelled("the client went away")));
        assert!(!timed_out(&Status::internal("Timeout expired")));
        let e = crate::CoordError::Chip {
            chip_id: "chip-3".into(),
            status: Status::cancelled("Timeout expired"),
        };
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
}
