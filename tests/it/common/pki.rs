//! Test certificates made with the openssl command.

use std::path::Path;
use std::process::Command;

use super::{write, Run};

/// Runs openssl in `dir`, or fails saying what to install.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .run_within(std::time::Duration::from_secs(60))
        .expect("the TLS test needs the openssl command (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`name`.pem/.key) and, signed by it, a server certificate for
/// 127.0.0.1 (`name`-server.pem/.key) and a client certificate
/// (`name`-client.pem/.key).
pub fn make_pki(dir: &Path, name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{name}.key");
    let ca_pem = format!("{name}.pem");
    let mut req = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=accelwatch test CA",
    ];
    req.extend(ec);
    req.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    openssl(dir, &req);
    for (leaf, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, ext_file) = (
            format!("{name}-{leaf}.key"),
            format!("{name}-{leaf}.csr"),
            format!("{name}-{leaf}.pem"),
            format!("{name}-{leaf}.ext"),
        );
        write(&dir.join(&ext_file), ext);
        let subject = format!("/CN={leaf}");
        let mut req = vec!["req", "-subj", &subject];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ],
        );
    }
}
