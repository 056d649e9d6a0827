//! The SASL mechanisms a node offers, and the EXTERNAL mechanism's user
//! name: taken from the client's TLS certificate, as RabbitMQ's
//! `rabbitmq_auth_mechanism_ssl` takes it (ADR 0031). The certificate was
//! already verified against the configured CA during the TLS handshake: a
//! client sends one only when the listener asks for it (`tls_ca_file`),
//! and rustls refuses the handshake if it does not chain to that CA.

use std::fmt;
use std::str::FromStr;

use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// A SASL mechanism (RabbitMQ's `auth_mechanisms`; PLAIN and AMQPLAIN by
/// default, EXTERNAL when configured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    AmqPlain,
    /// The user named by the client's certificate; offered on TLS
    /// connections only, as RabbitMQ offers it.
    External,
}

impl AuthMechanism {
    /// RabbitMQ's defaults.
    pub const DEFAULT: [AuthMechanism; 2] = [AuthMechanism::Plain, AuthMechanism::AmqPlain];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::AmqPlain => "AMQPLAIN",
            Self::External => "EXTERNAL",
        }
    }

    /// Whether a connection over TLS (`tls`) or not is offered it.
    pub(crate) fn offered(self, tls: bool) -> bool {
        tls || self != Self::External
    }
}

impl FromStr for AuthMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Plain, Self::AmqPlain, Self::External]
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown authentication mechanism {s:?}: PLAIN, AMQPLAIN or EXTERNAL"))
    }
}

impl fmt::Display for AuthMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which part of the certificate names the user (RabbitMQ's
/// `ssl_cert_login_from`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertLoginFrom {
    /// The subject's distinguished name as RFC 4514 writes it, most
    /// specific part first: `CN=alice,O=Example,C=GB` (RabbitMQ's default).
    #[default]
    DistinguishedName,
    /// The subject's common name(s), joined by `,` without escaping.
    CommonName,
}

impl FromStr for CertLoginFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "distinguished_name" => Ok(Self::DistinguishedName),
            "common_name" => Ok(Self::CommonName),
            other => Err(format!(
                "ssl_cert_login_from must be distinguished_name or common_name, not {other:?}"
            )),
        }
    }
}

impl fmt::Display for CertLoginFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DistinguishedName => "distinguished_name",
            Self::CommonName => "common_name",
        })
    }
}

/// What a connection knows of its client's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerCertificate {
    /// A plain TCP connection.
    NotTls,
    /// TLS, and the client sent no certificate.
    Absent,
    /// TLS with a verified client certificate (DER).
    Present(Vec<u8>),
}

/// Why EXTERNAL refuses a connection, in RabbitMQ's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotTls,
    NoCertificate,
    NoName,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotTls => "not a TLS-enabled connection",
            Self::NoCertificate => "connection peer presented no TLS (x.509) certificate",
            Self::NoName => "no name found",
        })
    }
}

/// The user name `certificate` logs in as.
pub(crate) fn login_name(certificate: &PeerCertificate, from: CertLoginFrom) -> Result<String, Refusal> {
    let der = match certificate {
        PeerCertificate::NotTls => return Err(Refusal::NotTls),
        PeerCertificate::Absent => return Err(Refusal::NoCertificate),
        PeerCertificate::Present(der) => der,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| Refusal::NoName)?;
    let name = match from {
        CertLoginFrom::DistinguishedName => distinguished_name(cert.subject()),
        CertLoginFrom::CommonName => cert
            .subject()
            .iter()
            .flat_map(|rdn| rdn.iter())
            .filter(|attr| attr.attr_type().to_id_string() == COMMON_NAME)
            .map(value)
            .collect::<Vec<_>>()
            .join(","),
    };
    if name.is_empty() {
        return Err(Refusal::NoName);
    }
    Ok(name)
}

const COMMON_NAME: &str = "2.5.4.3";

/// RFC 4514's string form as RabbitMQ writes it: the RDNs last to first,
/// joined by `,`; the parts of a multi-valued RDN joined by `+`; known
/// types by their short names, others as dotted numbers.
fn distinguished_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type().to_id_string();
    let short = match oid.as_str() {
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        COMMON_NAME => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "TITLE",
        "2.5.4.6" => "C",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => &oid,
    };
    format!("{short}={}", escape(&value(attr)))
}

/// The attribute's text: UTF-8 from any of the directory string types
/// (BMPString is UTF-16, UniversalString UTF-32, TeletexString taken as
/// Latin-1, as RabbitMQ takes it); bytes of other types as hex.
fn value(attr: &AttributeTypeAndValue<'_>) -> String {
    let bytes = attr.as_slice();
    match attr.attr_value().tag().0 {
        // UTF8String, NumericString, PrintableString, IA5String, VisibleString
        12 | 18 | 19 | 22 | 26 => String::from_utf8_lossy(bytes).into_owned(),
        // TeletexString
        20 => bytes.iter().map(|b| char::from(*b)).collect(),
        // UniversalString
        28 => bytes
            .chunks(4)
            .map(|c| {
                let word = c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                char::from_u32(word).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        // BMPString
        30 => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| c.iter().fold(0u16, |acc, b| (acc << 8) | u16::from(*b)))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => bytes.iter().map(|b| format!("{b:02X}")).collect(),
    }
}

/// RFC 4514's escaping as RabbitMQ does it: a leading space or `#`, a
/// trailing space and `"+,;<>\` get a backslash; control characters and
/// every byte of a non-ASCII character become `\XX`.
fn escape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b' ' | b'#' if first => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' if last => out.push_str("\\ "),
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b if !(32..126).contains(&b) => out.push_str(&format!("\\{b:02X}")),
            b => out.push(char::from(b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(dn: &[(rcgen::DnType, &str)]) -> PeerCertificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["client".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, text) in dn {
            params.distinguished_name.push(kind.clone(), *text);
        }
        let cert = params.self_signed(&key).expect("cert");
        PeerCertificate::Present(cert.der().to_vec())
    }

    #[test]
    fn the_distinguished_name_reads_most_specific_first() {
        let cert = certificate(&[
            (rcgen::DnType::CountryName, "GB"),
            (rcgen::DnType::OrganizationName, "Warren Tests"),
            (rcgen::DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            login_name(&cert, CertLoginFrom::DistinguishedName),
            Ok("CN=alice,O=Warren Tests,C=GB".to_owned())
        );
        assert_eq!(login_name(&cert, CertLoginFrom::CommonName), Ok("alice".to_owned()));
    }

    #[test]
    fn special_characters_are_escaped_in_the_distinguished_name_only() {
        let cert = certificate(&[
            (rcgen::DnType::OrganizationName, " Smith, Jones + Co; <x> \"q\" \\ "),
            (rcgen::DnType::CommonName, "#été ☃"),
        ]);
        assert_eq!(
            login_name(&cert, CertLoginFrom::DistinguishedName),
            Ok(r#"CN=\#\C3\A9t\C3\A9 \E2\98\83,O=\ Smith\, Jones \+ Co\; \<x\> \"q\" \\\ "#.to_owned())
        );
        assert_eq!(login_name(&cert, CertLoginFrom::CommonName), Ok("#été ☃".to_owned()));
    }

    #[test]
    fn unknown_types_are_dotted_numbers() {
        let cert = certificate(&[
            (rcgen::DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99, 1]), "x"),
            (rcgen::DnType::CommonName, "bob"),
        ]);
        assert_eq!(
            login_name(&cert, CertLoginFrom::DistinguishedName),
            Ok("CN=bob,1.3.6.1.4.1.99.1=x".to_owned())
        );
    }

    #[test]
    fn no_name_no_certificate_and_no_tls_are_refused_with_rabbitmqs_words() {
        let no_cn = certificate(&[(rcgen::DnType::OrganizationName, "Only an O")]);
        assert_eq!(login_name(&no_cn, CertLoginFrom::CommonName), Err(Refusal::NoName));
        let empty = certificate(&[]);
        assert_eq!(
            login_name(&empty, CertLoginFrom::DistinguishedName),
            Err(Refusal::NoName)
        );
        assert_eq!(
            login_name(
                &PeerCertificate::Present(b"not a certificate".to_vec()),
                CertLoginFrom::default()
            ),
            Err(Refusal::NoName)
        );
        assert_eq!(
            login_name(&PeerCertificate::Absent, CertLoginFrom::default()).map_err(|e| e.to_string()),
            Err("connection peer presented no TLS (x.509) certificate".to_owned())
        );
        assert_eq!(
            login_name(&PeerCertificate::NotTls, CertLoginFrom::default()).map_err(|e| e.to_string()),
            Err("not a TLS-enabled connection".to_owned())
        );
    }

    #[test]
    fn mechanisms_parse_by_their_wire_names_and_external_needs_tls() {
        assert_eq!("EXTERNAL".parse(), Ok(AuthMechanism::External));
        assert_eq!("AMQPLAIN".parse(), Ok(AuthMechanism::AmqPlain));
        assert!("external".parse::<AuthMechanism>().is_err());
        assert!("".parse::<AuthMechanism>().is_err());
        assert!(!AuthMechanism::External.offered(false));
        assert!(AuthMechanism::External.offered(true));
        assert!(AuthMechanism::Plain.offered(false));
    }

    #[test]
    fn the_setting_parses_as_rabbitmq_spells_it() {
        assert_eq!("common_name".parse(), Ok(CertLoginFrom::CommonName));
        assert_eq!("distinguished_name".parse(), Ok(CertLoginFrom::DistinguishedName));
        assert!("cn".parse::<CertLoginFrom>().is_err());
        assert_eq!(CertLoginFrom::CommonName.to_string(), "common_name");
    }
}
