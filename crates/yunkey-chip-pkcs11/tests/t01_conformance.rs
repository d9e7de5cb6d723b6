//! The chip contract (`yunkey_chip::conformance`), unchanged, on chips whose keys live in
//! SoftHSM2 tokens: each `make` is a fresh token and a fresh directory.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use yunkey_chip::ChipBackend;

#[test]
fn pkcs11_chip_passes_the_conformance_suite() {
    let n = AtomicUsize::new(0);
    let make = || -> Box<dyn ChipBackend> {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Box::new(common::fresh_chip(&format!("conf-{i}")))
    };
    yunkey_chip::conformance::run(&make);
}
