//! `crdgen`: writes the CRD YAML generated from the Rust types into a directory (`crds/`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    for file in hostnic_crds::crd_files()? {
        let path = dir.join(file.file_name);
        std::fs::write(&path, file.yaml).map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
