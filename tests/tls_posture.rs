//! The running client listener, checked from outside with Debian's
//! `testssl.sh` (installed by scripts/test): TLS 1.2 and 1.3 only, no
//! finding above LOW. The listener is given a certificate shaped like a
//! public CA's (90 days, a CRL distribution point) through a certificate
//! reload, so what is judged is the listener's TLS, not the throw-away
//! material `dev` makes.

mod common;

use common::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_nothing_above_low() {
    let testssl = ["testssl", "testssl.sh"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("testssl.sh is required (scripts/test installs Debian's testssl.sh)");
    let h = Harness::start().await;
    let dir = h.env.dir.clone();

    let now = time::OffsetDateTime::now_utc();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tls posture test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(365);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(90);
    leaf.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec!["http://crl.example.test/ca.crl".to_string()],
    }];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("tls/cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("tls/key.pem"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("posture-ca.pem"), ca.pem()).unwrap();
    h.env
        .running
        .reload()
        .await
        .expect("the listener takes the new certificate");

    let json = dir.join("testssl.json");
    let target = format!("https://localhost:{}", h.env.running.addr.port());
    let out = tokio::process::Command::new(testssl)
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "batch",
            "--ip",
            "127.0.0.1",
        ])
        .arg("--add-ca")
        .arg(dir.join("posture-ca.pem"))
        .arg("--jsonfile")
        .arg(&json)
        .arg(&target)
        .output()
        .await
        .unwrap();
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| {
            panic!(
                "testssl.sh wrote no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        }))
        .unwrap();
    let severity = |f: &serde_json::Value| f["severity"].as_str().unwrap_or("").to_string();
    let finding = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut counts = std::collections::BTreeMap::new();
    for f in &findings {
        *counts.entry(severity(f)).or_insert(0) += 1;
    }
    let low: Vec<String> = findings
        .iter()
        .filter(|f| severity(f) == "LOW")
        .map(|f| {
            format!(
                "{}: {}",
                f["id"].as_str().unwrap_or(""),
                f["finding"].as_str().unwrap_or("")
            )
        })
        .collect();
    eprintln!("testssl.sh summary: {counts:?}; LOW: {low:?}");
    let above_low: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| matches!(severity(f).as_str(), "MEDIUM" | "HIGH" | "CRITICAL"))
        .collect();
    assert!(above_low.is_empty(), "findings above LOW: {above_low:#?}");
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(
            finding(old).contains("not offered"),
            "{old}: {}",
            finding(old)
        );
    }
    for current in ["TLS1_2", "TLS1_3"] {
        assert!(
            finding(current).starts_with("offered"),
            "{current}: {}",
            finding(current)
        );
    }
}
