//! `cargo run -p idp-devpki --example dev_pki -- <out_dir> [seed] [issued_at RFC 3339]`
//!
//! Writes the test PKI (no SoftHSM tokens unless SOFTHSM2_CONF points at
//! `<out_dir>/softhsm/softhsm2.conf`).

use idp_devpki::{Options, SoftHsm, default_softhsm_module, generate, softhsm_conf_path};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: dev_pki <out_dir> [seed] [issued_at]")?,
    );
    let seed = args.next().unwrap_or_else(|| "idp-dev".to_owned());
    let issued_at = match args.next() {
        Some(s) => time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)?,
        None => time::OffsetDateTime::now_utc(),
    };
    let mut opts = Options::new(seed, issued_at, &out);
    let conf = softhsm_conf_path(&out)?;
    if std::env::var_os("SOFTHSM2_CONF").is_some_and(|v| std::path::Path::new(&v) == conf) {
        opts.softhsm = default_softhsm_module().map(|module| SoftHsm { module });
    }
    let manifest = generate(&opts)?;
    println!(
        "{} cards written to {}",
        manifest.cards.len(),
        out.display()
    );
    Ok(())
}
