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

/// The git commit the build is made from (`unknown` outside a git checkout), for provenance:
/// `AUTOSAMPLER_GIT_COMMIT` at compile time. Rebuilt when HEAD moves.
fn git_commit() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let root = Path::new(&dir);
    let git = root.ancestors().map(|p| p.join(".git")).find(|p| p.is_dir());
    let commit = git
        .as_ref()
        .and_then(|g| {
            println!("cargo:rerun-if-changed={}", g.join("HEAD").display());
            let head = std::fs::read_to_string(g.join("HEAD")).ok()?;
            if let Some(r) = head.trim().strip_prefix("ref: ") {
                // only files that exist: cargo reruns a build script whose watched file is missing
                for f in [g.join(r), g.join("packed-refs")] {
                    if f.is_file() {
                        println!("cargo:rerun-if-changed={}", f.display());
                    }
                }
            }
            let out = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(root)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AUTOSAMPLER_GIT_COMMIT={commit}");
}

/// The build script's work (crates that compile C++ call it from their own `build.rs`).
pub fn main() {
    git_commit();
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
