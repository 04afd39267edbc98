//! Ingress authentication: does a request carry what its source's `auth` settings demand?
//!
//! Pure: no IO and no clock (the caller passes `now`). Every comparison involving a secret is
//! constant-time, and every configured secret is tried even after one matched, so neither
//! timing nor error text tells a caller which rotation entry, or how much of one, was right.
//! Error messages are short, lowercase and never contain a credential: HQ shows them to
//! operators (commcare-forwarding.md §2.3).

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{Auth, HmacAuth, Secret, SignatureEncoding};
use crate::error::ErrorKind;

/// Why a request was refused. All of these are answered 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials")]
    MissingCredentials,
    #[error("expected {expected} credentials")]
    WrongScheme { expected: &'static str },
    #[error("malformed credentials")]
    MalformedCredentials,
    #[error("wrong credentials")]
    WrongCredentials,
    #[error("missing signature")]
    MissingSignature,
    #[error("malformed signature")]
    MalformedSignature,
    #[error("bad signature")]
    BadSignature,
    #[error("missing timestamp")]
    MissingTimestamp,
    #[error("malformed timestamp")]
    MalformedTimestamp,
    #[error("timestamp outside the allowed window")]
    StaleTimestamp,
}

impl AuthError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Unauthorized
    }
}

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Checks one request against a source's auth settings.
///
/// # Errors
///
/// Returns why the request is refused; see [`AuthError`].
pub fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<()> {
    match auth {
        Auth::None => Ok(()),
        Auth::Basic(credentials) => {
            let encoded = scheme_value(headers, "basic")?;
            let decoded = BASE64
                .decode(encoded)
                .map_err(|_| AuthError::MalformedCredentials)?;
            let colon = decoded
                .iter()
                .position(|byte| *byte == b':')
                .ok_or(AuthError::MalformedCredentials)?;
            let (username, password) = (&decoded[..colon], &decoded[colon + 1..]);
            let matched = credentials
                .iter()
                .fold(Choice::from(0), |matched, credential| {
                    matched
                        | (digest_eq(username, credential.username.as_bytes())
                            & digest_eq(password, credential.password.expose().as_bytes()))
                });
            accept_if(matched, AuthError::WrongCredentials)
        }
        Auth::Bearer(tokens) => {
            let token = scheme_value(headers, "bearer")?;
            accept_if(any_secret(token, tokens), AuthError::WrongCredentials)
        }
        Auth::Authorization(values) => {
            let value = authorization_header(headers)?;
            accept_if(
                any_secret(value.as_bytes(), values),
                AuthError::WrongCredentials,
            )
        }
        Auth::Hmac(hmac) => check_hmac(hmac, headers, body, now),
    }
}

/// The `WWW-Authenticate` value a 401 should carry, for the types that have a standard one.
pub fn challenge(auth: &Auth) -> Option<&'static str> {
    match auth {
        Auth::Basic(_) => Some(r#"Basic realm="ccrelay", charset="UTF-8""#),
        Auth::Bearer(_) => Some(r#"Bearer realm="ccrelay""#),
        Auth::None | Auth::Authorization(_) | Auth::Hmac(_) => None,
    }
}

/// Standard alphabet; padding optional, since senders differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

enum HeaderProblem {
    Missing,
    /// Sent more than once: which one counts would be a guess, so none does.
    Repeated,
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a HeaderValue, HeaderProblem> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(HeaderProblem::Missing)?;
    match values.next() {
        Some(_) => Err(HeaderProblem::Repeated),
        None => Ok(first),
    }
}

fn authorization_header(headers: &HeaderMap) -> Result<&HeaderValue> {
    single_header(headers, AUTHORIZATION.as_str()).map_err(|problem| match problem {
        HeaderProblem::Missing => AuthError::MissingCredentials,
        HeaderProblem::Repeated => AuthError::MalformedCredentials,
    })
}

/// The credentials after `Authorization: <scheme> `, the scheme matched case-insensitively.
fn scheme_value<'a>(headers: &'a HeaderMap, scheme: &'static str) -> Result<&'a [u8]> {
    let bytes = authorization_header(headers)?.as_bytes();
    let space = bytes.iter().position(|byte| *byte == b' ');
    let (given_scheme, rest) = match space {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    if !given_scheme.eq_ignore_ascii_case(scheme.as_bytes()) {
        return Err(AuthError::WrongScheme { expected: scheme });
    }
    let credentials = rest.trim_ascii();
    if credentials.is_empty() {
        return Err(AuthError::MalformedCredentials);
    }
    Ok(credentials)
}

/// Equality of two secrets in time independent of where they differ and of their lengths:
/// the SHA-256 digests are compared instead of the values.
fn digest_eq(given: &[u8], expected: &[u8]) -> Choice {
    Sha256::digest(given).ct_eq(&Sha256::digest(expected))
}

/// Whether `given` equals any secret, trying all of them.
fn any_secret(given: &[u8], secrets: &[Secret]) -> Choice {
    secrets.iter().fold(Choice::from(0), |matched, secret| {
        matched | digest_eq(given, secret.expose().as_bytes())
    })
}

fn accept_if(matched: Choice, refusal: AuthError) -> Result<()> {
    if bool::from(matched) {
        Ok(())
    } else {
        Err(refusal)
    }
}

fn check_hmac(
    hmac: &HmacAuth,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<()> {
    let signature_header =
        single_header(headers, &hmac.header).map_err(|problem| match problem {
            HeaderProblem::Missing => AuthError::MissingSignature,
            HeaderProblem::Repeated => AuthError::MalformedSignature,
        })?;
    let encoded = signature_header.as_bytes().trim_ascii();
    let encoded = match &hmac.prefix {
        Some(prefix) => encoded
            .strip_prefix(prefix.as_bytes())
            .ok_or(AuthError::MalformedSignature)?,
        None => encoded,
    };
    let signature = match hmac.encoding {
        SignatureEncoding::Hex => hex::decode(encoded).ok(),
        SignatureEncoding::Base64 => BASE64.decode(encoded).ok(),
    }
    .ok_or(AuthError::MalformedSignature)?;
    if signature.len() != <Sha256 as Digest>::output_size() {
        return Err(AuthError::MalformedSignature);
    }

    let timestamp = match &hmac.timestamp {
        Some(check) => {
            let value = single_header(headers, &check.header).map_err(|problem| match problem {
                HeaderProblem::Missing => AuthError::MissingTimestamp,
                HeaderProblem::Repeated => AuthError::MalformedTimestamp,
            })?;
            let seconds = value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or(AuthError::MalformedTimestamp)?;
            Some((value.as_bytes(), seconds, check.tolerance))
        }
        None => None,
    };

    let matched = hmac
        .secrets
        .iter()
        .fold(Choice::from(0), |matched, secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC accepts keys of any length");
            if let Some((raw_timestamp, _, _)) = timestamp {
                mac.update(raw_timestamp);
                mac.update(b".");
            }
            mac.update(body);
            matched | mac.finalize().into_bytes().as_slice().ct_eq(&signature)
        });
    accept_if(matched, AuthError::BadSignature)?;

    // Freshness is checked after the signature, so "stale" is only ever said to someone
    // holding a key: it then points at a clock problem, not at a guessing attacker.
    if let Some((_, seconds, tolerance)) = timestamp {
        let distance = (i128::from(now.as_second()) - i128::from(seconds)).abs();
        if distance > i128::from(tolerance.as_secs()) {
            return Err(AuthError::StaleTimestamp);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::{AuthError, authenticate, challenge};
    use crate::config::{
        Auth, BasicCredential, HmacAuth, Secret, SignatureEncoding, TimestampCheck,
    };

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = b"<data>form</data>";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_bytes(value).expect("test header value"),
            );
        }
        map
    }

    fn check(auth: &Auth, pairs: &[(&str, &[u8])], expected: Result<(), AuthError>) {
        let now = jiff::Timestamp::from_second(NOW).expect("test time");
        let actual = authenticate(auth, &headers(pairs), BODY, now);
        assert_eq!(actual, expected, "for headers {pairs:?}");
    }

    fn basic_header(user_and_password: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(user_and_password)).into_bytes()
    }

    fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|value| Secret::new(*value)).collect()
    }

    fn mac(key: &str, message: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn none_accepts_anything() {
        check(&Auth::None, &[], Ok(()));
        check(&Auth::None, &[("authorization", b"garbage")], Ok(()));
    }

    #[test]
    fn basic() {
        let auth = Auth::Basic(vec![
            BasicCredential {
                username: "hq".to_owned(),
                password: Secret::new("old:pass"),
            },
            BasicCredential {
                username: "hq".to_owned(),
                password: Secret::new("new-pass"),
            },
        ]);
        let ok = Ok(());
        let wrong = Err(AuthError::WrongCredentials);
        let malformed = Err(AuthError::MalformedCredentials);
        let encoded = |scheme: &str, raw: &[u8]| format!("{scheme} {}", STANDARD.encode(raw));
        // (what, Authorization value, expected)
        let cases = [
            (
                "password with a colon",
                encoded("Basic", b"hq:old:pass"),
                ok,
            ),
            ("rotated entry", encoded("Basic", b"hq:new-pass"), ok),
            ("scheme in any case", encoded("bAsIc", b"hq:new-pass"), ok),
            (
                "unpadded base64",
                format!("Basic {}", STANDARD_NO_PAD.encode("hq:new-pass")),
                ok,
            ),
            ("wrong password", encoded("Basic", b"hq:nope"), wrong),
            ("wrong username", encoded("Basic", b"HQ:new-pass"), wrong),
            ("password prefix only", encoded("Basic", b"hq:new"), wrong),
            ("not utf-8 inside", encoded("Basic", b"hq:\xff\xfe"), wrong),
            ("bad base64", "Basic !!not base64!!".to_owned(), malformed),
            ("no colon", encoded("Basic", b"hqnew-pass"), malformed),
            ("no credentials", "Basic".to_owned(), malformed),
            ("blank credentials", "Basic   ".to_owned(), malformed),
            (
                "other scheme",
                "Bearer new-pass".to_owned(),
                Err(AuthError::WrongScheme { expected: "basic" }),
            ),
        ];
        let now = jiff::Timestamp::from_second(NOW).expect("test time");
        for (what, value, expected) in cases {
            let sent = headers(&[("authorization", value.as_bytes())]);
            assert_eq!(authenticate(&auth, &sent, BODY, now), expected, "{what}");
        }
        check(&auth, &[], Err(AuthError::MissingCredentials));
        let twice = basic_header("hq:new-pass");
        check(
            &auth,
            &[("authorization", &twice), ("authorization", &twice)],
            malformed,
        );
    }

    #[test]
    fn bearer() {
        let auth = Auth::Bearer(secrets(&["token-a", "token-b"]));
        check(&auth, &[("authorization", b"Bearer token-a")], Ok(()));
        check(&auth, &[("authorization", b"bearer token-b")], Ok(()));
        check(
            &auth,
            &[("authorization", b"Bearer token-c")],
            Err(AuthError::WrongCredentials),
        );
        check(
            &auth,
            &[("authorization", b"Bearer token")],
            Err(AuthError::WrongCredentials),
        );
        check(
            &auth,
            &[("authorization", b"Bearer ")],
            Err(AuthError::MalformedCredentials),
        );
        check(
            &auth,
            &[("authorization", b"token-a")],
            Err(AuthError::WrongScheme { expected: "bearer" }),
        );
        check(
            &auth,
            &[("authorization", b"Basic dG9rZW4tYQ==")],
            Err(AuthError::WrongScheme { expected: "bearer" }),
        );
        check(&auth, &[], Err(AuthError::MissingCredentials));
    }

    #[test]
    fn authorization_compares_the_whole_value() {
        let auth = Auth::Authorization(secrets(&["ApiKey hq:abc", "second-key"]));
        check(&auth, &[("authorization", b"ApiKey hq:abc")], Ok(()));
        check(&auth, &[("authorization", b"second-key")], Ok(()));
        check(
            &auth,
            &[("authorization", b"apikey hq:abc")],
            Err(AuthError::WrongCredentials),
        );
        check(
            &auth,
            &[("authorization", b"ApiKey hq:ab")],
            Err(AuthError::WrongCredentials),
        );
        check(
            &auth,
            &[("x-api-key", b"second-key")],
            Err(AuthError::MissingCredentials),
        );
    }

    #[test]
    fn hmac_without_timestamp() {
        let hex_auth = Auth::Hmac(HmacAuth {
            secrets: secrets(&["old-key", "new-key"]),
            header: "x-signature".to_owned(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
            timestamp: None,
        });
        let signed_new = hex::encode(mac("new-key", BODY));
        let signed_old = hex::encode(mac("old-key", BODY));
        let signed_other = hex::encode(mac("other-key", BODY));
        let tampered = hex::encode(mac("new-key", b"<data>forged</data>"));
        check(&hex_auth, &[("x-signature", signed_new.as_bytes())], Ok(()));
        check(
            &hex_auth,
            &[("X-Signature", signed_old.to_uppercase().as_bytes())],
            Ok(()),
        );
        check(
            &hex_auth,
            &[("x-signature", signed_other.as_bytes())],
            Err(AuthError::BadSignature),
        );
        check(
            &hex_auth,
            &[("x-signature", tampered.as_bytes())],
            Err(AuthError::BadSignature),
        );
        check(&hex_auth, &[], Err(AuthError::MissingSignature));
        check(
            &hex_auth,
            &[("x-signature", b"zz")],
            Err(AuthError::MalformedSignature),
        );
        check(
            &hex_auth,
            &[("x-signature", b"abcd")],
            Err(AuthError::MalformedSignature),
        );
        let sent_twice = [
            ("x-signature", signed_new.as_bytes()),
            ("x-signature", signed_new.as_bytes()),
        ];
        check(&hex_auth, &sent_twice, Err(AuthError::MalformedSignature));

        let base64_auth = Auth::Hmac(HmacAuth {
            secrets: secrets(&["new-key"]),
            header: "x-hub-signature-256".to_owned(),
            encoding: SignatureEncoding::Base64,
            prefix: Some("sha256=".to_owned()),
            timestamp: None,
        });
        let padded = format!("sha256={}", STANDARD.encode(mac("new-key", BODY)));
        let unpadded = format!("sha256={}", STANDARD_NO_PAD.encode(mac("new-key", BODY)));
        let unprefixed = STANDARD.encode(mac("new-key", BODY));
        let hex_instead = format!("sha256={signed_new}");
        check(
            &base64_auth,
            &[("x-hub-signature-256", padded.as_bytes())],
            Ok(()),
        );
        check(
            &base64_auth,
            &[("x-hub-signature-256", unpadded.as_bytes())],
            Ok(()),
        );
        check(
            &base64_auth,
            &[("x-hub-signature-256", unprefixed.as_bytes())],
            Err(AuthError::MalformedSignature),
        );
        check(
            &base64_auth,
            &[("x-hub-signature-256", hex_instead.as_bytes())],
            Err(AuthError::MalformedSignature),
        );
        check(
            &base64_auth,
            &[("x-signature", padded.as_bytes())],
            Err(AuthError::MissingSignature),
        );
    }

    #[test]
    fn hmac_with_timestamp_covers_it_and_bounds_it() {
        let auth = Auth::Hmac(HmacAuth {
            secrets: secrets(&["key"]),
            header: "x-signature".to_owned(),
            encoding: SignatureEncoding::Hex,
            prefix: Some("v1=".to_owned()),
            timestamp: Some(TimestampCheck {
                header: "x-timestamp".to_owned(),
                tolerance: Duration::from_secs(300),
            }),
        });
        let sign = |timestamp: &str| {
            let message = [timestamp.as_bytes(), b".", BODY].concat();
            format!("v1={}", hex::encode(mac("key", &message)))
        };
        let at = |offset: i64| (NOW + offset).to_string();
        for (offset, expected) in [
            (0, Ok(())),
            (-300, Ok(())),
            (300, Ok(())),
            (-301, Err(AuthError::StaleTimestamp)),
            (301, Err(AuthError::StaleTimestamp)),
        ] {
            let timestamp = at(offset);
            let signature = sign(&timestamp);
            let pairs = [
                ("x-timestamp", timestamp.as_bytes()),
                ("x-signature", signature.as_bytes()),
            ];
            check(&auth, &pairs, expected);
        }
        // The timestamp is signed: changing it breaks the signature.
        let signature = sign(&at(-1000));
        let now = at(0);
        check(
            &auth,
            &[
                ("x-timestamp", now.as_bytes()),
                ("x-signature", signature.as_bytes()),
            ],
            Err(AuthError::BadSignature),
        );
        // A body-only signature is not enough when a timestamp is configured.
        let body_only = format!("v1={}", hex::encode(mac("key", BODY)));
        check(
            &auth,
            &[
                ("x-timestamp", now.as_bytes()),
                ("x-signature", body_only.as_bytes()),
            ],
            Err(AuthError::BadSignature),
        );
        let valid = sign(&now);
        check(
            &auth,
            &[("x-signature", valid.as_bytes())],
            Err(AuthError::MissingTimestamp),
        );
        check(
            &auth,
            &[
                ("x-timestamp", b"yesterday"),
                ("x-signature", valid.as_bytes()),
            ],
            Err(AuthError::MalformedTimestamp),
        );
        let huge = "-9223372036854775808";
        let huge_signature = sign(huge);
        check(
            &auth,
            &[
                ("x-timestamp", huge.as_bytes()),
                ("x-signature", huge_signature.as_bytes()),
            ],
            Err(AuthError::StaleTimestamp),
        );
    }

    #[test]
    fn errors_are_short_and_unauthorized() {
        let all = [
            AuthError::MissingCredentials,
            AuthError::WrongScheme { expected: "basic" },
            AuthError::MalformedCredentials,
            AuthError::WrongCredentials,
            AuthError::MissingSignature,
            AuthError::MalformedSignature,
            AuthError::BadSignature,
            AuthError::MissingTimestamp,
            AuthError::MalformedTimestamp,
            AuthError::StaleTimestamp,
        ];
        for error in all {
            let message = error.to_string();
            assert_eq!(message, message.to_lowercase());
            assert!(!message.ends_with('.'), "{message}");
            assert_eq!(error.kind(), crate::error::ErrorKind::Unauthorized);
        }
    }

    #[test]
    fn challenges_for_schemes_that_have_one() {
        let basic = Auth::Basic(vec![BasicCredential {
            username: "hq".to_owned(),
            password: Secret::new("p"),
        }]);
        assert_eq!(
            challenge(&basic),
            Some(r#"Basic realm="ccrelay", charset="UTF-8""#)
        );
        assert_eq!(
            challenge(&Auth::Bearer(secrets(&["t"]))),
            Some(r#"Bearer realm="ccrelay""#)
        );
        assert_eq!(challenge(&Auth::Authorization(secrets(&["k"]))), None);
        assert_eq!(challenge(&Auth::None), None);
    }
}
