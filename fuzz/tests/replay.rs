//! Replays every fuzz input kept in the repository (the corpus each target grew, and every
//! crash it found, fixed since) through its target on the stable toolchain.

use std::path::Path;

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (name, target) in kura_fuzz::TARGETS {
        let mut inputs = 0;
        for kind in ["corpus", "artifacts"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else { continue };
            for file in dir {
                let path = file.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                if let Err(panic) = std::panic::catch_unwind(|| target(&bytes)) {
                    panic!("{} fails {name}: {panic:?}", path.display());
                }
                inputs += 1;
            }
        }
        assert!(inputs > 0, "target {name} has no corpus: run scripts/fuzz.sh");
        replayed += inputs;
    }
    eprintln!("{replayed} inputs replayed through {} targets", kura_fuzz::TARGETS.len());
}
