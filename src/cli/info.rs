//! `asl info`: what libtorch and which devices this binary sees.

use anyhow::Result;

pub fn run() -> Result<()> {
    println!("asl {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads: {}", tch::get_num_threads());
    let cuda = tch::Cuda::is_available();
    println!("CUDA available: {cuda}");
    if cuda {
        println!("CUDA devices: {}", tch::Cuda::device_count());
        println!("cuDNN available: {}", tch::Cuda::cudnn_is_available());
    }
    Ok(())
}
