//! `hostnic`: the CNI plugin kubelet's runtime executes (skeleton; see issue 6).

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => println!("hostnic {}", env!("CARGO_PKG_VERSION")),
        _ => println!("hostnic CNI plugin {}: run by a CNI runtime", env!("CARGO_PKG_VERSION")),
    }
}
