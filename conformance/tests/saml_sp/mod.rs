//! A third-party SAML service provider driven as a script (pysaml2, node-saml): its key
//! pair, the metadata its library writes, an IdP that registers it, and one login run
//! whose result is the JSON object the script prints last.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Pki, Server, ServerOptions, saml_table, start, workspace};

/// How to run one SP library's script.
pub struct SpScript {
    /// `python3` or `node`.
    pub program: &'static str,
    /// The script, in `dir` (relative to the workspace).
    pub script: &'static str,
    pub dir: &'static str,
    /// Environment for the interpreter (e.g. `PYTHONDONTWRITEBYTECODE`).
    pub env: &'static [(&'static str, &'static str)],
    /// Variables removed so that the host cannot weaken the script (CA overrides).
    pub env_remove: &'static [&'static str],
    pub entity_id: &'static str,
    pub acs_url: &'static str,
    pub label: &'static str,
}

/// The SP's key pair and metadata, in a temporary folder.
pub struct Sp {
    dir: tempfile::TempDir,
}

impl Sp {
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("sp.key")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("sp.crt")
    }
    pub fn metadata(&self) -> PathBuf {
        self.dir.path().join("sp-metadata.xml")
    }
}

impl SpScript {
    fn command(&self, sp: &Sp, mode: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.program);
        cmd.arg(self.script)
            .current_dir(workspace().join(self.dir))
            .envs(self.env.iter().copied())
            .env("MODE", mode)
            .env("SP_ENTITY_ID", self.entity_id)
            .env("ACS_URL", self.acs_url)
            .env("SP_KEY", sp.key())
            .env("SP_CERT", sp.cert());
        for k in self.env_remove {
            cmd.env_remove(k);
        }
        cmd
    }

    /// A new key pair and the metadata the library writes for it.
    pub fn sp(&self) -> Sp {
        let sp = Sp {
            dir: tempfile::tempdir().unwrap(),
        };
        let (key, cert) =
            idp_saml::crypto::SigningCredential::generate_pem(self.label, 30).unwrap();
        std::fs::write(sp.key(), key).unwrap();
        std::fs::write(sp.cert(), cert).unwrap();
        let out = self.command(&sp, "metadata").output().unwrap();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(out.status.success() && json["ok"] == true, "{json:#}");
        std::fs::write(sp.metadata(), json["metadata"].as_str().unwrap()).unwrap();
        sp
    }

    /// An IdP with this SP registered (consent asked, the usual claims).
    pub fn start_idp(&self, pki: &Pki, sp: &Sp) -> Server {
        let sps = format!(
            "\n[[saml.sps]]\nmetadata_file = \"{}\"\ndisplay_name = \"{} (conformance)\"\nclaims = [\"name\", \"family_name\", \"given_name\", \"hpki_role\"]\n",
            sp.metadata().display(),
            self.label
        );
        start(
            pki,
            ServerOptions {
                tables: saml_table(&sps),
                ..Default::default()
            },
        )
    }

    /// One login with the doctor's card; the exit status and the script's JSON.
    pub async fn login(
        &self,
        server: &Server,
        pki: &Pki,
        sp: &Sp,
        extra: &[(&str, &str)],
    ) -> (bool, Value) {
        let card = pki.manifest.card("doctor").expect("doctor card");
        let mut cmd = tokio::process::Command::from(self.command(sp, "login"));
        cmd.env("IDP_METADATA_URL", server.public("/saml/metadata"))
            .env("CA_FILE", pki.path(&pki.manifest.server.ca))
            .env("CARD_CERT", pki.path(&card.chain))
            .env("CARD_KEY", pki.path(&card.key))
            .env_remove("TAMPER")
            .env_remove("BINDING")
            .env_remove("LOGOUT")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in extra {
            cmd.env(name, value);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("the {} flow did not finish in 120 s", self.label))
            .unwrap_or_else(|e| panic!("{} could not start: {e}", self.program));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} printed no JSON\nstdout: {stdout}\nstderr: {}\nidp log:\n{}",
                    self.label,
                    String::from_utf8_lossy(&out.stderr),
                    server.log()
                )
            });
        (out.status.success(), json)
    }
}
