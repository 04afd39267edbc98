//! Trace context: the W3C `traceparent` (https://www.w3.org/TR/trace-context/) that ties a
//! payload's ingest to its deliveries. Ingress continues the sender's trace when it sends one
//! and starts a new one otherwise; the value goes into the envelope, so every delivery, after
//! any restart, continues the same trace and passes it on to the far side.

use std::fmt;

/// `00-<trace id>-<parent span id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Reads a `traceparent` header; `None` for anything the spec says to ignore (a bad
    /// length, an unknown version 00 layout, all-zero ids), so a new trace starts instead.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag_byte = [0u8; 1];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        hex::decode_to_slice(flags, &mut flag_byte).ok()?;
        let lowercase = |part: &str| !part.bytes().any(|byte| byte.is_ascii_uppercase());
        if trace_id == [0; 16] || span_id == [0; 8] || !lowercase(trace) || !lowercase(span) {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flag_byte[0] & 1 == 1,
        })
    }

    /// A new trace, sampled, with a random span id for ccrelay's own ingest.
    pub fn new_root() -> TraceParent {
        let mut trace_id = [0u8; 16];
        trace_id.fill_with(|| fastrand::u8(..));
        trace_id[0] |= 1; // never all zero
        TraceParent {
            trace_id,
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// The same trace with a new span id: ccrelay's step under the sender's.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: random_span_id(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

fn random_span_id() -> [u8; 8] {
    let mut span_id = fastrand::u64(1..).to_be_bytes();
    span_id[7] |= 1;
    span_id
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_reads_and_prints_back_the_same() {
        let parsed = TraceParent::parse(SAMPLE).unwrap();
        assert!(parsed.sampled);
        assert_eq!(parsed.to_string(), SAMPLE);
        let child = parsed.child();
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_ne!(child.span_id, parsed.span_id);
    }

    #[test]
    fn what_the_spec_says_to_ignore_is_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may add fields after the flags.
        assert!(
            TraceParent::parse(&SAMPLE.replacen("00", "01", 1).replace("-01", "-01-x")).is_some()
        );
    }

    #[test]
    fn a_new_trace_is_valid_and_sampled() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }
}
