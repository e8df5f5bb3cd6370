//! Makes `target/*/asl` and the test binaries run without `LD_LIBRARY_PATH`.
//!
//! torch-sys links libtorch but embeds no rpath, and the linker's default
//! `--as-needed` drops `libtorch_cuda.so` because no symbol of ours names it
//! directly, so CUDA would never be reported available (tch-rs #907, #980).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
