//! The backend conformance suite against the soft chip on sled.

use std::sync::Mutex;
use yunkey_chip::{conformance, ChipBackend, ChipConfig, SoftChip};

#[test]
fn soft_chip_on_sled_passes_conformance() {
    let dirs = Mutex::new(Vec::new());
    let counter = Mutex::new(0u32);
    let make = || -> Box<dyn ChipBackend> {
        let dir = tempfile::tempdir().unwrap();
        let mut n = counter.lock().unwrap();
        *n += 1;
        let chip = SoftChip::open(
            dir.path(),
            ChipConfig {
                chip_id: format!("chip-{n}"),
                capacity: 6,
                zone: "test".into(),
            },
        )
        .unwrap();
        dirs.lock().unwrap().push(dir);
        Box::new(chip)
    };
    conformance::run(&make);
    conformance::sm2::run(&make);
}
