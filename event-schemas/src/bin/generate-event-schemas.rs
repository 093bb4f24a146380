//! Writes the event contract's JSON Schemas into `event-schemas/schemas/`.

use std::io;

fn main() -> io::Result<()> {
    let dir = eshop_event_schemas::schemas::directory();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for (path, schema) in eshop_event_schemas::schemas::generate() {
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, eshop_event_schemas::schemas::render(&schema))?;
        println!("wrote {}", file.display());
    }
    Ok(())
}
