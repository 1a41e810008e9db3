//! Windows (MSVC): WinFsp's DLL is delay-loaded (winfsp-rs requires it), so
//! `sectorfs.exe` starts without it and can find it in WinFsp's install
//! directory at run time. Nothing to do for other targets.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "windows" && env == "msvc" {
        winfsp::build::winfsp_link_delayload();
    }
}
