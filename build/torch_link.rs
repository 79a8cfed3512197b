//! Shared build script: makes every binary and test of the package find libtorch at run time.
//!
//! torch-sys tells the crates that depend on it directly where libtorch lives
//! (`DEP_TCH_LIBTORCH_LIB`). We write that folder into the binaries' rpath, so nobody sets
//! `LD_LIBRARY_PATH` by hand, and link `libtorch_cuda` on purpose: the linker's `--as-needed` would
//! otherwise drop it (nothing references it by symbol) and CUDA would stay invisible.
//! On a machine whose libtorch lives elsewhere (a GPU box with its own PyTorch 2.11.0), set
//! `LD_LIBRARY_PATH` to that `torch/lib`: it is searched before the rpath written here... only when
//! the rpath is a RUNPATH, which is what `--enable-new-dtags` (the default of modern linkers) gives.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
