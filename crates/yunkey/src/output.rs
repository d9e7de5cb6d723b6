//! Printing results: human text by default, one JSON object with `--json`.

use yunkey_client::ClientError;
use yunkey_net::reason::Reason;

/// Prints a result.
pub fn print(json: bool, value: serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialize")
        );
    } else {
        println!("{}", human());
    }
}

/// Prints a failure: the server's status code and message when there is one.
pub fn error(json: bool, err: &anyhow::Error) {
    let (code, message, reason) = match err.downcast_ref::<ClientError>() {
        Some(ClientError::Status {
            code,
            message,
            reason,
        }) => (status_name(*code), message.clone(), *reason),
        _ => ("ERROR".to_owned(), format!("{err:#}"), None),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "error": {
                "code": code,
                "message": message,
                "reason": reason.map(|r| r.as_str()),
            } })
        );
    }
    eprintln!("error: {code}: {message}");
    if let Some(reason) = reason {
        eprintln!("{}", what_now(reason));
    }
}

/// What a person does about a typed refusal.
fn what_now(reason: Reason) -> &'static str {
    match reason {
        Reason::StepUpRequired => {
            "this payment needs a step-up: the risk service asks for the user's face. Run the \
             same `yunkey terminal pay` again with --face PHOTO (a photo of the user's face)"
        }
        Reason::FaceMismatch => {
            "the face did not match the user's enrolled face: the payment was terminated"
        }
        Reason::RiskDenied => "the risk service denied the payment: it was terminated",
        Reason::RiskUnavailable => {
            "the risk service did not answer and this cluster fails closed: nothing was \
             consumed, try again later"
        }
        _ => "",
    }
}

/// The canonical gRPC name of a code (`PERMISSION_DENIED`).
pub fn status_name(code: tonic::Code) -> String {
    // tonic's Debug is CamelCase (`PermissionDenied`); print the canonical gRPC name.
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// PEM of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// A PEM block with `label` (`CERTIFICATE`, `PUBLIC KEY`) around `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_names() {
        assert_eq!(
            super::status_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(super::status_name(tonic::Code::NotFound), "NOT_FOUND");
    }
}
