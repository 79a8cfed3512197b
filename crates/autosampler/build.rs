//! The shared build script (rpath and provenance, `build/torch_link.rs`), then `csrc/autocast.cpp`
//! compiled against the headers of the libtorch that torch-sys links: libtorch's per-device
//! autocast, which tch does not wrap.
use std::path::PathBuf;

#[path = "../../build/torch_link.rs"]
mod torch_link;

fn main() {
    torch_link::main();
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib =
        PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys tells where libtorch lives"));
    // libtorch's layout: <root>/lib beside <root>/include (the wheel's torch/ and the zip alike)
    let root = lib.parent().expect("libtorch's lib folder has a parent");
    let include = root.join("include");
    // The wheels of torch 2.x since 2.6 (and the cxx11-abi zips) use the new C++ ABI; torch-sys
    // reads the same variable to override.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/autocast.cpp")
        .compile("autosampler_autocast");
}
