//! One logged-in token: the module loaded once per process, the slot, and a pool of sessions.
//!
//! PKCS#11 sessions are not thread safe, so every call borrows a session from the pool (or
//! opens one) and returns it afterwards. One more session, the *anchor*, is never closed
//! while the token is healthy: it holds the login (which PKCS#11 shares among all sessions of
//! the process) and owns the session objects (the domain's key-encryption keys), which live
//! as long as the session that made them. Object handles stay valid while any session is
//! open; if a call fails and its session is no longer logged in (the token was reset,
//! removed, or logged out), the pool is dropped, the anchor reopened and logged in, every cached handle
//! forgotten (the `generation` changes), and the call tried once more.

use crate::options::{Pin, TokenSelector};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use yunkey_chip::ChipError;

/// Modules loaded by this process. A PKCS#11 library is initialised once per process and
/// shared: a second `C_Initialize` would fail, and unloading one would break the others.
fn modules() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

fn load_module(path: &Path) -> Result<Pkcs11, ChipError> {
    let mut loaded = modules().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = loaded.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        ChipError::storage(
            "loading the PKCS#11 module",
            format!("{}: {e}", path.display()),
        )
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ChipError::storage("initialising the PKCS#11 module", e)),
    }
    loaded.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// Whether `e` means the session or the login is gone, so a fresh session may succeed.
fn session_lost(e: &Failure) -> bool {
    matches!(
        e,
        Failure::Token(Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        ))
    )
}

/// Whether `session` is still logged in as the user. A token that lost the login answers
/// calls on private objects with errors such as `CKR_KEY_HANDLE_INVALID`, not with
/// `CKR_USER_NOT_LOGGED_IN`, so a failed call asks.
fn logged_in(session: &Session) -> bool {
    session
        .get_session_info()
        .map(|i| {
            matches!(
                i.session_state(),
                SessionState::RwUser | SessionState::RoUser
            )
        })
        .unwrap_or(false)
}

/// Why a call on a session failed: the token refused it, or the custody found something
/// wrong (a missing object, a malformed attribute).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The PKCS#11 library's error (an `CKR_*` code; never key material).
    Token(Error),
    /// A custody-level error to return as is.
    Chip(ChipError),
}

impl Failure {
    /// The chip error for this failure while doing `op`.
    pub fn into_chip(self, op: &'static str) -> ChipError {
        match self {
            Failure::Token(e) => ChipError::storage(op, e),
            Failure::Chip(e) => e,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Token(e) => e.fmt(f),
            Failure::Chip(e) => e.fmt(f),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Token(e)
    }
}

impl From<ChipError> for Failure {
    fn from(e: ChipError) -> Self {
        Failure::Chip(e)
    }
}

/// A logged-in token.
pub(crate) struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    pin: Pin,
    anchor: Mutex<Option<Session>>,
    idle: Mutex<Vec<Session>>,
    idle_max: usize,
    generation: AtomicU64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("slot", &self.slot.id())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn find_slot(ctx: &Pkcs11, selector: &TokenSelector) -> Result<(Slot, String), ChipError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| ChipError::storage("listing the PKCS#11 slots", e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_owned();
        let wanted = match selector {
            TokenSelector::Slot(id) => slot.id() == *id,
            TokenSelector::Label(l) => *l == label,
        };
        if wanted {
            if !info.token_initialized() {
                return Err(ChipError::storage(
                    "opening the PKCS#11 token",
                    format!(
                        "the token in {selector} is not initialised (softhsm2-util --init-token)"
                    ),
                ));
            }
            return Ok((slot, label));
        }
        seen.push(format!("slot {} ({label:?})", slot.id()));
    }
    Err(ChipError::storage(
        "opening the PKCS#11 token",
        format!("no {selector}; the module has: {}", seen.join(", ")),
    ))
}

impl Token {
    /// Loads the module, finds the token and logs in as its user.
    pub fn open(
        module: &Path,
        selector: &TokenSelector,
        pin: Pin,
        idle_max: usize,
    ) -> Result<Self, ChipError> {
        let ctx = load_module(module)?;
        let (slot, label) = find_slot(&ctx, selector)?;
        let token = Self {
            ctx,
            slot,
            label,
            pin,
            anchor: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            idle_max,
            generation: AtomicU64::new(0),
        };
        token.reconnect().map_err(|e| match e {
            Failure::Token(Error::Pkcs11(RvError::PinIncorrect, _)) => ChipError::storage(
                "logging in to the PKCS#11 token",
                "the PIN is incorrect (check the PIN file)",
            ),
            Failure::Token(Error::Pkcs11(RvError::PinLocked, _)) => ChipError::storage(
                "logging in to the PKCS#11 token",
                "the user PIN is locked; the security officer must reset it",
            ),
            other => other.into_chip("logging in to the PKCS#11 token"),
        })?;
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Changes whenever cached object handles may have become invalid.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock_anchor(&self) -> MutexGuard<'_, Option<Session>> {
        self.anchor.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Session>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every session, opens a new anchor and logs in.
    fn reconnect(&self) -> Result<(), Failure> {
        let mut anchor = self.lock_anchor();
        self.lock_idle().clear();
        *anchor = None;
        self.generation.fetch_add(1, Ordering::AcqRel);
        let session = self.ctx.open_rw_session(self.slot)?;
        match session.login(UserType::User, Some(self.pin.auth())) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(e.into()),
        }
        *anchor = Some(session);
        Ok(())
    }

    fn checkout(&self) -> Result<Session, Failure> {
        if let Some(s) = self.lock_idle().pop() {
            return Ok(s);
        }
        if self.lock_anchor().is_none() {
            self.reconnect()?;
        }
        Ok(self.ctx.open_rw_session(self.slot)?)
    }

    fn checkin(&self, session: Session) {
        let mut idle = self.lock_idle();
        if idle.len() < self.idle_max {
            idle.push(session);
        }
    }

    /// Runs `f` on a pooled session; if the session or login was lost, reconnects and runs
    /// it once more. `f` gets the current generation, to check its cached handles against.
    pub fn with_session<T>(
        &self,
        f: impl Fn(&Session, u64) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut retried = false;
        loop {
            let session = self.checkout()?;
            let generation = self.generation();
            match f(&session, generation) {
                Ok(v) => {
                    self.checkin(session);
                    return Ok(v);
                }
                Err(e) => {
                    // Any failure counts, also "no such object": a token that lost the login
                    // hides its private objects.
                    let lost = session_lost(&e) || !logged_in(&session);
                    if lost && !retried {
                        drop(session);
                        tracing::warn!(token = %self.label, error = %e, "PKCS#11 session or login lost; logging in again");
                        self.reconnect()?;
                        retried = true;
                        continue;
                    }
                    if lost {
                        // Make the next call start from a fresh login.
                        drop(session);
                        *self.lock_anchor() = None;
                    } else {
                        self.checkin(session);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Runs `f` on the anchor session, for objects that must outlive pooled sessions.
    pub fn with_anchor<T>(
        &self,
        f: impl FnOnce(&Session, u64) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut anchor = self.lock_anchor();
        if anchor.is_none() {
            drop(anchor);
            self.reconnect()?;
            anchor = self.lock_anchor();
        }
        let session = anchor.as_ref().ok_or(Failure::Token(Error::Pkcs11(
            RvError::SessionClosed,
            cryptoki::context::Function::OpenSession,
        )))?;
        f(session, self.generation())
    }
}
