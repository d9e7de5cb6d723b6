//! Signatures bound for one chip travel together. [`SignQueues`] keeps one queue per chip:
//! a caller's `SignAuthorized` waits in its chip's queue, and the queue's task sends what has
//! gathered as one `SignAuthorizedBatch` (one RPC, one TLS record each way, one trip to the
//! chip's blocking threads) with at most [`SignBatching::in_flight`] batches outstanding per
//! chip. Batches grow with load by themselves: a lone request goes at once (after one yield
//! to the runtime, so that callers woken together go together), as a plain
//! `SignAuthorized`; while a chip's batches are out, the next ones gather. Every item is
//! checked by the chip exactly as a single call is, and answered on its own.
//!
//! A chip that does not know `SignAuthorizedBatch` (an older build) is served one call per
//! signature; it is asked again after [`BATCH_RECHECK`], so an upgraded chip gets batches
//! again without a coordinator restart.

use crate::chip_client::{ChipClient, ChipFailure, ChipResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use yunkey_proto::v1 as pb;

/// How signatures are batched per chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignBatching {
    /// Most signatures in one batch; 1 sends every signature on its own.
    pub max_batch: usize,
    /// Batches (or single calls) outstanding per chip at once.
    pub in_flight: usize,
}

/// Most signatures the coordinators put in one batch by default (`--chip-batch`; a chip takes up to
/// `yunkey_chip::grpc::MAX_SIGN_BATCH`).
pub const MAX_SIGN_BATCH: usize = 64;
/// Batches outstanding per chip: one being signed while the next gathers, and one more so
/// that a chip with two cores is never idle waiting on the network.
pub const SIGN_IN_FLIGHT: usize = 3;

/// How long a chip that did not know `SignAuthorizedBatch` is sent single calls before it is
/// asked again.
pub const BATCH_RECHECK: Duration = Duration::from_secs(60);

/// When the chip of a queue last answered that it does not know `SignAuthorizedBatch`.
type BatchUnknownSince = Arc<Mutex<Option<Instant>>>;

impl Default for SignBatching {
    fn default() -> Self {
        Self {
            max_batch: MAX_SIGN_BATCH,
            in_flight: SIGN_IN_FLIGHT,
        }
    }
}

struct Pending {
    client: Arc<dyn ChipClient>,
    request: pb::SignAuthorizedRequest,
    reply: oneshot::Sender<ChipResult<pb::SignatureResponse>>,
}

struct Queue {
    sender: mpsc::UnboundedSender<Pending>,
}

/// The per-chip signing queues of one coordinator.
#[derive(Clone, Default)]
pub struct SignQueues {
    batching: SignBatching,
    queues: Arc<Mutex<HashMap<String, Queue>>>,
}

impl std::fmt::Debug for SignQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignQueues")
            .field("batching", &self.batching)
            .finish_non_exhaustive()
    }
}

impl SignQueues {
    /// Queues that batch as `batching` says.
    pub fn new(batching: SignBatching) -> Self {
        Self {
            batching: SignBatching {
                max_batch: batching.max_batch.max(1),
                in_flight: batching.in_flight.max(1),
            },
            queues: Arc::default(),
        }
    }

    /// Has `client`'s chip sign `request`, in a batch with whatever else is bound for it.
    pub async fn sign(
        &self,
        client: Arc<dyn ChipClient>,
        request: pb::SignAuthorizedRequest,
    ) -> ChipResult<pb::SignatureResponse> {
        if self.batching.max_batch == 1 {
            return client.sign_authorized(request).await;
        }
        let chip_id = client.chip_id().to_owned();
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            client,
            request,
            reply,
        };
        let pending = {
            let mut queues = self.queues.lock().expect("poisoned");
            let queue = queues
                .entry(chip_id.clone())
                .or_insert_with(|| self.start_queue());
            match queue.sender.send(pending) {
                Ok(()) => None,
                // Its task ended (the runtime that ran it is gone): start another.
                Err(mpsc::error::SendError(pending)) => {
                    let queue = self.start_queue();
                    let sent = queue.sender.send(pending).err().map(|e| e.0);
                    queues.insert(chip_id.clone(), queue);
                    sent
                }
            }
        };
        if let Some(pending) = pending {
            return pending.client.sign_authorized(pending.request).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(ChipFailure::Unreachable {
                chip_id,
                detail: "the signing queue stopped before the chip answered".into(),
            })
        })
    }

    fn start_queue(&self) -> Queue {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run_queue(receiver, self.batching));
        Queue { sender }
    }
}

/// Sends what gathers in one chip's queue, `in_flight` batches at a time.
async fn run_queue(mut receiver: mpsc::UnboundedReceiver<Pending>, batching: SignBatching) {
    let permits = Arc::new(Semaphore::new(batching.in_flight));
    let batch_unknown = BatchUnknownSince::default();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        // Callers come in bursts (every signature of a committed Raft entry at once), and
        // the first one's send wakes this task ahead of the rest: yield to the runtime while
        // more keep arriving, so that the burst travels as one batch rather than as a single
        // call for each free slot (run CB1, docs/performance.md item 29). A lone request
        // waits for one yield.
        let mut batch = vec![first];
        loop {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < batching.max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == batching.max_batch {
                break;
            }
        }
        let batch_unknown = batch_unknown.clone();
        tokio::spawn(async move {
            send(batch, &batch_unknown).await;
            drop(permit);
        });
    }
}

/// Sends one gathered batch and hands each caller its answer.
async fn send(batch: Vec<Pending>, batch_unknown: &BatchUnknownSince) {
    metrics::histogram!("yunkey_chip_sign_batch_size").record(batch.len() as f64);
    let unknown = batch_unknown
        .lock()
        .expect("poisoned")
        .is_some_and(|since| since.elapsed() < BATCH_RECHECK);
    if batch.len() == 1 || unknown {
        return send_each(batch).await;
    }
    let client = batch[0].client.clone();
    let items = batch.iter().map(|p| p.request.clone()).collect();
    match client.sign_authorized_batch(items).await {
        Ok(results) => {
            for (pending, result) in batch.into_iter().zip(results) {
                let _ = pending.reply.send(result);
            }
        }
        Err(failure) if failure.call_unknown() => {
            tracing::info!(chip = %client.chip_id(), recheck_secs = BATCH_RECHECK.as_secs(), "the chip does not know SignAuthorizedBatch (an older build): signing one call at a time");
            *batch_unknown.lock().expect("poisoned") = Some(Instant::now());
            send_each(batch).await;
        }
        Err(failure) => {
            for pending in batch {
                let _ = pending.reply.send(Err(failure.clone()));
            }
        }
    }
}

async fn send_each(batch: Vec<Pending>) {
    futures::future::join_all(batch.into_iter().map(|p| async move {
        let result = p.client.sign_authorized(p.request).await;
        let _ = p.reply.send(result);
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic::Code;

    /// A chip that answers after a pause, signs with the key handle's bytes, refuses handles
    /// starting with `refuse`, and records the size of every call.
    #[derive(Debug, Default)]
    struct FakeChip {
        knows_batch: bool,
        down: bool,
        singles: AtomicUsize,
        batches: Mutex<Vec<usize>>,
    }

    impl FakeChip {
        fn answer(&self, r: &pb::SignAuthorizedRequest) -> ChipResult<pb::SignatureResponse> {
            if r.key_handle.starts_with("refuse") {
                return Err(ChipFailure::from_item(
                    "chip-1",
                    &pb::ChipItemError {
                        code: Code::PermissionDenied as i32,
                        kind: "bad_authorization".into(),
                        message: format!("{} refused", r.key_handle),
                    },
                ));
            }
            Ok(pb::SignatureResponse {
                signature: r.key_handle.as_bytes().to_vec(),
                digest: Vec::new(),
            })
        }
    }

    /// The calls off the sign path, written as `async_trait` expands them (it cannot see
    /// through a macro).
    macro_rules! unused {
        ($($name:ident($req:ty) -> $resp:ty;)*) => {$(
            fn $name<'a, 'b>(
                &'a self,
                _: $req,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ChipResult<$resp>> + Send + 'b>>
            where
                'a: 'b,
                Self: 'b,
            {
                unreachable!(concat!(stringify!($name), " is not on the sign path"))
            }
        )*};
    }

    #[tonic::async_trait]
    impl ChipClient for FakeChip {
        fn chip_id(&self) -> &str {
            "chip-1"
        }
        async fn get_info(&self, _: Duration) -> ChipResult<pb::ChipInfo> {
            unreachable!()
        }
        async fn sign_authorized(
            &self,
            r: pb::SignAuthorizedRequest,
        ) -> ChipResult<pb::SignatureResponse> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.singles.fetch_add(1, Ordering::SeqCst);
            self.answer(&r)
        }
        async fn sign_authorized_batch(
            &self,
            items: Vec<pb::SignAuthorizedRequest>,
        ) -> ChipResult<Vec<ChipResult<pb::SignatureResponse>>> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.down {
                return Err(ChipFailure::Unreachable {
                    chip_id: "chip-1".into(),
                    detail: "connection refused".into(),
                });
            }
            if !self.knows_batch {
                return Err(ChipFailure::from_status(
                    "chip-1",
                    &tonic::Status::unimplemented("unknown method"),
                ));
            }
            self.batches.lock().unwrap().push(items.len());
            Ok(items.iter().map(|r| self.answer(r)).collect())
        }
        unused! {
            init_domain(pb::InitDomainRequest) -> pb::DomainResponse;
            export_domain(pb::ExportDomainRequest) -> pb::ExportDomainResponse;
            import_domain(pb::ImportDomainRequest) -> pb::DomainResponse;
            set_trust_anchor(pb::SetTrustAnchorRequest) -> pb::DomainResponse;
            generate_key(pb::GenerateKeyRequest) -> pb::GenerateKeyResponse;
            bind_device(pb::BindDeviceRequest) -> pb::BindingResponse;
            update_binding(pb::UpdateBindingRequest) -> pb::BindingResponse;
            revoke_binding(pb::RevokeBindingRequest) -> pb::BindingResponse;
            set_activation(pb::SetActivationRequest) -> pb::BindingResponse;
            issue_certificate(pb::IssueCertificateRequest) -> pb::IssueCertificateResponse;
            unwrap_key(pb::UnwrapKeyRequest) -> pb::GenerateKeyResponse;
            delete_key(pb::KeyHandleRequest) -> pb::DeleteKeyResponse;
            list_keys(pb::ListKeysRequest) -> pb::ListKeysResponse;
            sign_manifest(pb::SignManifestRequest) -> pb::SignatureResponse;
        }
    }

    /// `n` callers at once, handles `key-0`.. (or `refuse-i` for each i in `refused`).
    async fn sign_many(
        queues: &SignQueues,
        chip: &Arc<FakeChip>,
        n: usize,
        refused: &[usize],
    ) -> Vec<ChipResult<pb::SignatureResponse>> {
        let calls = (0..n).map(|i| {
            let handle = if refused.contains(&i) {
                format!("refuse-{i}")
            } else {
                format!("key-{i}")
            };
            let client: Arc<dyn ChipClient> = chip.clone();
            queues.sign(
                client,
                pb::SignAuthorizedRequest {
                    key_handle: handle,
                    ..Default::default()
                },
            )
        });
        futures::future::join_all(calls).await
    }

    #[tokio::test]
    async fn callers_share_batches_and_each_gets_its_own_answer() {
        let chip = Arc::new(FakeChip {
            knows_batch: true,
            ..Default::default()
        });
        let queues = SignQueues::new(SignBatching {
            max_batch: 8,
            in_flight: 1,
        });
        let results = sign_many(&queues, &chip, 20, &[5, 13]).await;
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(signed) => assert_eq!(signed.signature, format!("key-{i}").into_bytes()),
                Err(refused) => {
                    assert!([5, 13].contains(&i), "{i}: {refused}");
                    assert_eq!(refused.code(), Code::PermissionDenied);
                    assert!(!refused.try_another_holder());
                    assert!(refused.to_string().contains(&format!("refuse-{i}")));
                }
            }
        }
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
        // Callers gather while a call is out, 8 at most (a lone one goes as a single call).
        let batches = chip.batches.lock().unwrap().clone();
        let singles = chip.singles.load(Ordering::SeqCst);
        assert_eq!(batches.iter().sum::<usize>() + singles, 20, "{batches:?}");
        assert!(batches.iter().all(|&n| (2..=8).contains(&n)), "{batches:?}");
        assert!(batches.len() <= 3, "{batches:?} and {singles} single calls");
    }

    /// As the sign path sees it: many tasks, each waiting for its Raft commit, are woken at
    /// once by a task of the runtime and all call the same chip, whose queue is idle with
    /// every slot free. (One worker, so that the order is the scheduler's alone: a woken task
    /// runs next on its worker, ahead of those woken before it.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn callers_woken_together_travel_together() {
        let chip = Arc::new(FakeChip {
            knows_batch: true,
            ..Default::default()
        });
        let queues = SignQueues::new(SignBatching {
            max_batch: 64,
            in_flight: 3,
        });
        // The queue exists and waits for work.
        assert!(sign_many(&queues, &chip, 1, &[]).await[0].is_ok());
        assert_eq!(chip.singles.load(Ordering::SeqCst), 1);
        let (commit, committed) = tokio::sync::watch::channel(false);
        let callers: Vec<_> = (0..40)
            .map(|i| {
                let (queues, chip, mut committed) =
                    (queues.clone(), chip.clone(), committed.clone());
                tokio::spawn(async move {
                    committed.wait_for(|c| *c).await.unwrap();
                    let client: Arc<dyn ChipClient> = chip;
                    let request = pb::SignAuthorizedRequest {
                        key_handle: format!("key-{i}"),
                        ..Default::default()
                    };
                    queues.sign(client, request).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::spawn(async move { commit.send(true).unwrap() });
        for (i, caller) in callers.into_iter().enumerate() {
            let signed = caller.await.unwrap().unwrap();
            assert_eq!(signed.signature, format!("key-{i}").into_bytes());
        }
        // Not a single call for each of the three free slots, then the rest.
        let batches = chip.batches.lock().unwrap().clone();
        let singles = chip.singles.load(Ordering::SeqCst) - 1;
        assert_eq!(batches.iter().sum::<usize>() + singles, 40, "{batches:?}");
        assert!(
            singles <= 1 && batches.len() <= 2,
            "{batches:?} and {singles} single calls"
        );
    }

    #[tokio::test]
    async fn an_older_chip_is_served_one_call_at_a_time() {
        let chip = Arc::new(FakeChip::default());
        let queues = SignQueues::new(SignBatching {
            max_batch: 8,
            in_flight: 1,
        });
        let results = sign_many(&queues, &chip, 12, &[3]).await;
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result.is_ok(), i != 3, "{i}: {result:?}");
        }
        assert_eq!(chip.singles.load(Ordering::SeqCst), 12);
        // Remembered: the next burst goes straight to single calls.
        sign_many(&queues, &chip, 12, &[]).await;
        assert_eq!(chip.singles.load(Ordering::SeqCst), 24);
    }

    #[tokio::test]
    async fn a_failed_call_reaches_every_caller_in_it() {
        let chip = Arc::new(FakeChip {
            knows_batch: true,
            down: true,
            ..Default::default()
        });
        let queues = SignQueues::new(SignBatching {
            max_batch: 8,
            in_flight: 1,
        });
        let results = sign_many(&queues, &chip, 6, &[]).await;
        let unreachable = results
            .iter()
            .filter(|r| matches!(r, Err(f) if f.chip_unhealthy() && f.try_another_holder()))
            .count();
        // They gathered before the queue's task first ran, and failed together.
        assert_eq!(unreachable, 6, "{results:?}");
        assert_eq!(chip.singles.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn batches_of_one_never_gather() {
        let chip = Arc::new(FakeChip {
            knows_batch: true,
            ..Default::default()
        });
        let queues = SignQueues::new(SignBatching {
            max_batch: 1,
            in_flight: 1,
        });
        let results = sign_many(&queues, &chip, 5, &[]).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(chip.singles.load(Ordering::SeqCst), 5);
        assert!(chip.batches.lock().unwrap().is_empty());
    }
}
