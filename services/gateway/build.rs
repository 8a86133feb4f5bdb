//! The softphone page is compiled into the gateway (`api/page.rs`,
//! `include_dir!`), which cargo cannot see: rebuild when the page changes.

fn main() {
    println!("cargo:rerun-if-changed=../softphone/index.html");
    println!("cargo:rerun-if-changed=../softphone/softphone.css");
    println!("cargo:rerun-if-changed=../softphone/app");
}
