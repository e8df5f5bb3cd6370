//! Links the binaries against the pinned libtorch so they run without
//! `LD_LIBRARY_PATH`, and compiles the native layer (`src/native/`): the
//! parts of libtorch's C++ API that tch does not bind.
//!
//! torch-sys links libtorch but embeds no rpath, and the linker's default
//! `--as-needed` drops `libtorch_cuda.so` because no symbol of ours names it
//! directly, so CUDA would never be reported available (tch-rs #907, #980).
//!
//! It also tells the tests what this machine has that some of them need
//! (the real COCO slice beside the checkout, strace, Chromium), so that those tests
//! are reported as ignored, with the reason, rather than passing unrun.

use std::path::{Path, PathBuf};

/// The real COCO slice the data tests read, outside the repository.
const COCO_MINI: &str = "../shared/data/coco-mini/annotations/instances_val2017.json";
/// Debian's Chromium, which the reports' browser tests drive.
const CHROMIUM: &str = "/usr/bin/chromium";

fn main() {
    detect_test_prerequisites();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=src/native");
    println!("cargo:rerun-if-changed=third_party/gloo");
    println!("cargo::rustc-check-cfg=cfg(asl_nccl)");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    compile_native(Path::new(&lib_dir));
}

/// `cfg(asl_coco_mini)` and `cfg(asl_strace)` where they are present. The
/// deepest existing folder on the way to the slice is watched, so that the
/// slice's arrival reruns this script; a path that does not exist is never
/// named, since cargo would then rerun the script (and recompile the native
/// layer) on every build.
fn detect_test_prerequisites() {
    println!("cargo::rustc-check-cfg=cfg(asl_coco_mini)");
    println!("cargo::rustc-check-cfg=cfg(asl_strace)");
    println!("cargo::rustc-check-cfg=cfg(asl_chromium)");
    let target = Path::new(COCO_MINI);
    // The deepest folder that exists changes when the next one down appears.
    if let Some(deepest) = target.ancestors().skip(1).find(|p| !p.as_os_str().is_empty() && p.is_dir()) {
        println!("cargo:rerun-if-changed={}", deepest.display());
    }
    if target.is_file() {
        println!("cargo:rerun-if-changed={COCO_MINI}");
        println!("cargo:rustc-cfg=asl_coco_mini");
    }
    println!("cargo:rerun-if-env-changed=PATH");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join("strace").is_file()) {
        println!("cargo:rustc-cfg=asl_strace");
    }
    // The reports' browser tests drive the system's Chromium (`.ci/run` installs it before building).
    if Path::new(CHROMIUM).is_file() {
        println!("cargo:rerun-if-changed={CHROMIUM}");
        println!("cargo:rustc-cfg=asl_chromium");
    }
}

/// `src/native/*.cpp` with torch-sys's own flags, against the wheel's
/// headers. NCCL support needs CUDA headers that the pinned pip packages
/// (`third_party/requirements.txt`) provide; without them the layer is
/// built for Gloo only and says so at run time.
fn compile_native(lib_dir: &Path) {
    let torch = lib_dir.parent().expect("libtorch's lib directory has a parent");
    let site_packages = torch.parent().expect("torch sits in site-packages");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .file("src/native/dist.cpp")
        .file("src/native/liveness.cpp")
        .file("src/native/ops.cpp");
    // System includes: their warnings are libtorch's business, ours stay on.
    for dir in [torch.join("include"), torch.join("include/torch/csrc/api/include"), PathBuf::from("third_party/gloo")]
    {
        build.flag("-isystem").flag(dir.display().to_string());
    }
    let nvidia = site_packages.join("nvidia");
    let cuda_headers: [PathBuf; 4] = [
        nvidia.join("nccl/include/nccl.h"),
        nvidia.join("cu13/include/cuda_runtime_api.h"),
        nvidia.join("cu13/include/crt/host_config.h"),
        nvidia.join("cu13/include/nv/target"),
    ];
    if cuda_headers.iter().all(|h| h.exists()) {
        build.define("USE_C10D_NCCL", None).define("ASL_WITH_NCCL", None);
        for dir in [nvidia.join("nccl/include"), nvidia.join("cu13/include")] {
            build.flag("-isystem").flag(dir.display().to_string());
        }
        println!("cargo:rustc-cfg=asl_nccl");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    } else {
        let missing: Vec<String> =
            cuda_headers.iter().filter(|h| !h.exists()).map(|h| h.display().to_string()).collect();
        println!("cargo:warning=building the native layer without NCCL: missing {}", missing.join(", "));
    }
    build.compile("asl_native");
    for lib in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
