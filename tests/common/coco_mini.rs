//! The real COCO slice in `../shared/data/coco-mini`, outside the repo.

use std::path::PathBuf;

/// Its path, or `None` (with a message saying the test is skipped) when absent.
pub fn coco_mini() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco-mini");
    if path.join("annotations/instances_val2017.json").is_file() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} is absent; this test needs the real COCO slice", path.display());
        None
    }
}
