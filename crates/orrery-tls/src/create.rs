//! `orreryctl certs create-ca` and `create-node`.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The files a command wrote.
#[derive(Debug)]
pub struct CreatedFiles(pub Vec<PathBuf>);

/// Years a CA certificate is valid; node certificates are valid for half.
const CA_YEARS: i32 = 10;
const NODE_YEARS: i32 = 5;

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Mean Gregorian year; a day's error at a year's edge does not matter
    // because validity starts a year early.
    1970 + (secs / 31_556_952) as i32
}

fn validity(p: &mut CertificateParams, years: i32) {
    let y = this_year();
    // Starts a year back: a node whose clock lags must still accept it.
    p.not_before = rcgen::date_time_ymd(y - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(y + years, 1, 1);
}

fn cert_err(e: rcgen::Error) -> TlsError {
    TlsError::Cert(e.to_string())
}

/// Writes `contents` to `path`, refusing to replace a file unless
/// `overwrite`; keys get mode 0600.
fn write_file(path: &Path, contents: &str, secret: bool, overwrite: bool) -> Result<(), TlsError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::file(path, "exists already (pass --overwrite to replace it)")
        } else {
            TlsError::file(path, e)
        }
    })?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| TlsError::file(path, e))
}

fn mkdir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::file(dir, e))
}

/// Creates a cluster CA: `dir/ca.crt` and `dir/ca.key`.
pub fn create_ca(dir: &Path, overwrite: bool) -> Result<CreatedFiles, TlsError> {
    mkdir(dir)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Orrery cluster CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, CA_YEARS);
    let cert = p.self_signed(&key).map_err(cert_err)?;
    let (crt, k) = (dir.join("ca.crt"), dir.join("ca.key"));
    write_file(&k, &key.serialize_pem(), true, overwrite)?;
    write_file(&crt, &cert.pem(), false, overwrite)?;
    Ok(CreatedFiles(vec![crt, k]))
}

/// Creates a node certificate signed by the CA in `ca_dir`, valid for the
/// given host names and IP addresses, in `out`: `ca.crt`, `node.crt`,
/// `node.key`. The certificate serves both TLS sides (a node is a server
/// on both ports and a client of its peers).
pub fn create_node(
    ca_dir: &Path,
    out: &Path,
    hosts: &[String],
    overwrite: bool,
) -> Result<CreatedFiles, TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::Cert(
            "name at least one host (name or IP address) the node is reached at".into(),
        ));
    }
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| TlsError::file(&p, e));
    let ca_pem = read(ca_dir.join("ca.crt"))?;
    let ca_key = KeyPair::from_pem(&read(ca_dir.join("ca.key"))?).map_err(cert_err)?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem).map_err(cert_err)?;
    // Re-signing the CA's own parameters with its key yields an issuer with
    // the same name and key, which is all signing needs.
    let ca = ca_params.self_signed(&ca_key).map_err(cert_err)?;

    let key = KeyPair::generate().map_err(cert_err)?;
    // rcgen reads each name as an IP address SAN when it parses as one.
    let mut p = CertificateParams::new(hosts.to_vec()).map_err(cert_err)?;
    p.distinguished_name.push(DnType::CommonName, "node");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut p, NODE_YEARS);
    let cert = p.signed_by(&key, &ca, &ca_key).map_err(cert_err)?;
    mkdir(out)?;
    let files = [
        (out.join("ca.crt"), ca_pem, false),
        (out.join("node.key"), key.serialize_pem(), true),
        (out.join("node.crt"), cert.pem(), false),
    ];
    let mut written = Vec::new();
    let same_dir = std::fs::canonicalize(out).ok() == std::fs::canonicalize(ca_dir).ok();
    for (path, text, secret) in files {
        if same_dir && path.ends_with("ca.crt") {
            continue;
        }
        write_file(&path, &text, secret, overwrite)?;
        written.push(path);
    }
    Ok(CreatedFiles(written))
}
