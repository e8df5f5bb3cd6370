//! The real COCO slice in `../shared/data/coco-mini`, outside the repo.
//! Tests that need it carry
//! `#[cfg_attr(not(asl_coco_mini), ignore = "...")]`: build.rs sets the cfg
//! where the slice is, so elsewhere they are reported as ignored, with the
//! reason, instead of passing without having run.

use std::path::PathBuf;

/// Its path. The build found it there, so its absence now is a failure.
pub fn coco_mini() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco-mini");
    assert!(
        path.join("annotations/instances_val2017.json").is_file(),
        "{} was there when the tests were built and is gone now",
        path.display()
    );
    path
}
