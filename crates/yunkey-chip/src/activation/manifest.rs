//! Release manifests: the only use of a code-signing key. The chip builds the message
//! ([`yunkey_crypto::release::manifest_message`]) from the version and the file's hash
//! itself, so a caller cannot have the key sign a certificate, a transaction or any digest of
//! its choosing; and no other key signs a manifest.

use super::ActivationModule;
use crate::custody::CheckedDigest;
use crate::{ChipError, KeyPurpose, SignManifest, Signed};
use yunkey_crypto::release;
use yunkey_crypto::validate;

impl ActivationModule {
    pub(super) fn sign_manifest_checked(&self, req: &SignManifest) -> Result<Signed, ChipError> {
        validate::identifier("key_handle", &req.key_handle)?;
        let record = self.store.load(&*self.custody, &req.key_handle)?;
        if record.purpose != KeyPurpose::CodeSigning {
            return Err(ChipError::NotACodeSigningKey);
        }
        let message = release::manifest_message(&req.version, &req.file_sha256);
        let digest = yunkey_crypto::sha256(&message);
        let signature_der = self
            .custody
            .sign(&record.key_ref, &CheckedDigest::new(digest))?;
        Ok(Signed {
            signature_der,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Domain separation: the code-signing key signs manifests and nothing else; no other key
    //! signs a manifest.
    use crate::testing::{self, ChipCa, Device, Operator};
    use crate::{
        ActivationModule, CertificateSubject, ChipBackend, ChipConfig, ChipError, GenerateKey,
        IssueCertificate, KeyPurpose, SignManifest, SoftChip,
    };
    use yunkey_crypto::ecdsa::PublicKey;
    use yunkey_crypto::release::{self, Version};

    fn chip(dir: &std::path::Path) -> ActivationModule {
        let chip = SoftChip::open(
            dir,
            ChipConfig {
                chip_id: "chip-1".into(),
                capacity: 8,
                zone: "z".into(),
            },
        )
        .unwrap();
        Operator::new().init_domain(&chip);
        chip
    }

    fn code_signing_key(chip: &ActivationModule) -> crate::GeneratedKey {
        chip.generate_key(&GenerateKey {
            algorithm: yunkey_crypto::sig::Algorithm::EcdsaP256,
            distid: String::new(),
            purpose: KeyPurpose::CodeSigning,
            user_id: String::new(),
            activation: None,
        })
        .unwrap()
    }

    fn manifest(handle: &str) -> SignManifest {
        SignManifest {
            key_handle: handle.into(),
            version: Version::parse("v", "1.2.3").unwrap(),
            file_sha256: [9; 32],
        }
    }

    #[test]
    fn the_code_signing_key_signs_a_manifest_and_gets_a_code_signing_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let chip = chip(dir.path());
        let ca = ChipCa::create(&chip, "CA");
        let key = code_signing_key(&chip);
        let signed = chip.sign_manifest(&manifest(&key.handle)).unwrap();
        let message = release::manifest_message(&Version::parse("v", "1.2.3").unwrap(), &[9; 32]);
        assert_eq!(signed.digest, yunkey_crypto::sha256(&message));
        PublicKey::from_spki_der(&key.public_key_spki)
            .unwrap()
            .verify_message(&message, &signed.signature_der)
            .unwrap();
        let cert = chip
            .issue_certificate(&IssueCertificate {
                ca_key_handle: ca.key.handle.clone(),
                subject: CertificateSubject::CodeSigning {
                    wrapped_key: key.wrapped_key.clone(),
                },
            })
            .unwrap();
        assert!(!cert.is_empty());
    }

    #[test]
    fn the_ca_key_and_user_keys_do_not_sign_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let chip = chip(dir.path());
        let ca = ChipCa::create(&chip, "CA");
        let err = chip.sign_manifest(&manifest(&ca.key.handle)).unwrap_err();
        assert_eq!(err, ChipError::NotACodeSigningKey);
        let (user, _) = testing::enrol(&chip, "alice");
        let err = chip.sign_manifest(&manifest(&user.handle)).unwrap_err();
        assert_eq!(err, ChipError::NotACodeSigningKey);
    }

    #[test]
    fn the_code_signing_key_signs_no_certificate_and_no_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let chip = chip(dir.path());
        let ca = ChipCa::create(&chip, "CA");
        let key = code_signing_key(&chip);
        // Not as a CA: neither its own certificate nor anyone else's.
        for subject in [
            CertificateSubject::Ca {
                common_name: "evil".into(),
            },
            CertificateSubject::CodeSigning {
                wrapped_key: key.wrapped_key.clone(),
            },
        ] {
            let err = chip
                .issue_certificate(&IssueCertificate {
                    ca_key_handle: key.handle.clone(),
                    subject,
                })
                .unwrap_err();
            assert_eq!(err, ChipError::NotACaKey);
        }
        // Not a transaction, whatever the authorization.
        let phone = Device::new("alice");
        let (tx, _) = testing::canonical_tx("1", 60);
        let request = phone.request(&key.handle, &tx);
        assert_eq!(
            chip.sign_authorized(&request).unwrap_err(),
            ChipError::NotAUserKey
        );
        // A user key is not certified as a code-signing key either.
        let (user, _) = testing::enrol(&chip, "bob");
        let wrapped = chip.wrap_key(&user.handle).unwrap();
        let err = chip
            .issue_certificate(&IssueCertificate {
                ca_key_handle: ca.key.handle.clone(),
                subject: CertificateSubject::CodeSigning {
                    wrapped_key: wrapped,
                },
            })
            .unwrap_err();
        assert_eq!(err, ChipError::NotACodeSigningKey);
    }
}
