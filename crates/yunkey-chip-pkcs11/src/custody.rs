//! [`Pkcs11Custody`]: the [`KeyCustody`] of a PKCS#11 token.
//!
//! Objects it keeps in the token:
//! - `yunkey-master`: AES-256, token object, sensitive, never extractable; seals the module's
//!   records (`CKM_AES_GCM`). Made on first open.
//! - per key, a private and a public EC object (label `yunkey-key`), both with `CKA_ID` = the
//!   key's [`KeyRef`] (16 random bytes).
//! - per domain key-encryption key, a session object (AES-256, sensitive, not extractable,
//!   wrap/unwrap only), made from the [`Kek`] the module passes and cached by its
//!   fingerprint; it disappears when the process ends.
//!
//! Keys are wrapped with `CKM_AES_KEY_WRAP_PAD` only: a token offers no SM4 (SoftHSM2 has no
//! SM4 mechanism), so this custody serves AES-256 domains only. The module refuses to create or
//! join an SM4 domain on it ([`KeyCustody::wraps_under`]), and a wrap or unwrap under an SM4
//! key-encryption key is refused with [`ChipError::CipherUnsupported`].
//!
//! Sealed records are `1 (version) || IV (12) || ciphertext || tag (16)`, the version and the
//! caller's associated data both authenticated.
//!
//! Two SoftHSM2 (2.6) behaviours shape the wrapping code, checked by the tests:
//! - `C_WrapKey` zero-pads the PKCS#8 to a multiple of 8 bytes before RFC 5649, so the soft
//!   custody reads a PKCS#8 followed by up to 7 zero bytes; `C_UnwrapKey` takes both forms.
//! - an unwrapped private key has no `CKA_EC_POINT` nor `CKA_PUBLIC_KEY_INFO`, so the custody
//!   recovers its public key from two signatures and adds the public object itself.

use crate::ec;
use crate::options::Pkcs11Options;
use crate::token::{Failure, Token};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use yunkey_chip::custody::{CheckedDigest, CustodyKey, Kek, KeyRef};
use yunkey_chip::{ChipError, KeyCustody};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

/// Label of the token's sealing key.
pub const MASTER_LABEL: &str = "yunkey-master";
const KEY_LABEL: &[u8] = b"yunkey-key";
const SEAL_VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
const ID_LEN: usize = 16;

/// Handles valid for one token generation (see [`Token::generation`]).
type HandleCache<K> = HashMap<K, (ObjectHandle, u64)>;

/// Keys kept in a PKCS#11 token.
pub struct Pkcs11Custody {
    token: Token,
    master: RwLock<Option<(ObjectHandle, u64)>>,
    keys: RwLock<HandleCache<Vec<u8>>>,
    keks: Mutex<HandleCache<String>>,
}

impl std::fmt::Debug for Pkcs11Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Custody")
            .field("token", &self.token.label())
            .finish_non_exhaustive()
    }
}

fn private_template(id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        // Only so that C_WrapKey can wrap it under the domain's key; its value is never
        // readable (CKA_SENSITIVE).
        Attribute::Extractable(true),
        Attribute::Sign(true),
        Attribute::Derive(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(KEY_LABEL.to_vec()),
    ]
}

fn public_template(id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(ec::P256_PARAMS.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Label(KEY_LABEL.to_vec()),
    ]
}

fn key_id(key: &KeyRef) -> Result<&[u8], ChipError> {
    match key.as_bytes() {
        id if id.len() == ID_LEN => Ok(id),
        _ => Err(ChipError::storage(
            "reading a key",
            "the key reference is not a token object id",
        )),
    }
}

fn unseal() -> ChipError {
    ChipError::Unseal {
        what: "wrapped key",
    }
}

fn find_one(
    session: &Session,
    template: &[Attribute],
    what: &str,
) -> Result<ObjectHandle, Failure> {
    match session.find_objects(template)?.as_slice() {
        [one] => Ok(*one),
        [] => Err(
            ChipError::storage("finding a token object", format!("no {what} in the token")).into(),
        ),
        _ => Err(ChipError::storage(
            "finding a token object",
            format!("several objects are the {what}"),
        )
        .into()),
    }
}

impl Pkcs11Custody {
    /// Logs in to the token and finds (or, on first use, makes) its sealing key.
    pub fn open(options: Pkcs11Options) -> Result<Self, ChipError> {
        let token = Token::open(
            &options.module,
            &options.token,
            options.pin,
            options.idle_sessions,
        )?;
        let custody = Self {
            token,
            master: RwLock::new(None),
            keys: RwLock::new(HashMap::new()),
            keks: Mutex::new(HashMap::new()),
        };
        custody
            .token
            .with_session(|s, generation| custody.master_key(s, generation, true))
            .map_err(|e| e.into_chip("finding the token's sealing key"))?;
        Ok(custody)
    }

    /// The sealing key's handle; made if `create` and the token has none.
    fn master_key(
        &self,
        session: &Session,
        generation: u64,
        create: bool,
    ) -> Result<ObjectHandle, Failure> {
        if let Some((h, g)) = *self.master.read().unwrap_or_else(|p| p.into_inner()) {
            if g == generation {
                return Ok(h);
            }
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(MASTER_LABEL.as_bytes().to_vec()),
        ];
        let found = session.find_objects(&template)?;
        let handle = match found.as_slice() {
            [one] => *one,
            [] if create => {
                let h = session.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::ValueLen(32.into()),
                        Attribute::Label(MASTER_LABEL.as_bytes().to_vec()),
                        Attribute::Id(MASTER_LABEL.as_bytes().to_vec()),
                    ],
                )?;
                tracing::info!(token = %self.token.label(), "made the token's sealing key {MASTER_LABEL}");
                h
            }
            [] => {
                return Err(ChipError::storage(
                    "finding the token's sealing key",
                    format!("the token has no {MASTER_LABEL} key"),
                )
                .into())
            }
            _ => {
                return Err(ChipError::storage(
                    "finding the token's sealing key",
                    format!("the token has several {MASTER_LABEL} keys"),
                )
                .into())
            }
        };
        *self.master.write().unwrap_or_else(|p| p.into_inner()) = Some((handle, generation));
        Ok(handle)
    }

    /// The private key object with this id.
    fn private_key(
        &self,
        session: &Session,
        generation: u64,
        id: &[u8],
    ) -> Result<ObjectHandle, Failure> {
        if let Some(&(h, g)) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            if g == generation {
                return Ok(h);
            }
        }
        let h = find_one(
            session,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id.to_vec()),
            ],
            "private key of this key reference",
        )?;
        self.remember(id, h, generation);
        Ok(h)
    }

    fn remember(&self, id: &[u8], handle: ObjectHandle, generation: u64) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_vec(), (handle, generation));
    }

    /// The session object for `kek`, made on the anchor session on first use.
    fn kek_object(&self, kek: &Kek, generation: u64) -> Result<ObjectHandle, Failure> {
        let fingerprint = kek.fingerprint();
        let mut keks = self.keks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(h, g)) = keks.get(&fingerprint) {
            if g == generation {
                return Ok(h);
            }
        }
        let (handle, generation) = self.token.with_anchor(|session, generation| {
            let mut template = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Label(format!("yunkey-kek-{fingerprint}").into_bytes()),
                Attribute::Value(kek.expose().to_vec()),
            ];
            let created = session.create_object(&template);
            for attribute in &mut template {
                if let Attribute::Value(v) = attribute {
                    v.zeroize();
                }
            }
            Ok((created?, generation))
        })?;
        keks.insert(fingerprint, (handle, generation));
        Ok(handle)
    }

    /// Signs `digest` with the key object in the token; the raw `r || s`.
    fn raw_sign(
        &self,
        session: &Session,
        key: ObjectHandle,
        digest: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        Ok(session.sign(&Mechanism::Ecdsa, key, digest)?)
    }

    /// The public key of an unwrapped private key object, which SoftHSM2 (like most tokens)
    /// does not expose: two signatures over random digests, the one public key that recovers
    /// from the first and verifies the second. It also proves the key signs.
    fn recover_public_key(
        &self,
        session: &Session,
        key: ObjectHandle,
    ) -> Result<PublicKey, Failure> {
        let d1 = yunkey_crypto::random_bytes::<32>();
        let d2 = yunkey_crypto::random_bytes::<32>();
        let s1 = self.raw_sign(session, key, &d1)?;
        let s2 = self.raw_sign(session, key, &d2)?;
        ec::recover_public_key((&d1, &s1), (&d2, &s2)).ok_or_else(|| unseal().into())
    }

    /// Unwraps `wrapped` into a token private key with `id`, checks it is a P-256 key that
    /// signs, and adds its public object.
    fn unwrap_into(
        &self,
        session: &Session,
        generation: u64,
        wrapped: &[u8],
        kek: &Kek,
        id: &[u8],
    ) -> Result<(ObjectHandle, PublicKey), Failure> {
        let kek = self.kek_object(kek, generation)?;
        let mut template = private_template(id);
        template.push(Attribute::Class(ObjectClass::PRIVATE_KEY));
        template.push(Attribute::KeyType(KeyType::EC));
        let key = match session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, wrapped, &template) {
            Ok(key) => key,
            Err(Error::Pkcs11(
                RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::GeneralError
                // SoftHSM2's answer to a wrap under another key-encryption key.
                | RvError::FunctionFailed
                | RvError::TemplateInconsistent
                | RvError::AttributeValueInvalid,
                _,
            )) => return Err(unseal().into()),
            Err(e) => return Err(e.into()),
        };
        let checked = (|| {
            let params = session.get_attributes(key, &[AttributeType::EcParams])?;
            if !matches!(params.as_slice(), [Attribute::EcParams(p)] if p == ec::P256_PARAMS) {
                return Err(unseal().into());
            }
            let public = self.recover_public_key(session, key)?;
            let mut template = public_template(id);
            template.push(Attribute::Class(ObjectClass::PUBLIC_KEY));
            template.push(Attribute::KeyType(KeyType::EC));
            template.push(Attribute::EcPoint(ec::ec_point(&public)));
            session.create_object(&template)?;
            Ok(public)
        })();
        match checked {
            Ok(public) => Ok((key, public)),
            Err(e) => {
                let _ = destroy_all(session, id);
                Err(e)
            }
        }
    }
}

/// Destroys every object with `id`; how many there were.
fn destroy_all(session: &Session, id: &[u8]) -> Result<usize, Failure> {
    let objects = session.find_objects(&[Attribute::Id(id.to_vec())])?;
    for object in &objects {
        session.destroy_object(*object)?;
    }
    Ok(objects.len())
}

/// The tokens this custody is tested on (SoftHSM2) have no SM2 mechanism: keys here are
/// ECDSA P-256. The coordinators place SM2 users on chips that hold SM2 keys.
fn p256_only(algorithm: Algorithm) -> Result<(), ChipError> {
    match algorithm {
        Algorithm::EcdsaP256 => Ok(()),
        other => Err(ChipError::AlgorithmUnsupported {
            algorithm: other,
            reason: "this PKCS#11 chip keeps ECDSA P-256 keys only; place SM2 keys on a chip that \
                     lists SM2 among its algorithms",
        }),
    }
}

impl Pkcs11Custody {
    /// Refuses a key-encryption key of a cipher the token cannot wrap with.
    fn check_kek(&self, kek: &Kek) -> Result<(), ChipError> {
        if self.wraps_under(kek.cipher()) {
            Ok(())
        } else {
            Err(ChipError::CipherUnsupported {
                custody: self.describe(),
                cipher: kek.cipher(),
            })
        }
    }
}

impl KeyCustody for Pkcs11Custody {
    fn describe(&self) -> String {
        format!("pkcs11:{}", self.token.label())
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ChipError> {
        let iv = yunkey_crypto::random_bytes::<IV_LEN>();
        let mut bound = vec![SEAL_VERSION];
        bound.extend_from_slice(aad);
        let sealed = self
            .token
            .with_session(|s, generation| {
                let key = self.master_key(s, generation, false)?;
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, &bound, TAG_BITS.into())?;
                Ok(s.encrypt(&Mechanism::AesGcm(params), key, plaintext)?)
            })
            .map_err(|e| e.into_chip("sealing a record in the token"))?;
        let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ChipError> {
        if sealed.first() != Some(&SEAL_VERSION) || sealed.len() < 1 + IV_LEN + 16 {
            return Err(ChipError::storage(
                "opening a sealed record",
                "it is not a record sealed by a token (version or length)",
            ));
        }
        let mut bound = vec![SEAL_VERSION];
        bound.extend_from_slice(aad);
        let iv: [u8; IV_LEN] = sealed[1..1 + IV_LEN].try_into().expect("length checked");
        let body = &sealed[1 + IV_LEN..];
        self.token
            .with_session(|s, generation| {
                let key = self.master_key(s, generation, false)?;
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, &bound, TAG_BITS.into())?;
                Ok(Zeroizing::new(s.decrypt(
                    &Mechanism::AesGcm(params),
                    key,
                    body,
                )?))
            })
            .map_err(|e| match e {
                // What a token says about a record that does not authenticate varies
                // (SoftHSM2: CKR_GENERAL_ERROR); a lost login was retried already.
                Failure::Token(e) => ChipError::storage(
                    "opening a sealed record",
                    format!("it fails authentication under the token's sealing key ({e})"),
                ),
                Failure::Chip(e) => e,
            })
    }

    fn generate(&self, algorithm: Algorithm) -> Result<CustodyKey, ChipError> {
        p256_only(algorithm)?;
        let id = yunkey_crypto::random_bytes::<ID_LEN>().to_vec();
        let (handle, point, generation) = self
            .token
            .with_session(|s, generation| {
                let mut public = public_template(&id);
                public.push(Attribute::Class(ObjectClass::PUBLIC_KEY));
                let (public, private) = s.generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public,
                    &private_template(&id),
                )?;
                let point = match s
                    .get_attributes(public, &[AttributeType::EcPoint])?
                    .as_slice()
                {
                    [Attribute::EcPoint(p)] => p.clone(),
                    _ => Vec::new(),
                };
                Ok((private, point, generation))
            })
            .map_err(|e| e.into_chip("generating a key in the token"))?;
        let Some(public_key) = ec::public_key_from_ec_point(&point) else {
            let _ = self.destroy(&KeyRef::new(Algorithm::EcdsaP256, id.clone()));
            return Err(ChipError::storage(
                "generating a key in the token",
                "the token returned no valid P-256 CKA_EC_POINT",
            ));
        };
        self.remember(&id, handle, generation);
        Ok(CustodyKey {
            key_ref: KeyRef::new(Algorithm::EcdsaP256, id),
            public_key: public_key.into(),
        })
    }

    fn export_wrapped(
        &self,
        key: &KeyRef,
        _public_key: &VerifyingKey,
        kek: &Kek,
    ) -> Result<Vec<u8>, ChipError> {
        self.check_kek(kek)?;
        let id = key_id(key)?;
        self.token
            .with_session(|s, generation| {
                let private = self.private_key(s, generation, id)?;
                let kek = self.kek_object(kek, generation)?;
                Ok(s.wrap_key(&Mechanism::AesKeyWrapPad, kek, private)?)
            })
            .map_err(|e| e.into_chip("wrapping a key in the token"))
    }

    fn import_wrapped(
        &self,
        wrapped: &[u8],
        algorithm: Algorithm,
        kek: &Kek,
    ) -> Result<CustodyKey, ChipError> {
        p256_only(algorithm)?;
        self.check_kek(kek)?;
        let id = yunkey_crypto::random_bytes::<ID_LEN>().to_vec();
        let (handle, public_key, generation) = self
            .token
            .with_session(|s, generation| {
                let (handle, public) = self.unwrap_into(s, generation, wrapped, kek, &id)?;
                Ok((handle, public, generation))
            })
            .map_err(|e| e.into_chip("unwrapping a key in the token"))?;
        self.remember(&id, handle, generation);
        Ok(CustodyKey {
            key_ref: KeyRef::new(Algorithm::EcdsaP256, id),
            public_key: public_key.into(),
        })
    }

    fn sign(&self, key: &KeyRef, digest: &CheckedDigest) -> Result<Vec<u8>, ChipError> {
        let id = key_id(key)?;
        let raw = self
            .token
            .with_session(|s, generation| {
                let private = self.private_key(s, generation, id)?;
                self.raw_sign(s, private, digest.digest())
            })
            .map_err(|e| e.into_chip("signing in the token"))?;
        ec::der_low_s(&raw).ok_or_else(|| {
            ChipError::storage(
                "signing in the token",
                "the token returned a malformed signature",
            )
        })
    }

    fn destroy(&self, key: &KeyRef) -> Result<(), ChipError> {
        let id = key_id(key)?;
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.token
            .with_session(|s, _| destroy_all(s, id))
            .map_err(|e| e.into_chip("destroying a key in the token"))?;
        Ok(())
    }

    fn wraps_under(&self, cipher: Cipher) -> bool {
        // CKM_AES_KEY_WRAP_PAD only; PKCS#11 defines no SM4 key wrap mechanism.
        cipher == Cipher::Aes256
    }
}
