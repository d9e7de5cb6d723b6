//! 国密 against the standards' published vectors and two other implementations.
//!
//! Published vectors (values from the standards, nothing else hard-coded):
//! - SM3, GB/T 32905-2016 Appendix A: `"abc"` and `"abcd"` × 16 (64 bytes).
//! - SM4, GB/T 32907-2016 Appendix A: one block, and the same block encrypted 1,000,000 times.
//! - SM2, GM/T 0003.5-2012 Annex A (= GB/T 32918.5-2017 Annex A): the signing example on the
//!   recommended curve, ID `1234567812345678`, message `"message digest"`, fixed `k`, with its
//!   public key, `Z_A`, `e`, `[k]G`, `r` and `s`. (GB/T 32918.2 Annex A signs with the ID
//!   `ALICE123@YAHOO.COM` on a different 256-bit test curve, which the `sm2` crate does not
//!   implement, so it is not used here.)
//!
//! Second implementations, on random keys and messages:
//! - the OpenSSL 3 command line (`openssl dgst -sm3 -sign/-verify -sigopt distid:<ID>`,
//!   `openssl pkey`, `openssl enc -sm4-ecb`). Note: without `-sigopt distid:` OpenSSL 3.0 hashes
//!   an EMPTY ID into `Z_A`, not `1234567812345678`, so a verifier must always pass the ID;
//! - the pure-Python PyPI package `gmssl` (3.2.2; `.ci/run` installs it), called through
//!   `python3 -c`.
//!
//! Both must be installed: a test fails, saying how to install, when one is missing.

use sm2::elliptic_curve::ops::Reduce;
use sm2::elliptic_curve::sec1::ToEncodedPoint;
use sm2::elliptic_curve::PrimeField;
use sm2::{ProjectivePoint, Scalar, U256};
use sm4::cipher::{BlockEncrypt, KeyInit};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;
use yunkey_crypto::sm2::{sm3, z_a, PrivateKey, PublicKey, DEFAULT_DISTID};
use yunkey_crypto::CryptoError;

/// IDs the cross-checks sign under: the default one and two others.
const DISTIDS: [&str; 3] = [DEFAULT_DISTID, "ALICE123@YAHOO.COM", "yunkey-user-42"];

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in the test ({e}): {s}"))
}

fn unhex32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("a 32-byte value")
}

/// A random message of 1 to 256 bytes.
fn random_message() -> Vec<u8> {
    let len = usize::from(yunkey_crypto::random_bytes::<1>()[0]) + 1;
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(&yunkey_crypto::random_bytes::<32>());
    }
    out.truncate(len);
    out
}

/// The DER `SEQUENCE { r, s }` of two 32-byte big-endian scalars.
fn der_of(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    ecdsa::Signature::<sm2::Sm2>::from_scalars(*r, *s)
        .expect("r and s are in range")
        .to_der()
        .as_bytes()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Published vectors.

#[test]
fn sm3_gbt_32905_appendix_a() {
    // Example 1: the 24-bit message "abc".
    assert_eq!(
        hex::encode(sm3(b"abc")),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
        "SM3(\"abc\") differs from GB/T 32905 Appendix A.1"
    );
    // Example 2: the 512-bit message "abcd" repeated 16 times (two blocks once padded).
    let m = b"abcd".repeat(16);
    assert_eq!(m.len(), 64);
    assert_eq!(
        hex::encode(sm3(&m)),
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732",
        "SM3(\"abcd\" x16) differs from GB/T 32905 Appendix A.2"
    );
}

#[test]
fn sm4_gbt_32907_appendix_a() {
    let key: [u8; 16] = unhex("0123456789abcdeffedcba9876543210")
        .try_into()
        .unwrap();
    let cipher = sm4::Sm4::new(&key.into());
    // Example 1: key = plaintext, one encryption.
    let mut block = key;
    cipher.encrypt_block((&mut block).into());
    assert_eq!(
        hex::encode(block),
        "681edf34d206965e86b3e94f536e4246",
        "SM4 single block differs from GB/T 32907 Appendix A.1"
    );
    // Example 2: the same plaintext encrypted 1,000,000 times with the same key (about 0.5 s with
    // the dev profile's optimised dependencies).
    let started = Instant::now();
    let mut block = key;
    for _ in 0..1_000_000 {
        cipher.encrypt_block((&mut block).into());
    }
    assert_eq!(
        hex::encode(block),
        "595298c7c6fd271f0402f804c33d3f66",
        "SM4 after 1,000,000 encryptions differs from GB/T 32907 Appendix A.2"
    );
    eprintln!("SM4 1,000,000 block encryptions: {:?}", started.elapsed());
}

/// GM/T 0003.5-2012 Annex A: the signing example on the recommended curve.
mod annex_a {
    pub const ID: &str = "1234567812345678";
    pub const MESSAGE: &[u8] = b"message digest";
    pub const D: &str = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8";
    pub const XA: &str = "09f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020";
    pub const YA: &str = "ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13";
    pub const Z_A: &str = "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3";
    pub const E: &str = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640";
    pub const K: &str = "59276e27d506861a16680f3ad9c02dccef3cc1fa3cdbe4ce6d54b80deac1bc21";
    pub const X1: &str = "04ebfc718e8d1798620432268e77feb6415e2ede0e073c0f4f640ecd2e149a73";
    pub const Y1: &str = "e858f9d81e5430a57b36daab8f950a3c64e6ee6a63094d99283aff767e124df0";
    pub const R: &str = "f5a03b0648d2c4630eeac513e1bb81a15944da3827d5b74143ac7eaceee720b3";
    pub const S: &str = "b1b6aa29df212fd8763182bc0d421ca1bb9038fd1f7f42d4840b69c485bbc1aa";
}

#[test]
fn sm2_gmt_0003_5_annex_a_key_z_a_digest_and_verify() {
    use annex_a::*;
    // The public key [d]G.
    let key = PrivateKey::from_secret_bytes(&unhex(D)).unwrap();
    assert_eq!(ID, DEFAULT_DISTID, "the example uses the default ID");
    let public = key.public_key();
    assert_eq!(
        hex::encode(public.to_sec1()),
        format!("04{XA}{YA}"),
        "the public key derived from d differs from the Annex's P_A"
    );
    // Z_A and e = SM3(Z_A || M).
    assert_eq!(
        hex::encode(z_a(ID, &public.to_sec1())),
        Z_A,
        "our Z_A differs from the Annex's"
    );
    assert_eq!(
        hex::encode(public.digest(MESSAGE)),
        E,
        "our e = SM3(Z_A || M) differs from the Annex's"
    );
    // Our verifier accepts the Annex's (r, s), from its public key alone...
    let sig = der_of(&unhex32(R), &unhex32(S));
    let from_standard =
        PublicKey::from_spki_der(&spki_of_sec1(&unhex(&format!("04{XA}{YA}")))).unwrap();
    from_standard.verify_message(MESSAGE, &sig).unwrap();
    from_standard.verify_digest(&unhex32(E), &sig).unwrap();
    // ...and refuses it under another ID, for another message, or with s changed.
    assert_eq!(
        from_standard
            .with_distid("ALICE123@YAHOO.COM")
            .unwrap()
            .verify_message(MESSAGE, &sig),
        Err(CryptoError::BadSignature)
    );
    assert_eq!(
        from_standard.verify_message(b"message digesT", &sig),
        Err(CryptoError::BadSignature)
    );
    let mut s = unhex32(S);
    s[31] ^= 1;
    assert_eq!(
        from_standard.verify_message(MESSAGE, &der_of(&unhex32(R), &s)),
        Err(CryptoError::BadSignature)
    );
}

/// The SubjectPublicKeyInfo DER of an uncompressed SM2 point (through the `sm2` crate).
fn spki_of_sec1(sec1: &[u8]) -> Vec<u8> {
    use sm2::pkcs8::EncodePublicKey;
    sm2::PublicKey::from_sec1_bytes(sec1)
        .expect("a point on the SM2 curve")
        .to_public_key_der()
        .unwrap()
        .into_vec()
}

/// Steps A4 to A6 of GB/T 32918.2 §6.1 with the Annex's fixed k, on the `sm2` crate's field
/// arithmetic: this is the vector shown step by step, not a signer (ours uses RFC 6979 nonces).
#[test]
fn sm2_gmt_0003_5_annex_a_signing_with_the_fixed_k() {
    use annex_a::*;
    let scalar = |hex: &str| -> Scalar {
        Option::from(Scalar::from_repr(unhex32(hex).into())).expect("a scalar below n")
    };
    let d = scalar(D);
    let k = scalar(K);
    // A2: e, from our digest (checked against the Annex above).
    let key = PrivateKey::from_secret_bytes(&unhex(D)).unwrap();
    let e_bytes = key.public_key().digest(MESSAGE);
    assert_eq!(hex::encode(e_bytes), E);
    // A4: (x1, y1) = [k]G.
    let point = (ProjectivePoint::GENERATOR * k)
        .to_affine()
        .to_encoded_point(false);
    assert_eq!(hex::encode(point.x().unwrap()), X1, "[k]G x1");
    assert_eq!(hex::encode(point.y().unwrap()), Y1, "[k]G y1");
    // A5: r = (e + x1) mod n, neither 0 nor n - k.
    let e = <Scalar as Reduce<U256>>::reduce_bytes(&e_bytes.into());
    let x1 = <Scalar as Reduce<U256>>::reduce_bytes(point.x().unwrap());
    let r = e + x1;
    assert!(!bool::from(r.is_zero()) && !bool::from((r + k).is_zero()));
    // A6: s = ((1 + d)^-1 * (k - r * d)) mod n.
    let inv: Scalar = Option::from((Scalar::ONE + d).invert()).expect("1 + d is not 0");
    let s = inv * (k - r * d);
    assert_eq!(hex::encode(r.to_repr()), R, "r differs from the Annex's");
    assert_eq!(hex::encode(s.to_repr()), S, "s differs from the Annex's");
    // What we sign ourselves (RFC 6979 nonce) is another valid signature of the same e.
    let ours = key.sign_digest(&e_bytes);
    key.public_key().verify_message(MESSAGE, &ours).unwrap();
}

/// The second implementation signs the Annex's message with its k: gmssl's `sign_with_sm3`
/// computes Z_A (default ID) and e itself from the Annex's public key, and `sign` signs the
/// Annex's e directly. Both must give the Annex's (r, s), which our verifier accepts.
#[test]
fn sm2_gmt_0003_5_annex_a_signed_by_gmssl_with_the_fixed_k() {
    use annex_a::*;
    let public = format!("04{XA}{YA}");
    let expected = hex::encode(der_of(&unhex32(R), &unhex32(S)));
    let from_message = gmssl(&["sign", ID, D, &public, &hex::encode(MESSAGE), K]);
    assert_eq!(
        from_message, expected,
        "gmssl sign_with_sm3 with the Annex's k"
    );
    let from_e = gmssl(&["sign_e", D, &public, E, K]);
    assert_eq!(from_e, expected, "gmssl sign(e, k) with the Annex's k");
    PrivateKey::from_secret_bytes(&unhex(D))
        .unwrap()
        .public_key()
        .verify_message(MESSAGE, &unhex(&from_message))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// OpenSSL 3.

/// Runs `openssl ARGS`; fails the test, saying how to install OpenSSL, when it cannot start.
fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs the OpenSSL 3 command line tool, and `openssl` could not run \
                 ({e}): install it (Debian/Ubuntu: `apt-get install -y openssl`; .ci/run does this)"
            )
        })
}

/// Runs `openssl ARGS`, which must succeed; returns its standard output.
fn openssl_ok(args: &[&str]) -> Vec<u8> {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `openssl dgst -sm3 -verify` accepts `sig` over `msg` under `distid`.
fn openssl_verifies(dir: &Path, pub_pem: &Path, distid: &str, msg: &[u8], sig: &[u8]) -> bool {
    std::fs::write(dir.join("msg"), msg).unwrap();
    std::fs::write(dir.join("sig.der"), sig).unwrap();
    let out = openssl(&[
        "dgst",
        "-sm3",
        "-verify",
        pub_pem.to_str().unwrap(),
        "-sigopt",
        &format!("distid:{distid}"),
        "-signature",
        dir.join("sig.der").to_str().unwrap(),
        dir.join("msg").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), stdout.contains("Verified OK")) {
        (true, true) => true,
        (false, false) if stdout.contains("Verification failure") => false,
        _ => panic!(
            "openssl dgst -verify neither verified nor refused: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `openssl dgst -sm3 -sign key_pem -sigopt distid:<ID>` over `msg`: a DER signature.
fn openssl_signs(dir: &Path, key_pem: &Path, distid: &str, msg: &[u8]) -> Vec<u8> {
    std::fs::write(dir.join("msg"), msg).unwrap();
    openssl_ok(&[
        "dgst",
        "-sm3",
        "-sign",
        key_pem.to_str().unwrap(),
        "-sigopt",
        &format!("distid:{distid}"),
        dir.join("msg").to_str().unwrap(),
    ])
}

fn pem_file(dir: &Path, name: &str, label: &str, der: &[u8]) -> std::path::PathBuf {
    let pem = sm2::pkcs8::der::pem::encode_string(label, sm2::pkcs8::LineEnding::LF, der)
        .expect("PEM encoding");
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

fn check_openssl_3() {
    let version = String::from_utf8_lossy(&openssl_ok(&["version"])).into_owned();
    assert!(
        version.starts_with("OpenSSL 3."),
        "these checks need OpenSSL 3 (`-sigopt distid:`), found {version}"
    );
}

#[test]
fn openssl_verifies_ours_under_the_right_id_only() {
    check_openssl_3();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let key = PrivateKey::generate();
        let spki = key.public_key().to_spki_der();
        let pub_pem = pem_file(dir.path(), "pub.pem", "PUBLIC KEY", &spki);
        for distid in DISTIDS {
            let msg = random_message();
            let signer = key.with_distid(distid).unwrap();
            let sig = signer.sign_message(&msg);
            assert!(
                openssl_verifies(dir.path(), &pub_pem, distid, &msg, &sig),
                "OpenSSL refused our SM2 signature under ID {distid:?}"
            );
            let wrong = if distid == DEFAULT_DISTID {
                "1234567812345679"
            } else {
                DEFAULT_DISTID
            };
            assert!(
                !openssl_verifies(dir.path(), &pub_pem, wrong, &msg, &sig),
                "OpenSSL accepted our signature under ID {wrong:?}, signed under {distid:?}"
            );
            let mut other = msg.clone();
            other[0] ^= 1;
            assert!(!openssl_verifies(
                dir.path(),
                &pub_pem,
                distid,
                &other,
                &sig
            ));
        }
    }
}

#[test]
fn ours_verify_openssl_signatures() {
    check_openssl_3();
    let dir = tempfile::tempdir().unwrap();
    // One key made by OpenSSL (read with our PKCS#8 reader), one of ours given to OpenSSL.
    let openssl_key = dir.path().join("openssl-key.pem");
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "SM2",
        "-out",
        openssl_key.to_str().unwrap(),
    ]);
    let ours = PrivateKey::generate();
    let our_key = pem_file(
        dir.path(),
        "our-key.pem",
        "PRIVATE KEY",
        &ours.to_pkcs8_der(),
    );
    for key_pem in [&openssl_key, &our_key] {
        let pem = std::fs::read_to_string(key_pem).unwrap();
        let key = PrivateKey::from_pkcs8_pem(&pem).expect("we read OpenSSL's PKCS#8 SM2 key");
        // The public key as OpenSSL derives it from the private key.
        let spki = openssl_ok(&[
            "pkey",
            "-in",
            key_pem.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ]);
        let public = PublicKey::from_spki_der(&spki).unwrap();
        assert_eq!(public, key.public_key(), "OpenSSL and we derive the same P");
        for distid in DISTIDS {
            let msg = random_message();
            let sig = openssl_signs(dir.path(), key_pem, distid, &msg);
            let under = public.with_distid(distid).unwrap();
            under
                .verify_message(&msg, &sig)
                .unwrap_or_else(|e| panic!("OpenSSL's signature under {distid:?}: {e}"));
            let wrong = if distid == DEFAULT_DISTID {
                "ALICE123@YAHOO.COM"
            } else {
                DEFAULT_DISTID
            };
            assert_eq!(
                public
                    .with_distid(wrong)
                    .unwrap()
                    .verify_message(&msg, &sig),
                Err(CryptoError::BadSignature)
            );
        }
    }
}

#[test]
fn openssl_reads_our_spki_and_pkcs8_pem() {
    check_openssl_3();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let key = PrivateKey::generate();
        let spki = key.public_key().to_spki_der();
        let pub_pem = pem_file(dir.path(), "pub.pem", "PUBLIC KEY", &spki);
        std::fs::write(dir.path().join("key.pem"), key.to_pkcs8_pem().as_bytes()).unwrap();
        let key_pem = dir.path().join("key.pem");
        // OpenSSL reads our SPKI and writes back the same bytes, naming the SM2 curve.
        let again = openssl_ok(&[
            "pkey",
            "-pubin",
            "-in",
            pub_pem.to_str().unwrap(),
            "-outform",
            "DER",
        ]);
        assert_eq!(again, spki, "OpenSSL re-encodes our SPKI differently");
        let text = openssl_ok(&["pkey", "-pubin", "-in", pub_pem.to_str().unwrap(), "-text"]);
        assert!(String::from_utf8_lossy(&text).contains("ASN1 OID: SM2"));
        // OpenSSL reads our PKCS#8 PEM, derives our public key from it, and what it writes
        // back we read as the same key.
        let derived = openssl_ok(&[
            "pkey",
            "-in",
            key_pem.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ]);
        assert_eq!(derived, spki, "OpenSSL derives another public key");
        let rewritten = openssl_ok(&["pkey", "-in", key_pem.to_str().unwrap()]);
        let back = PrivateKey::from_pkcs8_pem(&String::from_utf8(rewritten).unwrap()).unwrap();
        assert_eq!(back.to_secret_bytes(), key.to_secret_bytes());
    }
}

#[test]
fn sm3_and_sm4_equal_openssl() {
    check_openssl_3();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    let mut messages = vec![Vec::new(), b"abc".to_vec(), b"abcd".repeat(16)];
    messages.extend((0..5).map(|_| random_message()));
    messages.push(random_message().repeat(40));
    for msg in &messages {
        std::fs::write(&file, msg).unwrap();
        let digest = openssl_ok(&["dgst", "-sm3", "-binary", file.to_str().unwrap()]);
        assert_eq!(digest, sm3(msg), "SM3 of {} bytes", msg.len());
    }
    for _ in 0..5 {
        let key = yunkey_crypto::random_bytes::<16>();
        let plain = yunkey_crypto::random_bytes::<16>();
        std::fs::write(&file, plain).unwrap();
        let theirs = openssl_ok(&[
            "enc",
            "-sm4-ecb",
            "-nopad",
            "-K",
            &hex::encode(key),
            "-in",
            file.to_str().unwrap(),
        ]);
        assert_eq!(theirs, sm4_block(&key, &plain), "SM4 block");
    }
}

fn sm4_block(key: &[u8; 16], plain: &[u8; 16]) -> Vec<u8> {
    let mut block = *plain;
    sm4::Sm4::new(key.into()).encrypt_block((&mut block).into());
    block.to_vec()
}

// ---------------------------------------------------------------------------------------------
// PyPI gmssl.

/// Helpers run before each command. gmssl 3.2.2 notes:
/// - `CryptSM2(public_key=...)` drops a leading `04` with `str.lstrip("04")`, which also eats
///   leading `0` and `4` digits of x (the Annex's x starts with `09`): the key is set after;
/// - `sign_with_sm3`/`verify_with_sm3` hash the default ID only: for another ID, Z_A is
///   computed here with gmssl's SM3 and curve constants and `sign`/`verify` take e;
/// - `asn1=True` makes `sign`/`verify` speak DER (as hex), as we do.
const GMSSL_PRELUDE: &str = r#"
import sys
from gmssl import sm2, sm3, sm4, func

def key(d, pub):
    c = sm2.CryptSM2(private_key=d, public_key="", asn1=True)
    c.public_key = pub[2:] if len(pub) == 130 else pub
    return c

def h(data):
    return bytes.fromhex(sm3.sm3_hash(func.bytes_to_list(data)))

def e_of(c, distid, msg):
    t = c.ecc_table
    entl = (8 * len(distid)).to_bytes(2, "big")
    za = h(entl + distid + bytes.fromhex(t["a"] + t["b"] + t["g"] + c.public_key))
    return h(za + msg)

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "sign":
    distid, d, pub, msg, k = args[0].encode(), args[1], args[2], bytes.fromhex(args[3]), args[4]
    c = key(d, pub)
    if distid == b"1234567812345678":
        print(c.sign_with_sm3(msg, k))
    else:
        print(c.sign(e_of(c, distid, msg), k))
elif cmd == "sign_e":
    d, pub, e, k = args
    print(key(d, pub).sign(bytes.fromhex(e), k))
elif cmd == "verify":
    distid, pub, msg, sig = args[0].encode(), args[1], bytes.fromhex(args[2]), args[3]
    c = key("", pub)
    if distid == b"1234567812345678":
        ok = c.verify_with_sm3(sig, msg)
    else:
        ok = c.verify(sig, e_of(c, distid, msg))
    print("ok" if ok else "bad")
elif cmd == "sm3":
    print(h(bytes.fromhex(args[0])).hex())
elif cmd == "sm4":
    c = sm4.CryptSM4()
    c.set_key(bytes.fromhex(args[0]), sm4.SM4_ENCRYPT)
    # ECB with PKCS#7 padding: the first block is the plaintext block's encryption.
    print(c.crypt_ecb(bytes.fromhex(args[1]))[:16].hex())
else:
    raise SystemExit("unknown command " + cmd)
"#;

/// Runs a gmssl helper command; returns its one line of output. Fails the test, saying how to
/// install gmssl, when it is missing.
fn gmssl(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(GMSSL_PRELUDE)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs python3 with the PyPI package gmssl: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'gmssl'") || stderr.contains("No module named 'Crypto") {
        panic!(
            "this test needs the PyPI package gmssl as a second SM2/SM3/SM4 implementation: \
             install it (`python3 -m pip install gmssl==3.2.2`; .ci/run does this)"
        );
    }
    assert!(
        out.status.success(),
        "gmssl {} failed: {stderr}",
        args.join(" ")
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A random k for gmssl's `sign`, from our CSPRNG (gmssl's own comes from `random.choice`).
fn random_k() -> String {
    loop {
        let k = yunkey_crypto::random_bytes::<32>();
        if bool::from(Scalar::from_repr(k.into()).is_some()) && k != [0; 32] {
            return hex::encode(k);
        }
    }
}

#[test]
fn gmssl_and_we_verify_each_others_signatures() {
    for _ in 0..3 {
        let key = PrivateKey::generate();
        let d = hex::encode(key.to_secret_bytes());
        let public = hex::encode(key.public_key().to_sec1());
        for distid in DISTIDS {
            let msg = random_message();
            let signer = key.with_distid(distid).unwrap();
            // Ours, verified by gmssl; under another ID, refused.
            let sig = hex::encode(signer.sign_message(&msg));
            let verdict = gmssl(&["verify", distid, &public, &hex::encode(&msg), &sig]);
            assert_eq!(
                verdict, "ok",
                "gmssl refused our signature under {distid:?}"
            );
            let wrong = if distid == DEFAULT_DISTID {
                "ALICE123@YAHOO.COM"
            } else {
                DEFAULT_DISTID
            };
            let verdict = gmssl(&["verify", wrong, &public, &hex::encode(&msg), &sig]);
            assert_eq!(
                verdict, "bad",
                "gmssl accepted {distid:?}'s signature as {wrong:?}'s"
            );
            // gmssl's, verified by us; under another ID or message, refused.
            let theirs = gmssl(&["sign", distid, &d, &public, &hex::encode(&msg), &random_k()]);
            let theirs = unhex(&theirs);
            signer
                .public_key()
                .verify_message(&msg, &theirs)
                .unwrap_or_else(|e| panic!("gmssl's signature under {distid:?}: {e}"));
            assert_eq!(
                key.with_distid(wrong)
                    .unwrap()
                    .public_key()
                    .verify_message(&msg, &theirs),
                Err(CryptoError::BadSignature)
            );
            assert_eq!(
                signer.public_key().verify_message(b"another", &theirs),
                Err(CryptoError::BadSignature)
            );
        }
    }
}

#[test]
fn sm3_and_sm4_equal_gmssl() {
    let mut messages = vec![Vec::new(), b"abcd".repeat(16)];
    messages.extend((0..4).map(|_| random_message()));
    for msg in &messages {
        let theirs = gmssl(&["sm3", &hex::encode(msg)]);
        assert_eq!(theirs, hex::encode(sm3(msg)), "SM3 of {} bytes", msg.len());
    }
    for _ in 0..4 {
        let key = yunkey_crypto::random_bytes::<16>();
        let plain = yunkey_crypto::random_bytes::<16>();
        let theirs = gmssl(&["sm4", &hex::encode(key), &hex::encode(plain)]);
        assert_eq!(theirs, hex::encode(sm4_block(&key, &plain)), "SM4 block");
    }
}
